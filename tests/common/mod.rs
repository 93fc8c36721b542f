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
