//! `vla ros record` end to end: `vla ros sim --teleop expert` (the scripted expert driving the
//! simulated robot over ROS 2, as a teleoperator would, and marking its episodes) is recorded
//! by `vla ros record` in the same network namespace. The recording must be the same
//! demonstrations `vla collect` writes for the same scenes: the same episodes and tasks, about
//! as many frames, the same start and end of every episode. Recorded with AV1 video cameras,
//! as lerobot records, it must validate, load in Python `lerobot` and train.

mod common;
mod ros_common;

use std::path::Path;
use std::process::Command;

use common::json;
use ros_common::*;
use vla_datasets::Dataset;
use vla_ros_bridge::netns;

const TEST: &str = "a_teleoperated_sim_recorded_over_ros_matches_vla_collect";
const EPISODES: usize = 3;
const SEED: u64 = 5;

/// Per episode: task, length, first state, where the tool ends, and the sum of its actions.
struct Summary {
    task: String,
    length: usize,
    first_state: Vec<f32>,
    /// The tool position in the episode's last three frames, the last first.
    last_tools: Vec<Vec<f32>>,
    action_sum: Vec<f32>,
}

fn summarise(dir: &Path) -> Vec<Summary> {
    let ds = Dataset::open(dir).expect("the dataset opens");
    let mut out = Vec::new();
    for e in ds.episodes() {
        let frames = ds
            .frames(&(e.dataset_from_index..e.dataset_to_index).collect::<Vec<_>>())
            .expect("frames");
        let Some(first) = frames.first() else {
            panic!("episode {} is empty", e.episode_index);
        };
        let mut action_sum = vec![0.0f32; first.action.len()];
        for f in &frames {
            for (s, a) in action_sum.iter_mut().zip(&f.action) {
                *s += a;
            }
        }
        out.push(Summary {
            task: first.task.clone(),
            length: frames.len(),
            first_state: first.state.clone(),
            last_tools: frames
                .iter()
                .rev()
                .take(3)
                .map(|f| f.state[7..10].to_vec())
                .collect(),
            action_sum,
        });
    }
    out
}

fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
}

