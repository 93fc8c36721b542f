//! A dataset Python `lerobot` 0.4.4 creates for an SO-100-like arm — six joint positions as
//! state and action, two 480×640 cameras `observation.images.laptop` and
//! `observation.images.phone`, video-encoded as lerobot does by default — goes through the
//! command line: `vla dataset validate`, `vla train` with no mapping flags, and `vla act`
//! with the two cameras' images returns six numbers named as the dataset names them.
//! (That the frames we decode equal lerobot's own is `datasets/tests/video.rs`.)

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{json, vla};

/// The Python of `.venv-lerobot`; `None` means skip (unless `VLA_REQUIRE_LEROBOT` is set).
fn python() -> Option<PathBuf> {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-lerobot/bin/python");
    if py.exists() {
        return Some(py);
    }
    assert!(
        std::env::var_os("VLA_REQUIRE_LEROBOT").is_none(),
        "{} not found (run `make setup`)",
        py.display()
    );
    eprintln!("skipped: {} not found", py.display());
    None
}

#[test]
fn an_so100_video_dataset_from_lerobot_validates_trains_and_acts() {
    let Some(py) = python() else { return };
    let dir = std::env::temp_dir().join(format!("vla-so100-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("tmp");
    let data = dir.join("so100");
    let out = Command::new(&py)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/tests/lerobot_video.py"))
        .arg("write")
        .arg(&data)
        .arg(dir.join("reference"))
        .output()
        .expect("runs python");
    assert!(
        out.status.success(),
        "lerobot could not write the dataset:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data.join("meta/info.json")).expect("info.json"),
    )
    .expect("JSON");
    for cam in ["laptop", "phone"] {
        assert_eq!(
            info["features"][format!("observation.images.{cam}")]["dtype"],
            "video"
        );
    }
    let data_s = data.display().to_string();
    let v = json(&["dataset", "validate", "--json", &data_s]);
    assert_eq!(v["valid"], true, "{v}");
    // Every camera's videos were opened and checked.
    let videos = v["video_files"].as_array().map_or(0, Vec::len);
    assert!(videos >= 2, "one video file per camera at least: {v}");

    let run = dir.join("run").display().to_string();
    json(&[
        "train", "--data", &data_s, "--out", &run, "--steps", "2", "--json",
    ]);
    let laptop = dir.join("laptop.png");
    let phone = dir.join("phone.png");
    image::RgbImage::from_pixel(640, 480, image::Rgb([200, 40, 40]))
        .save(&laptop)
        .expect("png");
    image::RgbImage::from_pixel(640, 480, image::Rgb([40, 40, 200]))
        .save(&phone)
        .expect("png");
    let act = json(&[
        "act",
        "--ckpt",
        &run,
        "--image",
        &laptop.display().to_string(),
        "--image",
        &phone.display().to_string(),
        "--instruction",
        "grasp the cube 0",
        "--state",
        "0,10,-20,30,0,5",
        "--json",
    ]);
    common::assert_joint_action(&act, 6);
    assert_eq!(
        act["cameras"],
        serde_json::json!(["observation.images.laptop", "observation.images.phone"])
    );
    assert_eq!(act["action_names"][0], "shoulder_pan.pos");
    // One image for a two-camera robot of another layout is refused, not shown twice.
    let out = vla(&[
        "act",
        "--ckpt",
        &run,
        "--image",
        &laptop.display().to_string(),
        "--instruction",
        "x",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 cameras"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
