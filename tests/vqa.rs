//! `vla vqa collect` end to end: the same seed writes the same bytes, `vla dataset info`
//! understands the result, pointing answers land on the named object in the rendered image,
//! and Hugging Face `datasets` loads it with PIL images (when `.venv-lerobot` exists).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{json, vla};
use vla_datasets::vqa::{VqaDataset, DATA_FILE};
use vla_tasks::Language;

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vla-vqa-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn collect(out: &Path, scenes: &str, seed: &str, extra: &[&str]) -> serde_json::Value {
    let out = out.to_str().expect("a UTF-8 temp path");
    let mut args = vec![
        "vqa", "collect", "--out", out, "--scenes", scenes, "--seed", seed, "--json",
    ];
    args.extend(extra);
    json(&args)
}

/// Hue (degrees), saturation and value of an RGB colour in [0, 1].
fn hsv(c: [f32; 3]) -> [f32; 3] {
    let max = c.iter().copied().fold(f32::MIN, f32::max);
    let min = c.iter().copied().fold(f32::MAX, f32::min);
    let d = max - min;
    let hue = if d <= 0.0 {
        0.0
    } else if max == c[0] {
        60.0 * ((c[1] - c[2]) / d).rem_euclid(6.0)
    } else if max == c[1] {
        60.0 * ((c[2] - c[0]) / d + 2.0)
    } else {
        60.0 * ((c[0] - c[1]) / d + 4.0)
    };
    [hue, if max > 0.0 { d / max } else { 0.0 }, max]
}

fn hue_gap(a: [f32; 3], b: [f32; 3]) -> f32 {
    let d = (hsv(a)[0] - hsv(b)[0]).abs();
    d.min(360.0 - d)
}

#[test]
fn collect_is_deterministic_and_dataset_info_reads_it() {
    let (a, b) = (temp("a"), temp("b"));
    let r = collect(&a, "3", "4", &[]);
    collect(&b, "3", "4", &[]);
    let bytes = std::fs::read(a.join(DATA_FILE)).expect("the data file");
    assert_eq!(
        bytes,
        std::fs::read(b.join(DATA_FILE)).expect("the second data file"),
        "same seed, same Parquet bytes"
    );
    assert_eq!(r["scenes"], 3);
    assert_eq!(r["rows"], 18, "6 questions per scene: {r}");
    let by_kind: u64 = r["kinds"]
        .as_object()
        .expect("kinds")
        .values()
        .filter_map(|v| v.as_u64())
        .sum();
    assert_eq!(by_kind, 18);
    assert_eq!(r["bytes"], bytes.len() as u64);

    let again = vla(&[
        "vqa",
        "collect",
        "--out",
        a.to_str().unwrap(),
        "--scenes",
        "1",
    ]);
    assert!(!again.status.success(), "must not write into a dataset");
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("not empty"), "{err}");

    let info = json(&["dataset", "info", a.to_str().unwrap(), "--json"]);
    assert_eq!(info["format"], "vqa", "{info}");
    assert_eq!(info["rows"], 18);
    assert_eq!(info["scenes"], 3);
    assert_eq!(info["kinds"], r["kinds"]);
    assert_eq!(info["held_out_rows"], r["held_out_rows"]);
    assert_eq!(info["image_size"], serde_json::json!([128, 128]));

    let ds = VqaDataset::open(&a).expect("our reader");
    assert_eq!(ds.rows.len(), 18);
    let scenes: std::collections::BTreeSet<usize> = ds.rows.iter().map(|r| r.scene).collect();
    assert_eq!(scenes.into_iter().collect::<Vec<_>>(), [0, 1, 2]);
    assert!(ds
        .rows
        .iter()
        .all(|r| r.image.dimensions() == (128, 128) && r.wrist_image.dimensions() == (128, 128)));
    assert_ne!(ds.rows[0].image, ds.rows[0].wrist_image);

    python_loads(&a, &ds.rows[0].question, ds.rows.len());
    for d in [a, b] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn pointing_answers_land_on_the_named_objects_colour() {
    let out = temp("points");
    collect(&out, "6", "9", &["--questions-per-scene", "100"]);
    let ds = VqaDataset::open(&out).expect("our reader");
    let lang = Language::builtin().unwrap();
    let mut checked = 0;
    for row in ds.rows.iter().filter(|r| r.kind == "point") {
        let [x, y]: [u32; 2] = row
            .answer
            .split(' ')
            .map(|v| v.parse().expect("integer pixel coordinates"))
            .collect::<Vec<u32>>()
            .try_into()
            .expect("two numbers");
        let named = &row.words[0];
        let want = lang.rgb(named);
        let rgb = |p: &image::Rgb<u8>| p.0.map(|v| v as f32 / 255.0);
        let got = rgb(row.image.get_pixel(x, y));
        // Most of the image is table (hue near orange's, but duller): its median saturation.
        let mut sats: Vec<f32> = row.image.pixels().map(|p| hsv(rgb(p))[1]).collect();
        sats.sort_by(f32::total_cmp);
        let table = sats[sats.len() / 2];
        let nearest = lang
            .all_colors()
            .into_iter()
            .min_by(|a, b| hue_gap(got, lang.rgb(a)).total_cmp(&hue_gap(got, lang.rgb(b))))
            .unwrap_or_default();
        let what = format!(
            "scene {} {:?} -> {:?}: pixel {got:?} (hsv {:?}), {named} is {want:?}",
            row.scene,
            row.question,
            row.answer,
            hsv(got)
        );
        assert!(hue_gap(got, want) < 25.0, "hue far from {named}: {what}");
        assert_eq!(&nearest, named, "nearest hue: {what}");
        assert!(
            hsv(got)[1] > table + 0.15,
            "as dull as the table ({table}): {what}"
        );
        checked += 1;
    }
    assert!(checked >= 10, "pointing answers checked: {checked}");
    let _ = std::fs::remove_dir_all(out);
}

/// `datasets.load_dataset("parquet", …)` returns PIL images of the stored size and our rows.
fn python_loads(dir: &Path, first_question: &str, rows: usize) {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-lerobot/bin/python");
    if !py.exists() {
        assert!(
            std::env::var_os("VLA_REQUIRE_LEROBOT").is_none(),
            ".venv-lerobot/bin/python not found (run `make setup`)"
        );
        eprintln!("skipped the Python check: .venv-lerobot/bin/python not found");
        return;
    }
    let script = r#"
import json, sys
import datasets
from PIL import Image
ds = datasets.load_dataset("parquet", data_files=sys.argv[1], split="train")
row = ds[0]
for key in ("image", "wrist_image"):
    assert isinstance(row[key], Image.Image), (key, type(row[key]))
    assert row[key].size == (128, 128), row[key].size
assert isinstance(row["words"], list) and isinstance(row["held_out"], bool), row
print(json.dumps({"rows": len(ds), "question": row["question"],
                  "features": {k: type(v).__name__ for k, v in ds.features.items()}}))
"#;
    let cache = dir.with_extension("hf-cache");
    let out = Command::new(&py)
        .args(["-c", script])
        .arg(dir.join(DATA_FILE))
        .env("HF_DATASETS_OFFLINE", "1")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", &cache)
        .output()
        .expect("runs python");
    let _ = std::fs::remove_dir_all(&cache);
    assert!(
        out.status.success(),
        "datasets cannot load it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(got["rows"], rows as u64, "{got}");
    assert_eq!(got["question"], first_question, "{got}");
    assert_eq!(got["features"]["image"], "Image", "{got}");
    assert_eq!(got["features"]["words"], "List", "{got}");
}
