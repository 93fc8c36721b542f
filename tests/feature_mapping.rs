//! Training on another robot's dataset: one camera of its own name and size, six joint
//! positions as state and action. `vla train` infers the feature mapping with no flags, the
//! checkpoint carries it, `vla act` takes that robot's image and state and returns its six
//! numbers, and the simulator's commands refuse the policy with a reason.

mod common;

use std::path::{Path, PathBuf};

use common::{json, vla};
use vla_datasets::{CameraSpec, DatasetSpec, DatasetWriter, ImageSize, RawFrameRecord};

const JOINTS: [&str; 6] = [
    "shoulder_pan.pos",
    "shoulder_lift.pos",
    "elbow_flex.pos",
    "wrist_flex.pos",
    "wrist_roll.pos",
    "gripper.pos",
];

/// A model small enough to train a few steps in seconds; the simulator's grounding targets
/// are on, so fitting to another robot's features must switch them off.
const TOY_CONFIG: &str = concat!(
    common::toy_model!(),
    r#"
[train]
steps = 3
batch_size = 4
val_every = 2
log_every = 1
checkpoint_every = 3

[train.grounding]
map_weight = 1.0
"#
);

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vla-mapping-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Two episodes of an SO-100-like arm: one 40×30 camera named `top`, six joints.
fn write_dataset(dir: &Path) {
    let names: Vec<String> = JOINTS.iter().map(|s| s.to_string()).collect();
    let base: Vec<f32> = (0..6).map(|j| 0.1 * j as f32).collect();
    common::write_joint_dataset(dir, ("top", 40, 30), &names, &base, 2, 8);
}

#[test]
fn a_joint_space_robots_dataset_trains_and_acts_with_its_own_features() {
    let dir = tmp("so100");
    std::fs::create_dir_all(&dir).expect("tmp");
    let data = dir.join("data");
    write_dataset(&data);
    let config = dir.join("toy.toml");
    std::fs::write(&config, TOY_CONFIG).expect("config");
    let run = dir.join("run");
    let (data_s, run_s, config_s) = (
        data.display().to_string(),
        run.display().to_string(),
        config.display().to_string(),
    );
    json(&[
        "train", "--data", &data_s, "--out", &run_s, "--config", &config_s, "--json",
    ]);
    // The mapping travels in the checkpoint.
    let rc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("config.json")).expect("config.json"),
    )
    .expect("JSON");
    let f = &rc["config"]["features"];
    assert_eq!(f["cameras"], serde_json::json!(["observation.images.top"]));
    assert_eq!(f["action_space"], "joint_positions");
    assert_eq!(f["gripper_dim"], 5);
    assert_eq!(f["state_names"], serde_json::json!(JOINTS));
    let a = &rc["config"]["action"];
    assert_eq!(
        (a["state_dim"].as_u64(), a["action_dim"].as_u64()),
        (Some(6), Some(6))
    );
    assert_eq!(
        a["target_aux_weight"], 0.0,
        "no simulator targets off its layout"
    );
    assert_eq!(rc["config"]["vision"]["num_cameras"], 1);

    let img = dir.join("top.png");
    image::RgbImage::from_pixel(64, 48, image::Rgb([90, 120, 30]))
        .save(&img)
        .expect("png");
    let img_s = img.display().to_string();
    let act = json(&[
        "act",
        "--ckpt",
        &run_s,
        "--image",
        &img_s,
        "--instruction",
        "pick up the bolt",
        "--state",
        "0,0.1,0.2,0.3,0.4,0.5",
        "--json",
    ]);
    common::assert_joint_action(&act, 6);
    assert_eq!(act["action_names"], serde_json::json!(JOINTS));

    // A second image, or a state of the wrong length, is refused with what the policy reads.
    let out = vla(&[
        "act",
        "--ckpt",
        &run_s,
        "--image",
        &img_s,
        "--image",
        &img_s,
        "--instruction",
        "x",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1 cameras"), "{err}");
    let out = vla(&[
        "act",
        "--ckpt",
        &run_s,
        "--image",
        &img_s,
        "--instruction",
        "x",
        "--state",
        "0,0",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("state 6"));
    // The simulator's evaluation does not apply to this robot.
    let out = vla(&[
        "eval",
        "--ckpt",
        &run_s,
        "--suite",
        "pick",
        "--episodes",
        "1",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("observation.images.top") && err.contains("JointPositions"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn three_cameras_need_to_be_named() {
    let dir = tmp("three");
    let spec = DatasetSpec::with_features(
        "three",
        10,
        ["a", "b", "c"]
            .iter()
            .map(|n| {
                CameraSpec::new(
                    *n,
                    ImageSize {
                        width: 16,
                        height: 16,
                    },
                )
            })
            .collect(),
        vec!["x".into(), "z".into()],
        vec!["y".into(), "w".into()],
    );
    let mut w = DatasetWriter::create(&dir, spec).expect("create");
    let img = image::RgbImage::new(16, 16);
    for t in 0..4 {
        w.add_raw_frame(RawFrameRecord {
            images: &[("a", &img), ("b", &img), ("c", &img)],
            state: &[t as f32, 0.0],
            action: &[0.0, 1.0],
            timestamp: t as f32 / 10.0,
            subtask: None,
        })
        .expect("frame");
    }
    w.save_episode("t").expect("save");
    w.finalize().expect("finalize");
    let (d, r) = (
        dir.display().to_string(),
        dir.join("run").display().to_string(),
    );
    let out = vla(&["train", "--data", &d, "--out", &r, "--steps", "1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--camera") && err.contains("observation.images.c"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
