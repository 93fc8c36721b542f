//! Running the `vla` binary from integration tests.

#![allow(dead_code)]

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
