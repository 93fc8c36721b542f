//! The learning path of the command line end to end, at toy scale: collect → train → act →
//! eval → bench, with the JSON each prints. (Whether the policy is *good* is the demo's job;
//! here every command must work on real files and report the documented shape.)

mod common;

use std::path::{Path, PathBuf};

use common::{json, vla};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vla-policy-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A model small enough to train a few steps in seconds.
const TOY_CONFIG: &str = concat!(
    common::toy_model!(),
    r#"
[plan]
weight = 1.0
max_tokens = 12

[train]
steps = 4
batch_size = 4
val_every = 2
log_every = 1
checkpoint_every = 2

[train.grounding]
map_weight = 1.0
"#
);

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// A fresh directory holding the toy config and two `pick` episodes: (dir, config, data).
fn toy_root_with_data(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let root = tmp(name);
    std::fs::create_dir_all(&root).unwrap();
    let (config, data) = (root.join("toy.toml"), root.join("data"));
    std::fs::write(&config, TOY_CONFIG).unwrap();
    json(&[
        "collect",
        "--suite",
        "pick",
        "--episodes",
        "2",
        "--out",
        s(&data),
        "--json",
    ]);
    (root, config, data)
}

#[test]
fn collect_train_act_eval_bench() {
    let (root, config, data) = toy_root_with_data("run");
    let run = root.join("run");
    let train = json(&[
        "train",
        "--data",
        s(&data),
        "--out",
        s(&run),
        "--config",
        s(&config),
        "--json",
    ]);
    assert_eq!(train["steps"], 4);
    assert!(train["final_val"]["l1"].is_number(), "{train}");
    for f in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "metrics.jsonl",
        "loss.png",
    ] {
        assert!(run.join(f).exists(), "{f} missing in the run directory");
    }
    // A finished run refuses to be overwritten, and --resume past the end is a no-op.
    let again = vla(&[
        "train",
        "--data",
        s(&data),
        "--out",
        s(&run),
        "--config",
        s(&config),
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));

    let png = root.join("front.png");
    json(&["render", "--suite", "pick", "--out", s(&png), "--json"]);
    let act_with = |extra: &[&str]| {
        let mut args = vec![
            "act",
            "--ckpt",
            s(&run),
            "--image",
            s(&png),
            "--instruction",
            "pick up the red cube",
            "--json",
        ];
        args.extend_from_slice(extra);
        json(&args)
    };
    let act = act_with(&[]);
    // The model says a sub-task (a few words, after 4 steps of training) before acting; an
    // imposed one is reported as given.
    assert!(act["subtask"].is_string(), "{act}");
    let imposed = act_with(&["--subtask", "put the green cube in the red bin"]);
    assert_eq!(
        imposed["subtask"], "put the green cube in the red bin",
        "{imposed}"
    );
    let tokens = act["tokens"].as_array().expect("tokens");
    let action = act["action"].as_array().expect("action");
    assert_eq!((tokens.len(), action.len()), (7, 7));
    assert!(
        tokens
            .iter()
            .all(|t| t.as_i64().is_some_and(|t| (400..656).contains(&t))),
        "{act}"
    );
    // A state with negative values (as every real state has) parses as the value of --state;
    // the grounding heads' maps are drawn, and their points reported, per camera and head.
    let maps = root.join("grounding.png");
    let with_state = act_with(&[
        "--state",
        "-0.1,0.2,-0.3,0.4,-0.5,0.6,0.04,0.45,-0.02,0.25,-3.1,0.0,1.5",
        "--grounding-png",
        s(&maps),
    ]);
    assert_eq!(with_state["action"].as_array().map(Vec::len), Some(7));
    let points = with_state["grounding_px"].as_array().expect("grounding_px");
    assert_eq!(points.len(), 2, "{with_state}");
    assert!(points
        .iter()
        .all(|cam| cam.as_array().map(Vec::len) == Some(2)));
    let drawn = image::open(&maps).expect("grounding PNG").to_rgb8();
    assert_eq!((drawn.width(), drawn.height()), (3 * 128, 2 * 128));

    let eval = json(&[
        "eval",
        "--ckpt",
        s(&run),
        "--suite",
        "pick",
        "--episodes",
        "1",
        "--seed",
        "1000",
        "--trace",
        s(&root.join("trace.jsonl")),
        "--json",
    ]);
    // The trace has a line per control step with the expert's view of the same state, and
    // where the two grounding heads put the object and bin beside where the object is
    // (`pick` has no bin).
    let trace = std::fs::read_to_string(root.join("trace.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = trace
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!lines.is_empty());
    for line in &lines {
        assert_eq!(line["action"].as_array().map(Vec::len), Some(7), "{line}");
        assert_eq!(line["expert"].as_array().map(Vec::len), Some(7), "{line}");
        assert_eq!(line["state"].as_array().map(Vec::len), Some(13), "{line}");
        // What the policy said it would do, beside the expert's step.
        assert!(line["subtask"].is_string(), "{line}");
        assert!(
            line["expert_subtask"]
                .as_str()
                .is_some_and(|s| s.starts_with("pick up the ")),
            "{line}"
        );
        let heads = line["heads_xy"]
            .as_array()
            .expect("grounding heads in the trace");
        assert_eq!(heads.len(), 2, "{line}");
        assert!(
            matches!(line["subgoal"].as_u64(), Some(0..=2)),
            "the subgoal gate picks one of the two heads or \"hold\": {line}"
        );
        assert!(
            heads.iter().all(|h| h.as_array().map(Vec::len) == Some(2)),
            "{line}"
        );
        assert_eq!(
            line["object_xyz"].as_array().map(Vec::len),
            Some(3),
            "{line}"
        );
        assert!(line["bin_xy"].is_null(), "{line}");
        let objects = line["objects_xyz"].as_array().expect("objects_xyz");
        assert!(!objects.is_empty(), "{line}");
        assert_eq!(
            objects[0], line["object_xyz"],
            "object 0 is the target: {line}"
        );
    }
    let pick = &eval["per_family"]["pick"];
    assert_eq!(pick["episodes"], 1);
    let ci = pick["wilson95"].as_array().expect("wilson95");
    assert!(ci[0].as_f64().unwrap() <= ci[1].as_f64().unwrap());
    assert!(run.join("eval/pick_seen.json").exists());
    let gifs = std::fs::read_dir(run.join("eval/seen")).unwrap().count();
    assert_eq!(gifs, 1, "one rollout GIF for one episode");

    // Sharded evaluation: two processes' shards, merged, are the unsharded report, digest
    // included; a missing shard is named.
    let evals = root.join("evals");
    let request = |extra: &[&'static str]| -> Vec<String> {
        let args: Vec<String> = [
            "eval",
            "--ckpt",
            s(&run),
            "--suite",
            "pick",
            "--episodes",
            "2",
            "--seed",
            "2000",
            "--gifs",
            "0",
            "--out",
            s(&evals),
            "--json",
        ]
        .iter()
        .chain(extra)
        .map(|a| a.to_string())
        .collect();
        args
    };
    let run_json = |args: Vec<String>| json(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let whole = run_json(request(&[]));
    for shard in ["0/2", "1/2"] {
        let part = run_json(request(&["--shard", shard]));
        assert_eq!(part["episodes"], 1, "{part}");
    }
    let merged = run_json(request(&["--merge-shards"]));
    assert_eq!(merged["digest"], whole["digest"], "{merged} vs {whole}");
    assert_eq!(merged["per_family"], whole["per_family"]);
    // Under a launcher (`--shard env`, here two processes given torchrun's variables), the
    // ranks meet when done and rank 0 prints the merged report.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let ranks: Vec<_> = (0..2)
        .map(|rank| {
            std::process::Command::new(env!("CARGO_BIN_EXE_vla"))
                .args(request(&["--shard", "env"]))
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", "2")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .stderr(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<_> = ranks
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    assert!(outputs.iter().all(|o| o.status.success()));
    let launched: serde_json::Value = serde_json::from_slice(&outputs[0].stdout).unwrap();
    assert_eq!(launched["digest"], whole["digest"], "{launched}");
    assert!(outputs[1].stdout.is_empty(), "only rank 0 reports");
    std::fs::remove_file(evals.join("pick_seen.shard-001-of-002.json")).unwrap();
    let missing_args = request(&["--merge-shards"]);
    let missing = vla(&missing_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("shard(s) 1/2 missing"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );

    let bench = json(&[
        "bench",
        "policy",
        "--ckpt",
        s(&run),
        "--steps",
        "5",
        "--json",
    ]);
    for key in ["params", "step_ms_p50", "step_ms_p99", "hz", "rss_mb"] {
        assert!(bench[key].is_number(), "bench policy lacks {key}: {bench}");
    }

    // DAgger round: the policy drives, the expert labels, every episode is kept; then a
    // fine-tuning run starts from the first run's weights.
    let dagger = root.join("dagger");
    let collected = json(&[
        "collect",
        "--suite",
        "pick",
        "--episodes",
        "2",
        "--seed",
        "7",
        "--policy",
        s(&run),
        "--expert-share",
        "0.5",
        "--out",
        s(&dagger),
        "--json",
    ]);
    assert_eq!(collected["episodes_written"], 2, "{collected}");
    // Resuming it with another expert share would mix two kinds of rollouts: refused.
    let other_share = vla(&[
        "collect",
        "--suite",
        "pick",
        "--episodes",
        "3",
        "--seed",
        "7",
        "--policy",
        s(&run),
        "--expert-share",
        "0.3",
        "--out",
        s(&dagger),
        "--resume",
    ]);
    assert!(!other_share.status.success());
    let said = String::from_utf8_lossy(&other_share.stderr);
    assert!(said.contains("--expert-share 0.5"), "{said}");
    let tuned = json(&[
        "train",
        "--data",
        s(&data),
        "--data",
        s(&dagger),
        "--init",
        s(&run),
        "--out",
        s(&root.join("tuned")),
        "--config",
        s(&config),
        "--json",
    ]);
    assert_eq!(tuned["steps"], 4, "{tuned}");
    let _ = std::fs::remove_dir_all(&root);
}

/// A chunked model (`action.chunk_size = 3`, after a plan) through the same commands: `vla
/// act` reports the chunk and acts its first action, `vla eval` executes chunks open loop.
#[test]
fn a_chunked_model_acts_evaluates_and_benches() {
    let (root, config, data) = toy_root_with_data("chunk");
    let toy = std::fs::read_to_string(&config).unwrap();
    let chunked = toy.replace("[action]\n", "[action]\nchunk_size = 3\n");
    assert_ne!(chunked, toy);
    std::fs::write(&config, chunked).unwrap();
    let run = root.join("run");
    let train = json(&[
        "train",
        "--data",
        s(&data),
        "--out",
        s(&run),
        "--config",
        s(&config),
        "--json",
    ]);
    assert!(train["final_val"]["l1"].is_number(), "{train}");
    let png = root.join("front.png");
    json(&["render", "--suite", "pick", "--out", s(&png), "--json"]);
    let act = json(&[
        "act",
        "--ckpt",
        s(&run),
        "--image",
        s(&png),
        "--instruction",
        "pick up the red cube",
        "--json",
    ]);
    let chunk = act["chunk"].as_array().expect("the chunk");
    assert_eq!(chunk.len(), 3, "{act}");
    assert!(chunk.iter().all(|a| a.as_array().map(Vec::len) == Some(7)));
    assert_eq!(chunk[0], act["action"], "the first action is the one acted");
    assert_eq!(act["tokens"].as_array().map(Vec::len), Some(7), "{act}");
    let eval = json(&[
        "eval",
        "--ckpt",
        s(&run),
        "--suite",
        "pick",
        "--episodes",
        "1",
        "--seed",
        "1000",
        "--trace",
        s(&root.join("trace.jsonl")),
        "--json",
    ]);
    assert_eq!(eval["per_family"]["pick"]["episodes"], 1, "{eval}");
    let trace = std::fs::read_to_string(root.join("trace.jsonl")).unwrap();
    assert!(trace
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .all(|l| l["action"].as_array().map(Vec::len) == Some(7)));
    let bench = json(&[
        "bench",
        "policy",
        "--ckpt",
        s(&run),
        "--steps",
        "6",
        "--json",
    ]);
    assert_eq!(bench["actions_per_decode"], 3, "{bench}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn act_rejects_bad_input_naming_it() {
    let out = vla(&[
        "act",
        "--ckpt",
        "/nonexistent/run",
        "--image",
        "x.png",
        "--instruction",
        "go",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/run"), "{err}");
}

/// Co-training end to end: vision-language scenes beside robot episodes, a run that learns
/// both (its validation reports question-answering accuracy on held-out scenes, apart for
/// held-out words) and `vla ask` answering about an image.
#[test]
fn cotrain_on_vision_language_data_and_ask() {
    let (root, config, data) = toy_root_with_data("cotrain");
    let (vqa, run) = (root.join("vqa"), root.join("run"));
    json(&[
        "vqa",
        "collect",
        "--out",
        s(&vqa),
        "--scenes",
        "12",
        "--json",
    ]);
    let train = json(&[
        "train",
        "--data",
        s(&data),
        "--vqa",
        s(&vqa),
        "--vqa-ratio",
        "0.5",
        "--out",
        s(&run),
        "--config",
        s(&config),
        "--json",
    ]);
    let val = &train["final_val"];
    assert!(
        val["vqa_accuracy_seen"].is_number() || val["vqa_accuracy_held_out"].is_number(),
        "{train}"
    );
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(
        metrics.contains("\"vqa_loss\""),
        "the answers' loss is logged"
    );
    let recorded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("train.json")).unwrap()).unwrap();
    assert_eq!(recorded["cotrain"]["per_step"], 4, "{recorded}");

    let png = root.join("front.png");
    json(&["render", "--suite", "pick", "--out", s(&png), "--json"]);
    let question = "what colour is the cube?";
    let asked = json(&[
        "ask",
        "--ckpt",
        s(&run),
        "--image",
        s(&png),
        "--question",
        question,
        "--json",
    ]);
    assert_eq!(asked["question"], question);
    assert!(asked["answer"].is_string(), "{asked}");
    for (args, needle) in [
        (vec!["--question", " "], "--question"),
        (
            vec!["--question", "what?", "--max-tokens", "0"],
            "--max-tokens",
        ),
    ] {
        let mut all = vec!["ask", "--ckpt", s(&run), "--image", s(&png)];
        all.extend(args);
        let out = vla(&all);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains(needle));
    }
    let _ = std::fs::remove_dir_all(&root);
}
