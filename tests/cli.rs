//! The `vla` command line end to end: JSON reports, reproducibility, clear errors.

mod common;

use common::{json, vla};

#[test]
fn expert_report_has_the_documented_shape_and_a_stable_digest() {
    let args = [
        "expert",
        "--suite",
        "pick",
        "--split",
        "seen",
        "--episodes",
        "2",
        "--seed",
        "3",
        "--json",
    ];
    let a = json(&args);
    for key in [
        "suite",
        "split",
        "episodes",
        "successes",
        "success_rate",
        "per_family",
        "digest",
    ] {
        assert!(a.get(key).is_some(), "missing {key} in {a}");
    }
    assert_eq!(a["episodes"], 2);
    assert!(a["per_family"]["pick"]["success_rate"].is_number());
    let b = json(&[
        "expert",
        "--suite",
        "pick",
        "--split",
        "seen",
        "--episodes",
        "2",
        "--seed",
        "3",
        "--envs",
        "2",
        "--json",
    ]);
    assert_eq!(a["digest"], b["digest"], "same arguments, same digest");
}

#[test]
fn tasks_lists_families_and_splits() {
    let t = json(&["tasks", "--json"]);
    for f in ["pick", "place", "stack", "sort"] {
        assert!(t["families"][f]["examples"]["unseen"]
            .as_array()
            .is_some_and(|v| !v.is_empty()));
    }
}

#[test]
fn render_writes_a_png_of_the_requested_size() {
    let dir = std::env::temp_dir().join(format!("vla-cli-render-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("frame.png");
    let r = json(&[
        "render",
        "--suite",
        "stack",
        "--seed",
        "1",
        "--camera",
        "wrist",
        "--out",
        out.to_str().unwrap(),
        "--resolution",
        "96",
        "--json",
    ]);
    assert_eq!(r["width"], 96);
    let img = image::open(&out).expect("a PNG").to_rgb8();
    assert_eq!(img.dimensions(), (96, 96));
}

#[test]
fn bench_sim_reports_the_documented_fields() {
    let r = json(&["bench", "sim", "--envs", "1", "--steps", "5", "--json"]);
    for key in [
        "envs",
        "steps",
        "resolution",
        "physics_ms_per_step",
        "render_ms_per_frame",
        "env_steps_per_s",
    ] {
        assert!(r.get(key).is_some(), "missing {key} in {r}");
    }
}

/// `--vocabulary`: the episodes are phrased with the user's templates, and the expert still
/// solves them (the scene and success check do not depend on wording).
/// `vla bench train --nproc 2`: two Gloo ranks started by the command itself, timed beside
/// one process at the same global batch.
#[test]
fn bench_train_reports_data_parallel_scaling() {
    let r = json(&[
        "bench",
        "train",
        "--nproc",
        "2",
        "--batch-size",
        "4",
        "--steps",
        "2",
        "--json",
    ]);
    assert_eq!(r["ranks"], 2, "{r}");
    assert_eq!(r["backend"], "gloo", "{r}");
    assert_eq!(r["data_parallel"]["ranks"], 2, "{r}");
    assert_eq!(r["one_process"]["ranks"], 1, "{r}");
    assert_eq!(r["data_parallel"]["batch_size"], 4, "{r}");
    let (one, dp) = (
        r["one_process"]["samples_per_s"].as_f64().unwrap(),
        r["data_parallel"]["samples_per_s"].as_f64().unwrap(),
    );
    assert!(one > 0.0 && dp > 0.0, "{r}");
    assert!(
        (r["efficiency"].as_f64().unwrap() - dp / one).abs() < 1e-9,
        "{r}"
    );
    // An odd global batch cannot be split evenly: the ranks refuse it, naming it.
    let odd = vla(&[
        "bench",
        "train",
        "--nproc",
        "2",
        "--batch-size",
        "3",
        "--steps",
        "1",
    ]);
    assert!(!odd.status.success());
}

#[test]
fn a_vocabulary_of_ones_own_phrases_the_episodes() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/tasks/data/paraphrases.toml");
    let own: toml::Value = toml::from_str(include_str!("../tasks/data/paraphrases.toml")).unwrap();
    let t = json(&["tasks", "--vocabulary", file, "--examples", "4", "--json"]);
    for family in ["pick", "place"] {
        let templates: Vec<String> = own["templates"][family]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().split('{').next().unwrap().to_string())
            .collect();
        for split in ["seen", "unseen"] {
            for e in t["families"][family]["examples"][split].as_array().unwrap() {
                let e = e.as_str().unwrap();
                assert!(
                    templates.iter().any(|t| e.starts_with(t.as_str())),
                    "{family} {split}: {e:?} is not from {file}"
                );
            }
        }
    }
    let r = json(&[
        "expert",
        "--suite",
        "place",
        "--episodes",
        "2",
        "--vocabulary",
        file,
        "--json",
    ]);
    assert_eq!(r["successes"], 2, "{r}");
}

#[test]
fn bad_input_gives_a_clear_error_and_no_panic() {
    let dir = std::env::temp_dir().join(format!("vla-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad_urdf = dir.join("broken.urdf");
    std::fs::write(&bad_urdf, "<robot name='x'><link name='a'>").unwrap();
    let bad_config = dir.join("env.toml");
    std::fs::write(&bad_config, "[sim]\nphysics_hz = 100\n").unwrap();
    let bad_vocabulary = dir.join("my_words.toml");
    let builtin = include_str!("../tasks/data/vocabulary.toml");
    std::fs::write(
        &bad_vocabulary,
        builtin.replacen("grab the {object}", "grab the {colour} thing", 1),
    )
    .unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["expert", "--suite", "juggle"], "juggle"),
        (vec!["expert", "--split", "maybe"], "maybe"),
        (
            vec![
                "render",
                "--suite",
                "pick",
                "--camera",
                "side",
                "--out",
                "/tmp/x.png",
            ],
            "side",
        ),
        (
            vec!["expert", "--urdf", bad_urdf.to_str().unwrap()],
            "broken.urdf",
        ),
        (
            vec!["expert", "--urdf", "/nonexistent/robot.urdf"],
            "/nonexistent/robot.urdf",
        ),
        (
            vec!["expert", "--env-config", bad_config.to_str().unwrap()],
            "physics_hz",
        ),
        (vec!["expert", "--noise", "NaN"], "noise"),
        (
            vec![
                "eval",
                "--ckpt",
                "/nonexistent",
                "--vocabulary",
                bad_vocabulary.to_str().unwrap(),
            ],
            "my_words.toml",
        ),
        (
            vec![
                "collect",
                "--out",
                "/tmp/unused",
                "--vocabulary",
                bad_vocabulary.to_str().unwrap(),
            ],
            "templates.pick[1]",
        ),
        (
            vec!["expert", "--vocabulary", "/nonexistent/words.toml"],
            "/nonexistent/words.toml",
        ),
    ];
    for (args, needle) in cases {
        let out = vla(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "vla {args:?} should fail");
        assert!(
            !stderr.contains("panicked"),
            "vla {args:?} panicked: {stderr}"
        );
        assert!(
            stderr.contains(needle),
            "vla {args:?}: error should name {needle:?}: {stderr}"
        );
    }
}

#[test]
fn a_urdf_given_by_path_loads_and_runs() {
    let urdf = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/kinematics/assets/vla_arm.urdf"
    );
    let r = json(&[
        "expert",
        "--suite",
        "pick",
        "--episodes",
        "1",
        "--urdf",
        urdf,
        "--json",
    ]);
    assert_eq!(r["episodes"], 1);
}
