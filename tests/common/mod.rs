//! Running the `vla` binary from integration tests.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs `vla ARGS…` to completion.
pub fn vla(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vla"))
        .args(args)
        .output()
        .expect("runs vla")
}

/// Runs `vla ARGS…`, requires success and parses the one JSON object it prints.
pub fn json(args: &[&str]) -> serde_json::Value {
    let out = vla(args);
    assert!(
        out.status.success(),
        "vla {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

/// `vla act --json`'s report of a joint-space policy: `n` finite action numbers, in the
/// `joint_positions` action space.
pub fn assert_joint_action(act: &serde_json::Value, n: usize) {
    let action = act["action"].as_array().expect("action");
    assert_eq!(action.len(), n, "{act}");
    assert!(
        action
            .iter()
            .all(|v| v.as_f64().is_some_and(f64::is_finite)),
        "{act}"
    );
    assert_eq!(act["action_space"], "joint_positions", "{act}");
}

/// The network of the toy configs the command-line tests train (small enough for a few steps
/// in seconds, with the simulator's grounding targets on): each test appends its own `[plan]`
/// and `[train]` sections with `concat!`, hence a macro rather than a `const`.
#[allow(unused_macros)]
macro_rules! toy_model {
    () => {
        r#"
[vision]
image_size = 32
patch_size = 16
hidden_size = 32
num_hidden_layers = 1
num_attention_heads = 2
intermediate_size = 64
num_keypoints = 4
stem_channels = [8, 8]
grounding_heads = 2

[projector]
hidden_size = 64

[text]
vocab_size = 400
hidden_size = 32
intermediate_size = 64
num_hidden_layers = 1
num_attention_heads = 2
num_key_value_heads = 2
max_position_embeddings = 128

[action]
proprio_indices = [6, 9]
target_aux_weight = 1.0
relative_targets = true
subgoal_weight = 0.5
"#
    };
}
#[allow(unused_imports)]
pub(crate) use toy_model;

/// A joint-space robot's LeRobot dataset: one camera `(name, width, height)`, the entries
/// `names` as state and as action (the state one step on: `base + 0.01·t`, the action 0.02
/// past it), `episodes` episodes of `frames` frames at 10 fps, task "pick up the part".
pub fn write_joint_dataset(
    dir: &Path,
    camera: (&str, u32, u32),
    names: &[String],
    base: &[f32],
    episodes: usize,
    frames: usize,
) {
    use vla_datasets::{CameraSpec, DatasetSpec, DatasetWriter, ImageSize, RawFrameRecord};
    let (name, width, height) = camera;
    let spec = DatasetSpec::with_features(
        "joint_robot",
        10,
        vec![CameraSpec::new(name, ImageSize { width, height })],
        names.to_vec(),
        names.to_vec(),
    );
    let mut w = DatasetWriter::create(dir, spec).expect("create the dataset");
    for episode in 0..episodes {
        for t in 0..frames {
            let img = image::RgbImage::from_fn(width, height, |x, y| {
                image::Rgb([(x * 4) as u8, (y * 5) as u8, (t * 30 + episode * 10) as u8])
            });
            let state: Vec<f32> = base.iter().map(|q| q + 0.01 * t as f32).collect();
            let action: Vec<f32> = state.iter().map(|q| q + 0.02).collect();
            w.add_raw_frame(RawFrameRecord {
                images: &[(name, &img)],
                state: &state,
                action: &action,
                timestamp: t as f32 / 10.0,
                subtask: None,
            })
            .expect("frame");
        }
        w.save_episode("pick up the part").expect("save");
    }
    w.finalize().expect("finalize");
}