#[test]
fn a_teleoperated_sim_recorded_over_ros_matches_vla_collect() {
    if let Err(why) = netns::available() {
        return netns::skip_or_fail(TEST, &why);
    }
    let dir = temp_dir("record");
    let rec = dir.join("recorded");
    let vla_bin = env!("CARGO_BIN_EXE_vla");
    // The recorder first; the teleoperator waits until discovery has matched it. The sim
    // steps at 10 Hz on the wall clock and the recorder samples at 10 fps on its own.
    let script = format!(
        "{vla} ros record --out {rec} --video av1 --seconds 240 --json > {dir}/record.json 2> {dir}/record.log & R=$!; \
         {vla} ros sim --suite pick --split seen --seed {SEED} --episodes {EPISODES} \
           --teleop expert --rate-hz 10 --json > {dir}/sim.json 2> {dir}/sim.log; S=$?; \
         sleep 1; ( while kill -INT $R 2>/dev/null; do sleep 0.5; done ) & K=$!; \
         wait $R; X=$?; kill $K 2>/dev/null; [ $S = 0 ] && exit $X; exit $S",
        vla = sh_quote(vla_bin),
        rec = sh_quote(&rec.display().to_string()),
        dir = sh_quote(&dir.display().to_string()),
    );
    let status = netns::shell(&script).status().expect("runs the namespace");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    if !status.success() {
        eprintln!(
            "--- sim log ---\n{}\n--- record log ---\n{}",
            read("sim.log"),
            read("record.log")
        );
    }
    assert!(
        status.success(),
        "ros sim --teleop + ros record failed ({status})"
    );
    let sim: serde_json::Value = serde_json::from_str(&read("sim.json")).expect("sim JSON");
    let report: serde_json::Value =
        serde_json::from_str(&read("record.json")).expect("record JSON");
    eprintln!("record report: {report}");
    let successes = sim["successes"].as_u64().expect("successes") as usize;
    assert!(successes > 0, "the expert failed every episode: {sim}");
    assert_eq!(report["episodes_saved"], successes, "{report}");
    assert_eq!(
        report["episodes_discarded"],
        EPISODES - successes,
        "failed demonstrations are discarded: {report}"
    );

    // The same scenes through `vla collect` (no ROS, no clock).
    let collected = dir.join("collected");
    let (seed, episodes) = (SEED.to_string(), EPISODES.to_string());
    json(&[
        "collect",
        "--suite",
        "pick",
        "--split",
        "seen",
        "--envs",
        "1",
        "--seed",
        &seed,
        "--episodes",
        &episodes,
        "--json",
        "--out",
        &collected.display().to_string(),
    ]);
    let (r, c) = (summarise(&rec), summarise(&collected));
    assert_eq!(r.len(), c.len(), "recorded vs collected episodes");
    for (i, (r, c)) in r.iter().zip(&c).enumerate() {
        eprintln!(
            "episode {i}: {:?} recorded {} frames, collected {}; action sums {:?} vs {:?}",
            r.task, r.length, c.length, r.action_sum, c.action_sum
        );
        assert_eq!(r.task, c.task, "episode {i}: the task");
        // Ticks on two wall clocks: a frame dropped or taken twice now and then (more often on
        // a loaded machine, where the simulator's steps run late).
        let slack = 3 + c.length / 5;
        assert!(
            r.length.abs_diff(c.length) <= slack,
            "episode {i}: {} frames recorded, {} collected",
            r.length,
            c.length
        );
        // The robot starts at rest, in the same pose, and ends where the expert took the cube;
        // a last frame taken a tick early or late sees the tool one lift step (up to 2.5 cm)
        // off, so the recording's last tool position must match one of the collected
        // episode's last three.
        assert!(
            close(&r.first_state, &c.first_state, 1e-3),
            "episode {i}: first state {:?} vs {:?}",
            r.first_state,
            c.first_state
        );
        let ends_at = &r.last_tools[0];
        assert!(
            c.last_tools.iter().any(|t| close(ends_at, t, 0.02)),
            "episode {i}: the tool ends at {ends_at:?}, collected in its last frames at {:?}",
            c.last_tools
        );
        // The commanded tool path, summed: a frame taken twice or missed moves the sum by one
        // step's delta (the expert's are at most 2.5 cm), and the gripper is closed for about
        // as many frames.
        let path_tol = 0.03 * (r.length.abs_diff(c.length) + 1) as f32;
        assert!(
            close(&r.action_sum[..3], &c.action_sum[..3], path_tol),
            "episode {i}: tool path {:?} recorded, {:?} collected",
            &r.action_sum[..3],
            &c.action_sum[..3]
        );
        assert!(
            (r.action_sum[6] - c.action_sum[6]).abs() <= slack as f32,
            "episode {i}: gripper closed in {} recorded frames, {} collected",
            r.action_sum[6],
            c.action_sum[6]
        );
    }

    let rec_s = rec.display().to_string();
    let v = json(&["dataset", "validate", "--json", &rec_s]);
    assert_eq!(v["valid"], true, "{v}");
    lerobot_loads(&rec, r.iter().map(|s| s.length).sum());
    // It trains as `vla collect`'s data does.
    let run = dir.join("run");
    json(&[
        "train",
        "--steps",
        "3",
        "--data",
        &rec_s,
        "--out",
        &run.display().to_string(),
        "--json",
    ]);
    assert!(run.join("model.safetensors").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Python `lerobot` 0.4.4 loads the recording: its episodes, frames and features.
fn lerobot_loads(dir: &Path, frames: usize) {
    let py = repo().join(".venv-lerobot/bin/python");
    if !py.exists() {
        assert!(
            std::env::var_os("VLA_REQUIRE_LEROBOT").is_none(),
            "{} not found (run `make setup`)",
            py.display()
        );
        eprintln!("skipped the lerobot check: {} not found", py.display());
        return;
    }
    let code = r#"
import sys
from lerobot.datasets.lerobot_dataset import LeRobotDataset
ds = LeRobotDataset("local/vla_ros_record", root=sys.argv[1], video_backend="pyav")
assert ds.meta.features["observation.images.front"]["dtype"] == "video"
assert ds.num_frames == int(sys.argv[2]), ds.num_frames
item = ds[ds.num_frames - 1]
assert tuple(item["observation.state"].shape) == (13,), item["observation.state"].shape
assert tuple(item["action"].shape) == (7,), item["action"].shape
for cam in ("front", "wrist"):
    assert item[f"observation.images.{cam}"].shape[0] == 3
assert isinstance(item["task"], str) and item["task"], item["task"]
print("lerobot loads", ds.num_episodes, "episodes,", ds.num_frames, "frames")
"#;
    let out = Command::new(&py)
        .args(["-c", code])
        .arg(dir)
        .arg(frames.to_string())
        .output()
        .expect("runs python");
    assert!(
        out.status.success(),
        "lerobot cannot load the recording:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{}", String::from_utf8_lossy(&out.stdout));
}
