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

/// `script` with its `STOP_B;` marker replaced by a loop that sends Ctrl-C to the background
/// job `$B` until it is gone (a job may not have its handler installed yet), as `$K`.
pub fn with_stop_b(script: &str) -> String {
    script.replace(
        "STOP_B;",
        "( while kill -INT $B 2>/dev/null; do sleep 0.5; done ) & K=$!;",
    )
}

/// Runs `vla ros sim SIM_ARGS` and `vla ros bridge BRIDGE_ARGS` (shell words, `--json` added)
/// side by side in a fresh network namespace, the bridge stopped by Ctrl-C once the simulator
/// is done. Both must succeed (their logs are printed otherwise); returns the simulator's and
/// the bridge's reports. Logs and reports stay in `dir`.
pub fn sim_and_bridge(
    dir: &Path,
    sim_args: &str,
    bridge_args: &str,
) -> (serde_json::Value, serde_json::Value) {
    let script = format!(
        "{vla} ros sim {sim_args} --json > {dir}/sim.json 2> {dir}/sim.log & S=$!; \
         {vla} ros bridge {bridge_args} --json > {dir}/bridge.json 2> {dir}/bridge.log & B=$!; \
         wait $S; R=$?; STOP_B; wait $B; BR=$?; kill $K 2>/dev/null; \
         [ $R -eq 0 ] && [ $BR -eq 0 ]",
        vla = sh_quote(env!("CARGO_BIN_EXE_vla")),
        dir = sh_quote(&dir.display().to_string()),
    );
    let status = vla_ros_bridge::netns::shell(&with_stop_b(&script))
        .status()
        .expect("runs the namespace");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    if !status.success() {
        eprintln!(
            "--- sim log ---\n{}\n--- bridge log ---\n{}",
            read("sim.log"),
            read("bridge.log")
        );
    }
    assert!(status.success(), "ros sim + bridge failed ({status})");
    let sim = serde_json::from_str(&read("sim.json")).expect("the simulator's JSON report");
    let bridge = serde_json::from_str(&read("bridge.json")).expect("the bridge's JSON report");
    (sim, bridge)
}
