//! `vla dataset from-mcap` on bags written by an independent writer: Python's `mcap` and
//! `mcap-ros2-support` (in `.venv-lerobot`), with ROS 2 message definitions as rosbag2 stores
//! them, two cameras (rgb8 and bgr8, of different sizes), joint states and twists at their own
//! jittered rates, episode markers, and bags that must be refused.
//!
//! Runs only when `.venv-lerobot/bin/python` can import `mcap` and `mcap_ros2` (`make setup`
//! installs them); with `VLA_REQUIRE_LEROBOT` set (as `make test` does) it fails instead.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{json, vla};
use serde_json::Value;
use vla_datasets::Dataset;

const FPS: u64 = 10;
const TOLERANCE_NS: u64 = 2 * 1_000_000_000 / FPS;

/// Writes every bag of this test into the directory argv[1], and `truth.json`: per bag and
/// topic, every message's log time and what it holds.
const WRITER: &str = r#"
import json, random, struct, sys, zlib
from pathlib import Path
from mcap_ros2.writer import Writer

SEP = "\n" + "=" * 80 + "\n"
HEADER = "MSG: std_msgs/Header\nbuiltin_interfaces/Time stamp\nstring frame_id"
VECTOR3 = "MSG: geometry_msgs/Vector3\nfloat64 x\nfloat64 y\nfloat64 z"
DEFS = {
    "sensor_msgs/msg/Image": "std_msgs/Header header\nuint32 height\nuint32 width\n"
        "string encoding\nuint8 is_bigendian\nuint32 step\nuint8[] data" + SEP + HEADER,
    "sensor_msgs/msg/CompressedImage": "std_msgs/Header header\nstring format\nuint8[] data"
        + SEP + HEADER,
    "sensor_msgs/msg/JointState": "std_msgs/Header header\nstring[] name\n"
        "float64[] position\nfloat64[] velocity\nfloat64[] effort" + SEP + HEADER,
    "geometry_msgs/msg/TwistStamped": "std_msgs/Header header\nTwist twist" + SEP
        + "MSG: geometry_msgs/Twist\nVector3 linear\nVector3 angular" + SEP + VECTOR3
        + SEP + HEADER,
    "std_msgs/msg/String": "string data",
}
JOINTS = ["shoulder_pan", "shoulder_lift", "elbow", "wrist_1", "wrist_2", "wrist_3", "gripper"]
BASE = 1_700_000_000 * 10**9

def pixel(salt, i, x, y):
    return ((x * 7 + i * 3 + salt * 50) % 256, (y * 11 + i) % 256, (x * y + salt) % 256)

def png(width, height, rows):
    raw = b"".join(b"\x00" + bytes(v for px in row for v in px) for row in rows)
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data
                                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))

def times(rng, start, hz, end):
    period = 1e9 / hz
    out, i = [], 0
    while start + i * period <= end:
        out.append(int(start + i * period + rng.uniform(-0.2, 0.2) * period))
        i += 1
    return out

