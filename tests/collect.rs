//! `vla collect` and `vla dataset`: datasets survive Ctrl-C and SIGKILL, and resume.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn vla() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vla"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vla-collect-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn json(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.output().expect("runs vla");
    assert!(
        out.status.success(),
        "vla failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn settled(out: &Path) -> usize {
    std::fs::read_to_string(out.join(".vla_collect.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["settled"].as_array().map(|a| a.len()))
        .unwrap_or(0)
}

#[test]
fn collect_writes_a_valid_dataset_and_export_works() {
    let out = scratch("basic");
    let r = json(
        vla()
            .args([
                "collect",
                "--suite",
                "pick",
                "--episodes",
                "2",
                "--json",
                "--out",
            ])
            .arg(&out),
    );
    assert_eq!(r["total_episodes"], 2);
    let info = json(vla().args(["dataset", "info", "--json"]).arg(&out));
    assert_eq!(info["episodes"], 2);
    assert_eq!(info["codebase_version"], "v3.0");
    let v = json(vla().args(["dataset", "validate", "--json"]).arg(&out));
    assert_eq!(v["valid"], true);
    let gif = out.join("ep0.gif");
    let status = vla()
        .args(["dataset", "export-gif", "--episode", "0", "--out"])
        .arg(&gif)
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success() && gif.exists());
    // Refuses to overwrite.
    let again = vla()
        .args(["collect", "--suite", "pick", "--episodes", "1", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
}

#[test]
fn sigkill_leaves_a_valid_dataset_and_resume_completes_it() {
    let out = scratch("kill");
    let args = [
        "collect",
        "--suite",
        "pick",
        "--episodes",
        "12",
        "--seed",
        "4",
    ];
    let mut child = vla()
        .args(args)
        .arg("--out")
        .arg(&out)
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    // Wait for the first flush (every 5 episodes), then kill without warning.
    while settled(&out) < 5 && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    let _ = child.wait();
    let v = json(vla().args(["dataset", "validate", "--json"]).arg(&out));
    assert_eq!(v["valid"], true);
    let kept = v["episodes"].as_u64().unwrap();
    assert!(
        kept >= 5,
        "episodes flushed before the kill survive: {kept}"
    );
    let r = json(
        vla()
            .args(args)
            .arg("--out")
            .arg(&out)
            .args(["--resume", "--json"]),
    );
    assert_eq!(r["total_episodes"], 12, "{r}");
    let v = json(vla().args(["dataset", "validate", "--json"]).arg(&out));
    assert_eq!(v["episodes"], 12);
}

#[test]
fn ctrl_c_finishes_the_episodes_in_flight_and_closes_the_dataset() {
    let out = scratch("sigint");
    let child = vla()
        .args([
            "collect",
            "--suite",
            "pick",
            "--episodes",
            "40",
            "--json",
            "--out",
        ])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !out.join("meta").exists() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "collect exits cleanly after Ctrl-C"
    );
    let r: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(r["interrupted"], true);
    let v = json(vla().args(["dataset", "validate", "--json"]).arg(&out));
    assert_eq!(v["episodes"], r["total_episodes"]);
}

/// `vla collect --shard i/N` splits one request's episodes between processes (disjoint seeds),
/// and `vla dataset merge` joins the shards into the very dataset one process writes.
#[test]
fn sharded_collection_merges_into_the_unsharded_dataset() {
    let root = scratch("shards");
    let (one, shards, merged) = (root.join("one"), root.join("shards"), root.join("merged"));
    let request = [
        "collect",
        "--suite",
        "pick",
        "--episodes",
        "3",
        "--seed",
        "5",
    ];
    json(vla().args(request).args(["--json", "--out"]).arg(&one));
    for shard in ["0/2", "1/2"] {
        let r = json(
            vla()
                .args(request)
                .args(["--shard", shard, "--json", "--out"])
                .arg(&shards),
        );
        assert!(r["total_episodes"].as_u64().is_some_and(|n| n <= 2), "{r}");
    }
    let bad = vla()
        .args(request)
        .args(["--shard", "2/2", "--out"])
        .arg(&shards)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("below the shard count"));

    let parts = [
        shards.join("shard-000-of-002"),
        shards.join("shard-001-of-002"),
    ];
    let report = json(
        vla()
            .args(["dataset", "merge"])
            .args(&parts)
            .args(["--json", "--out"])
            .arg(&merged),
    );
    let v = json(vla().args(["dataset", "validate", "--json"]).arg(&merged));
    assert_eq!(v["valid"], true);
    let (m, o) = (
        vla_datasets::Dataset::open(&merged).unwrap(),
        vla_datasets::Dataset::open(&one).unwrap(),
    );
    assert_eq!(report["episodes"], o.episodes().len(), "{report}");
    assert_eq!(
        (m.len(), m.tasks(), m.subtasks()),
        (o.len(), o.tasks(), o.subtasks())
    );
    for i in 0..o.len() {
        assert_eq!(m.frame(i).unwrap(), o.frame(i).unwrap(), "frame {i}");
    }
    let stats = |d: &Path| std::fs::read_to_string(d.join("meta/stats.json")).unwrap();
    assert_eq!(stats(&merged), stats(&one), "stats.json");
    let _ = std::fs::remove_dir_all(&root);
}
