//! Shared by the ROS 2 tests of the `vla` binary: an untrained checkpoint, the namespace
//! rules, the project's Python.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use vla_model::{save_run, NormStats, TextTokenizer, VlaConfig, VlaModel};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vla-ros-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// An untrained tiny policy (random weights: arbitrary actions, good for the envelope).
pub fn untrained_checkpoint(dir: &Path) {
    let cfg = VlaConfig::from_toml_file(repo().join("vla/configs/tiny.toml")).expect("tiny.toml");
    let stats = NormStats::unit(&cfg);
    let corpus = [
        "pick up the red cube",
        "pick up the blue ball",
        "put the green cube in the yellow bin",
        "stack the red block on the blue block",
    ];
    let tok =
        TextTokenizer::train_for_instructions(&corpus, cfg.text.vocab_size).expect("tokenizer");
    let model = VlaModel::new(cfg, stats, vla_model::tch::Device::Cpu, 7).expect("model");
    save_run(dir, &model, &tok).expect("save run");
}

/// The project venv's Python, when it has the Cyclone DDS bindings.
pub fn cyclone_python() -> Result<PathBuf, String> {
    let py = repo().join(".venv/bin/python");
    let ok = std::process::Command::new(&py)
        .args(["-c", "import cyclonedds"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        Ok(py)
    } else {
        Err(format!(
            "{} cannot import cyclonedds (run `make venv`)",
            py.display()
        ))
    }
}

pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