def stamp(t):
    return {"stamp": {"sec": t // 10**9, "nanosec": t % 10**9}, "frame_id": "base"}

def write_bag(path, salt, action=True, front_encoding="rgb8", front_size=lambda t: (32, 24),
              compressed_front=False, front_silent=None, markers=()):
    rng = random.Random(salt)
    end = BASE + 3 * 10**9
    events, truth = [], {}
    def add(topic, schema, t, msg, value):
        events.append((t, topic, schema, msg))
        truth.setdefault(topic, []).append({"t": t, "v": value})
    front_times = [t for t in times(rng, BASE + 20_000_000, 15, end)
                   if front_silent is None or not (front_silent[0] < t - BASE < front_silent[1])]
    for i, t in enumerate(front_times):
        w, h = front_size(t - BASE)
        rows = [[pixel(salt, i, x, y) for x in range(w)] for y in range(h)]
        if compressed_front:
            msg = {"header": stamp(t - 2_000_000), "format": "png", "data": png(w, h, rows)}
            add("/cam/image_raw", "sensor_msgs/msg/CompressedImage", t, msg, [i, w, h])
        else:
            channels = 2 if front_encoding == "16UC1" else 3
            data = bytes(v for row in rows for px in row for v in px[:channels])
            msg = {"header": stamp(t - 2_000_000), "height": h, "width": w,
                   "encoding": front_encoding, "is_bigendian": 0, "step": w * channels,
                   "data": data}
            add("/cam/image_raw", "sensor_msgs/msg/Image", t, msg, [i, w, h])
    for i, t in enumerate(times(rng, BASE + 35_000_000, 10, end)):
        rows = [[pixel(salt + 1, i, x, y) for x in range(16)] for y in range(12)]
        data = bytes(v for row in rows for px in row for v in reversed(px))
        msg = {"header": stamp(t - 3_000_000), "height": 12, "width": 16, "encoding": "bgr8",
               "is_bigendian": 0, "step": 48, "data": data}
        add("/wrist/image_raw", "sensor_msgs/msg/Image", t, msg, [i, 16, 12])
    for i, t in enumerate(times(rng, BASE, 50, end)):
        position = [((i * 7 + j * 13 + salt) % 512 - 256) / 64.0 for j in range(len(JOINTS))]
        msg = {"header": stamp(t - 1_000_000), "name": JOINTS, "position": position,
               "velocity": [0.5] * len(JOINTS), "effort": []}
        add("/joint_states", "sensor_msgs/msg/JointState", t, msg, position)
    if action:
        for i, t in enumerate(times(rng, BASE + 50_000_000, 30, end)):
            v = [((i * 5 + k * 11 + salt) % 200 - 100) / 64.0 for k in range(6)]
            msg = {"header": stamp(t - 1_000_000),
                   "twist": {"linear": dict(zip("xyz", v[:3])), "angular": dict(zip("xyz", v[3:]))}}
            add("/servo_node/delta_twist_cmds", "geometry_msgs/msg/TwistStamped", t, msg, v)
    for i, t in enumerate(times(rng, BASE + 7_000_000, 2, end)):
        add("/chatter", "std_msgs/msg/String", t, {"data": f"hello {i}"}, i)
    for offset, word in markers:
        add("/vla/episode", "std_msgs/msg/String", BASE + offset, {"data": word}, word)
    events.sort(key=lambda e: e[0])
    with open(path, "wb") as f:
        writer = Writer(f)
        schemas = {name: writer.register_msgdef(name, text) for name, text in DEFS.items()}
        for seq, (t, topic, schema, msg) in enumerate(events):
            writer.write_message(topic=topic, schema=schemas[schema], message=msg,
                                 log_time=t, publish_time=t, sequence=seq)
        writer.finish()
    return truth

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
truth = {
    "bag_a": write_bag(out / "bag_a.mcap", 1),
    # The front camera silent for 0.45 s: more than the tolerance, less than --max-gap.
    "bag_b": write_bag(out / "bag_b.mcap", 2, front_silent=(1_200_000_000, 1_650_000_000)),
    "markers": write_bag(out / "markers.mcap", 3, markers=[
        (300_000_000, "start"), (800_000_000, "discard"), (1_000_000_000, "start"),
        (1_800_000_000, "stop"), (2_200_000_000, "start"), (2_900_000_000, "stop")]),
    "missing": write_bag(out / "missing.mcap", 4, action=False),
    "encoding": write_bag(out / "encoding.mcap", 5, front_encoding="16UC1"),
    "size": write_bag(out / "size.mcap", 6,
                      front_size=lambda t: (32, 24) if t < 1_500_000_000 else (40, 30)),
    "png_size": write_bag(out / "png_size.mcap", 7, compressed_front=True,
                          front_size=lambda t: (32, 24) if t < 1_500_000_000 else (24, 16)),
}
(out / "truth.json").write_text(json.dumps(truth))
"#;

/// The Python of `.venv-lerobot` when it has the MCAP packages; `None` means skip.
fn python() -> Option<PathBuf> {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-lerobot/bin/python");
    let usable = py.exists()
        && Command::new(&py)
            .args(["-c", "import mcap, mcap_ros2.writer"])
            .status()
            .is_ok_and(|s| s.success());
    if usable {
        return Some(py);
    }
    assert!(
        std::env::var_os("VLA_REQUIRE_LEROBOT").is_none(),
        ".venv-lerobot/bin/python with mcap and mcap-ros2-support not found (run `make setup`)"
    );
    eprintln!("skipped: .venv-lerobot/bin/python cannot import mcap and mcap_ros2");
    None
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vla-mcap-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Write the bags with Python; returns their directory and the truth.
fn write_bags(py: &Path) -> (PathBuf, Value) {
    let dir = scratch("bags");
    let script = std::env::temp_dir().join(format!("vla-mcap-writer-{}.py", std::process::id()));
    std::fs::write(&script, WRITER).expect("write the script");
    let out = Command::new(py)
        .arg(&script)
        .arg(&dir)
        .output()
        .expect("runs python");
    let _ = std::fs::remove_file(&script);
    assert!(
        out.status.success(),
        "the Python MCAP writer failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let truth = std::fs::read_to_string(dir.join("truth.json")).expect("truth.json");
    (
        dir.clone(),
        serde_json::from_str(&truth).expect("truth is JSON"),
    )
}

/// One topic's messages: log times, and values.
struct Topic {
    times: Vec<u64>,
    values: Vec<Value>,
}

fn topic(truth: &Value, bag: &str, name: &str) -> Topic {
    let list = truth[bag][name].as_array().expect("messages of the topic");
    Topic {
        times: list.iter().map(|m| m["t"].as_u64().expect("t")).collect(),
        values: list.iter().map(|m| m["v"].clone()).collect(),
    }
}

const DATA: [&str; 4] = [
    "/cam/image_raw",
    "/wrist/image_raw",
    "/joint_states",
    "/servo_node/delta_twist_cmds",
];

/// What the sampling must give, worked out here from the messages written: per kept tick the
/// index of each topic's latest message at or before it, and per topic the stale ticks.
fn expected_frames(topics: &[Topic], interval: Option<(u64, u64)>) -> (Vec<Vec<usize>>, Vec<u64>) {
    let ready = topics.iter().map(|t| t.times[0]).max().expect("topics");
    let last = topics
        .iter()
        .map(|t| *t.times.last().expect("messages"))
        .max()
        .expect("topics");
    let (from, end) = interval.unwrap_or((0, last));
    let start = from.max(ready);
    let mut frames = Vec::new();
    let mut stale = vec![0u64; topics.len()];
    let mut k = 0u64;
    while start + k * 1_000_000_000 / FPS <= end {
        let t = start + k * 1_000_000_000 / FPS;
        let picks: Vec<usize> = topics
            .iter()
            .map(|tp| tp.times.iter().filter(|&&m| m <= t).count() - 1)
            .collect();
        let mut fresh = true;
        for (i, tp) in topics.iter().enumerate() {
            if t - tp.times[picks[i]] > TOLERANCE_NS {
                stale[i] += 1;
                fresh = false;
            }
        }
        if fresh {
            frames.push(picks);
        }
        k += 1;
    }
    (frames, stale)
}

fn pixel(salt: u64, i: u64, x: u64, y: u64) -> [u8; 3] {
    [
        ((x * 7 + i * 3 + salt * 50) % 256) as u8,
        ((y * 11 + i) % 256) as u8,
        ((x * y + salt) % 256) as u8,
    ]
}

fn picture(salt: u64, i: u64, width: u32, height: u32) -> image::RgbImage {
    image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb(pixel(salt, i, u64::from(x), u64::from(y)))
    })
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("numbers")
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

fn from_mcap(bags: &[PathBuf], out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args: Vec<String> = vec!["dataset".into(), "from-mcap".into()];
    args.extend(bags.iter().map(|b| b.display().to_string()));
    for a in [
        "--out",
        out.to_str().expect("UTF-8 path"),
        "--camera",
        "front=/cam/image_raw",
        "--camera",
        "wrist=/wrist/image_raw",
        "--state",
        "/joint_states",
        "--action",
        "/servo_node/delta_twist_cmds",
        "--fps",
        "10",
    ] {
        args.push(a.into());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    vla(&args)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bags_from_an_independent_writer_become_a_valid_dataset_and_bad_ones_are_refused() {
    let Some(py) = python() else { return };
    let (dir, truth) = write_bags(&py);
    let bag = |name: &str| dir.join(format!("{name}.mcap"));

    // Two bags: two episodes, each frame the latest messages at or before its tick.
    let out = scratch("ab");
    let run = from_mcap(&[bag("bag_a"), bag("bag_b")], &out, &["--json"]);
    assert!(run.status.success(), "from-mcap failed: {}", stderr(&run));
    let report: Value = serde_json::from_slice(&run.stdout).expect("one JSON report");
    let mut expected = Vec::new();
    let mut stale_cam = 0;
    for (salt, name) in [(1u64, "bag_a"), (2, "bag_b")] {
        let topics: Vec<Topic> = DATA.iter().map(|t| topic(&truth, name, t)).collect();
        let (frames, stale) = expected_frames(&topics, None);
        assert!(frames.len() > 20, "{name}: {} frames", frames.len());
        stale_cam += stale[0];
        assert_eq!(
            stale[1..],
            [0, 0, 0],
            "{name}: only the front camera goes stale"
        );
        assert_eq!(
            report["bags"][(salt - 1) as usize]["frames"],
            frames.len() as u64,
            "{report}"
        );
        expected.push((salt, name, topics, frames));
    }
    assert!(stale_cam >= 2, "bag_b's silent camera makes ticks stale");
    assert_eq!(report["episodes"], 2, "{report}");
    assert_eq!(report["dropped"]["/cam/image_raw"], stale_cam, "{report}");
    assert_eq!(report["dropped"]["/joint_states"], 0, "{report}");
    assert_eq!(report["dropped_ticks"], stale_cam, "{report}");
    for key in ["frames", "seconds", "duration_s", "bags"] {
        assert!(report.get(key).is_some(), "{key} missing from {report}");
    }

    let ds = Dataset::open(&out).expect("the dataset opens");
    let info = ds.info();
    assert_eq!(info.fps, 10);
    assert_eq!(info.features["observation.images.front"].shape, [24, 32, 3]);
    assert_eq!(info.features["observation.images.wrist"].shape, [12, 16, 3]);
    assert_eq!(
        info.features["observation.state"].names,
        serde_json::json!([
            "shoulder_pan",
            "shoulder_lift",
            "elbow",
            "wrist_1",
            "wrist_2",
            "wrist_3",
            "gripper"
        ])
    );
    assert_eq!(
        info.features["action"].names,
        serde_json::json!([
            "linear.x",
            "linear.y",
            "linear.z",
            "angular.x",
            "angular.y",
            "angular.z"
        ])
    );
    let total: usize = expected.iter().map(|e| e.3.len()).sum();
    assert_eq!(ds.len(), total);
    let all: Vec<usize> = (0..ds.len()).collect();
    let frames = ds.frames(&all).expect("frames decode");
    let mut at = 0;
    for (episode, (salt, name, topics, picks)) in expected.iter().enumerate() {
        for (k, p) in picks.iter().enumerate() {
            let f = &frames[at];
            at += 1;
            let what = format!("{name} frame {k}");
            assert_eq!((f.episode_index, f.frame_index), (episode, k), "{what}");
            assert_eq!(f.task, *name, "the task is the bag's stem");
            assert_eq!(f.timestamp, k as f32 / 10.0, "{what}");
            assert_eq!(f.state, floats(&topics[2].values[p[2]]), "{what}: state");
            assert_eq!(f.action, floats(&topics[3].values[p[3]]), "{what}: action");
            let front = topics[0].values[p[0]][0].as_u64().expect("index");
            assert_eq!(
                f.images["observation.images.front"],
                picture(*salt, front, 32, 24),
                "{what}: front image"
            );
            let wrist = topics[1].values[p[1]][0].as_u64().expect("index");
            assert_eq!(
                f.images["observation.images.wrist"],
                picture(salt + 1, wrist, 16, 12),
                "{what}: wrist image (bgr8 turned into RGB)"
            );
        }
    }
    let valid = json(&[
        "dataset",
        "validate",
        "--json",
        out.to_str().expect("UTF-8"),
    ]);
    assert_eq!(valid["valid"], true, "{valid}");

    // Markers: start … discard drops, then two start … stop episodes.
    let markers_out = scratch("markers");
    let run = from_mcap(
        &[bag("markers")],
        &markers_out,
        &[
            "--episode-topic",
            "/vla/episode",
            "--task",
            "wave",
            "--json",
        ],
    );
    assert!(run.status.success(), "from-mcap failed: {}", stderr(&run));
    let report: Value = serde_json::from_slice(&run.stdout).expect("one JSON report");
    let topics: Vec<Topic> = DATA.iter().map(|t| topic(&truth, "markers", t)).collect();
    let at = |ms: u64| 1_700_000_000 * 1_000_000_000 + ms * 1_000_000;
    let lengths: Vec<usize> = [(1000, 1800), (2200, 2900)]
        .iter()
        .map(|&(a, b)| expected_frames(&topics, Some((at(a), at(b)))).0.len())
        .collect();
    assert_eq!(report["episodes"], 2, "{report}");
    assert_eq!(
        report["frames"],
        lengths.iter().sum::<usize>() as u64,
        "{report}"
    );
    let ds = Dataset::open(&markers_out).expect("opens");
    let eps: Vec<usize> = ds.episodes().iter().map(|e| e.length).collect();
    assert_eq!(eps, lengths);
    assert_eq!(ds.tasks(), ["wave"]);

    // A named topic the bag lacks: the error lists what the bag has, nothing is written.
    let refused = scratch("missing");
    let run = from_mcap(&[bag("missing")], &refused, &[]);
    assert!(!run.status.success());
    let err = stderr(&run);
    for word in [
        "missing.mcap",
        "/servo_node/delta_twist_cmds (--action",
        "/joint_states (sensor_msgs/msg/JointState)",
        "/cam/image_raw (sensor_msgs/msg/Image)",
        "/chatter (std_msgs/msg/String)",
    ] {
        assert!(err.contains(word), "{word:?} not in {err}");
    }
    assert!(!refused.exists(), "nothing written");

    // An image encoding we do not read.
    let run = from_mcap(&[bag("encoding")], &refused, &[]);
    assert!(!run.status.success());
    let err = stderr(&run);
    assert!(
        err.contains("encoding.mcap") && err.contains("/cam/image_raw") && err.contains("16UC1"),
        "{err}"
    );
    assert!(!refused.exists(), "nothing written");

    // A raw image changing size: found before anything is written.
    let run = from_mcap(&[bag("bag_a"), bag("size")], &refused, &[]);
    assert!(!run.status.success());
    let err = stderr(&run);
    for word in ["size.mcap", "/cam/image_raw", "32x24 to 40x30", "frame "] {
        assert!(err.contains(word), "{word:?} not in {err}");
    }
    assert!(!refused.exists(), "nothing written");

    // A PNG changing size is found only while writing: the first bag's episode stays.
    let kept = scratch("kept");
    let run = from_mcap(&[bag("bag_a"), bag("png_size")], &kept, &[]);
    assert!(!run.status.success());
    let err = stderr(&run);
    for word in [
        "png_size.mcap",
        "/cam/image_raw",
        "32x24 to 24x16",
        "keeps the 1 episode written",
    ] {
        assert!(err.contains(word), "{word:?} not in {err}");
    }
    let valid = json(&[
        "dataset",
        "validate",
        "--json",
        kept.to_str().expect("UTF-8"),
    ]);
    assert_eq!(valid["episodes"], 1, "{valid}");
    assert_eq!(valid["frames"], expected[0].3.len() as u64, "{valid}");

    // --out must be new.
    let run = from_mcap(&[bag("bag_a")], &out, &[]);
    assert!(!run.status.success());
    assert!(stderr(&run).contains("not empty"), "{}", stderr(&run));

    for d in [dir, out, markers_out, kept] {
        let _ = std::fs::remove_dir_all(d);
    }
}
