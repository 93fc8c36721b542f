//! The sampler and the markers on plain numbers; the importer on bags written here with the
//! `mcap` crate's writer (the test against an independent writer, Python's, is
//! `tests/mcap_import.rs` at the workspace root).

use std::collections::BTreeMap;
use std::io::BufWriter;

use super::*;
use crate::msg::{to_cdr, JointTrajectoryPoint, RosMessage, Time, Vector3};

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

fn sampling(fps: u32, tolerance_ms: u64, max_gap_ms: u64) -> Sampling {
    Sampling {
        fps,
        tolerance_ns: tolerance_ms * MS,
        max_gap_ns: max_gap_ms * MS,
    }
}

fn every(start_ms: u64, step_ms: u64, n: usize) -> Vec<u64> {
    (0..n as u64)
        .map(|i| (start_ms + i * step_ms) * MS)
        .collect()
}

#[test]
fn ticks_take_each_topics_latest_message_from_when_all_have_one() {
    let a = every(0, 100, 11); // 0..=1000 ms, 10 Hz
    let b = every(250, 20, 30); // 250..=830 ms, 50 Hz
                                // The interval ends with the last message of any topic (a's, at 1000 ms).
    let e = sample(&[&a, &b], (0, 1000 * MS), sampling(10, 200, 1000))
        .expect("no gap")
        .expect("ticks");
    assert_eq!(e.start, 250 * MS, "starts when both topics have a message");
    let times: Vec<u64> = e.ticks.iter().map(|(t, _)| t / MS).collect();
    assert_eq!(times, [250, 350, 450, 550, 650, 750, 850, 950]);
    // At 350 ms: a's message at 300 ms (index 3), b's at 350 ms (index 5).
    assert_eq!(e.ticks[1].1, [3, 5]);
    // At 950 ms b's latest (830 ms) is 120 ms old, within 200 ms.
    assert_eq!(e.ticks[7].1, [9, 29]);
    assert_eq!((e.dropped, e.stale), (0, vec![0, 0]));
}

#[test]
fn stale_ticks_are_dropped_and_counted_per_topic() {
    let a = every(0, 100, 21); // 0..=2 s
                               // b: every 50 ms, but silent from 600 ms to 1 s (a 400 ms gap, under the 500 ms limit).
    let b: Vec<u64> = every(0, 50, 41)
        .into_iter()
        .filter(|&t| !(600 * MS < t && t < 1000 * MS))
        .collect();
    let e = sample(&[&a, &b], (0, 2 * S), sampling(10, 150, 500))
        .expect("no gap")
        .expect("ticks");
    // b's latest at 800 ms and 900 ms is from 600 ms: 200 and 300 ms old > 150 ms.
    // (at 700 ms it is 100 ms old: kept)
    assert_eq!(e.stale, [0, 2]);
    assert_eq!(e.dropped, 2);
    assert_eq!(e.ticks.len(), 21 - 2);
    assert!(e
        .ticks
        .iter()
        .all(|(t, _)| *t != 800 * MS && *t != 900 * MS));
}

#[test]
fn a_silence_longer_than_max_gap_inside_the_episode_is_an_error() {
    let a = every(0, 100, 31); // 0..=3 s
    let b: Vec<u64> = every(0, 100, 31)
        .into_iter()
        .filter(|&t| !(1000 * MS < t && t < 2500 * MS))
        .collect();
    let gap = sample(&[&a, &b], (0, 3 * S), sampling(10, 200, 1000)).expect_err("gap");
    assert_eq!(
        gap,
        Gap {
            topic: 1,
            from: S,
            to: 2500 * MS,
            to_end: false
        }
    );
    // The same silence outside the episode does not count …
    assert!(sample(&[&a, &b], (2500 * MS, 3 * S), sampling(10, 200, 1000)).is_ok());
    // … and only its part inside the episode does: 1.0 → 2.5 s seen from 1.8 s is 0.7 s.
    assert!(sample(&[&a, &b], (1800 * MS, 3 * S), sampling(10, 200, 1000)).is_ok());
    // A topic that stops early: silent to the end of the episode.
    let short = every(0, 100, 10); // 0..=0.9 s
    let gap = sample(&[&a, &short], (0, 3 * S), sampling(10, 200, 1000)).expect_err("tail");
    assert_eq!(
        gap,
        Gap {
            topic: 1,
            from: 900 * MS,
            to: 3 * S,
            to_end: true
        }
    );
}

#[test]
fn an_interval_before_every_topic_has_spoken_has_no_ticks() {
    let a = every(1000, 100, 5);
    let b = every(0, 100, 20);
    assert_eq!(
        sample(&[&a, &b], (0, 500 * MS), sampling(10, 200, 1000)),
        Ok(None)
    );
    let empty: Vec<u64> = Vec::new();
    assert_eq!(
        sample(&[&a, &empty], (0, 5 * S), sampling(10, 200, 1000)),
        Ok(None)
    );
}

#[test]
fn ticks_do_not_drift_at_rates_that_do_not_divide_a_second() {
    let a = every(0, 1, 3001); // 1 kHz for 3 s
    let e = sample(&[&a], (0, 3 * S), sampling(30, 10, 1000))
        .expect("no gap")
        .expect("ticks");
    assert_eq!(e.ticks.len(), 91);
    assert_eq!(e.ticks[90].0, 3 * S);
    assert_eq!(e.ticks[1].0, 33_333_333);
}

#[test]
fn markers_make_episodes() {
    use Marker::*;
    let m = |v: &[(u64, Marker)]| marker_episodes(v, 100);
    assert_eq!(m(&[]), (vec![], 0));
    assert_eq!(m(&[(10, Start), (20, Stop)]), (vec![(10, 20)], 0));
    assert_eq!(
        m(&[(10, Start), (20, Discard), (30, Start), (40, Stop)]),
        (vec![(30, 40)], 0)
    );
    assert_eq!(
        m(&[
            (5, Stop),
            (10, Start),
            (20, Start),
            (30, Stop),
            (35, Discard)
        ]),
        (vec![(10, 20), (20, 30)], 2)
    );
    assert_eq!(m(&[(90, Start)]), (vec![(90, 100)], 0), "open at the end");
    assert_eq!(Marker::parse(" START\n"), Some(Start));
    assert_eq!(Marker::parse("go"), None);
}

#[test]
fn message_types_come_from_ros1_and_ros2_schema_names() {
    assert_eq!(Kind::of("sensor_msgs/msg/Image"), Some(Kind::Image));
    assert_eq!(Kind::of("sensor_msgs/Image"), Some(Kind::Image));
    assert_eq!(
        Kind::of("std_msgs/msg/Float64MultiArray"),
        Some(Kind::Float64MultiArray)
    );
    assert_eq!(Kind::of("sensor_msgs/msg/PointCloud2"), None);
    assert_eq!(Kind::of("sensor_msgs/srv/Image"), None);
    assert_eq!(Kind::of(""), None);
}

#[test]
fn cdr_payloads_of_either_byte_order_decode() {
    let v = Vector3 {
        x: 1.5,
        y: -2.0,
        z: 0.25,
    };
    let mut le = vec![0, 1, 0, 0];
    le.extend(to_cdr(&v).expect("cdr"));
    assert_eq!(decode_cdr::<Vector3>(&le), Ok(v));
    let mut be = vec![0, 0, 0, 0];
    for f in [1.5f64, -2.0, 0.25] {
        be.extend(f.to_be_bytes());
    }
    assert_eq!(decode_cdr::<Vector3>(&be), Ok(v));
    let err = decode_cdr::<Vector3>(&[0, 7, 0, 0, 1]).expect_err("XCDR2");
    assert!(err.contains("0x0007"), "{err}");
    assert!(decode_cdr::<Vector3>(&[0, 1]).is_err());
    assert!(decode_cdr::<Vector3>(&le[..10]).is_err(), "truncated");
}

// ---------------------------------------------------------------------------------------
// Whole bags, written with the mcap crate.

struct Bag {
    path: PathBuf,
    w: mcap::Writer<BufWriter<File>>,
    channels: BTreeMap<String, u16>,
}

impl Bag {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "vla-mcap-import-{name}-{}.mcap",
            std::process::id()
        ));
        let file = File::create(&path).expect("create bag");
        let w = mcap::WriteOptions::new()
            .profile("ros2")
            .chunk_size(Some(4096))
            .create(BufWriter::new(file))
            .expect("mcap writer");
        Bag {
            path,
            w,
            channels: BTreeMap::new(),
        }
    }

    fn channel(&mut self, topic: &str, schema: &str) -> u16 {
        if let Some(&id) = self.channels.get(topic) {
            return id;
        }
        let schema = self.w.add_schema(schema, "ros2msg", b"").expect("schema");
        let id = self
            .w
            .add_channel(schema, topic, "cdr", &BTreeMap::new())
            .expect("channel");
        self.channels.insert(topic.to_string(), id);
        id
    }

    fn put<M: RosMessage>(&mut self, topic: &str, log_ms: u64, msg: &M) {
        let id = self.channel(topic, &M::ros_type());
        let mut data = vec![0, 1, 0, 0];
        data.extend(to_cdr(msg).expect("cdr"));
        self.w
            .write_to_known_channel(
                &mcap::records::MessageHeader {
                    channel_id: id,
                    sequence: 0,
                    log_time: 1_700_000_000 * S + log_ms * MS,
                    publish_time: 1_700_000_000 * S + log_ms * MS,
                },
                &data,
            )
            .expect("message");
    }

    /// Write the summary and footer; the file is complete when this returns.
    fn finish(mut self) -> PathBuf {
        self.w.finish().expect("finish");
        self.path
    }
}

fn header(ms: u64) -> Header {
    let t = 1_700_000_000 * S + ms * MS;
    Header {
        stamp: Time::from_nanos(u128::from(t)),
        frame_id: String::new(),
    }
}

/// A 4×3 rgb8 image whose pixels say which message it is.
fn image(ms: u64, n: u8, width: u32, encoding: &str) -> Image {
    let channels = if encoding == "rgb8" { 3 } else { 2 };
    Image {
        header: header(ms),
        height: 3,
        width,
        encoding: encoding.into(),
        is_bigendian: 0,
        step: width * channels,
        data: (0..width * 3 * channels)
            .map(|i| n.wrapping_add(i as u8))
            .collect(),
    }
}

fn joints(ms: u64, value: f64, names: &[&str]) -> JointState {
    JointState {
        header: header(ms),
        name: names.iter().map(|s| s.to_string()).collect(),
        position: names
            .iter()
            .enumerate()
            .map(|(i, _)| value + i as f64)
            .collect(),
        velocity: vec![],
        effort: vec![],
    }
}

fn twist(ms: u64, value: f64) -> TwistStamped {
    TwistStamped {
        header: header(ms),
        twist: Twist {
            linear: Vector3::from_array([value, 0.0, -value]),
            angular: Vector3::from_array([0.0, 0.5, value]),
        },
    }
}

fn options() -> ImportOptions {
    ImportOptions {
        cameras: vec![("front".into(), "/cam".into())],
        state_topic: "/joint_states".into(),
        action_topic: "/cmd".into(),
        episode_topic: None,
        fps: 10,
        tolerance_s: 0.2,
        max_gap_s: 1.0,
    }
}

/// Camera at 10 Hz from 0 ms, joints at 50 Hz from 30 ms, twists at 20 Hz from 5 ms, for 1 s.
fn write_regular(bag: &mut Bag, image_at: impl Fn(u64, u8) -> Image) {
    let mut events: Vec<(u64, u8)> = Vec::new();
    events.extend((0..10).map(|i| (i * 100, 0)));
    events.extend((0..49).map(|i| (30 + i * 20, 1)));
    events.extend((0..20).map(|i| (5 + i * 50, 2)));
    events.sort();
    for (n, (ms, what)) in events.into_iter().enumerate() {
        match what {
            0 => bag.put("/cam", ms, &image_at(ms, n as u8)),
            1 => bag.put("/joint_states", ms, &joints(ms, ms as f64, &["a", "b"])),
            _ => bag.put("/cmd", ms, &twist(ms, ms as f64 / 1000.0)),
        }
    }
}

#[test]
fn a_bag_is_planned_and_replayed_frame_by_frame() {
    let mut bag = Bag::new("regular");
    write_regular(&mut bag, |ms, n| image(ms, n, 4, "rgb8"));
    bag.put("/unrelated", 10, &StringMsg { data: "x".into() });
    let path = bag.finish();
    let plan = plan_bag(&path, &options()).expect("plan");
    assert_eq!(plan.state_names(), ["a", "b"]);
    assert_eq!(plan.action_names()[0], "linear.x");
    assert_eq!(plan.episodes().len(), 1);
    // Ticks from 30 ms (all three have spoken) to 990 ms (the last joint state).
    assert_eq!(plan.frames(), 10);
    assert_eq!(plan.dropped_ticks(), 0);
    let mut got = Vec::new();
    plan.replay(|f| {
        let (name, img) = f.images[0];
        assert_eq!(name, "front");
        assert_eq!(img.dimensions(), (4, 3));
        got.push((
            f.frame,
            f.time,
            img.get_pixel(0, 0)[0],
            f.state[0],
            f.action[0],
        ));
        assert_eq!(f.last_of_episode, f.frame == 9);
        Ok(())
    })
    .expect("replay");
    assert_eq!(got.len(), 10);
    let base = 1_700_000_000 * S;
    // Frame 2 at 230 ms: camera 200 ms, joints 230 ms, twist 205 ms.
    let (frame, time, _, state, action) = got[2];
    assert_eq!((frame, time - base), (2, 230 * MS));
    assert_eq!(state, 230.0);
    assert_eq!(action, 0.205);
    // Images arrive in replay as their pixels were written (n is the message's global
    // position, the same in both passes).
    let firsts: Vec<u8> = got.iter().map(|g| g.2).collect();
    assert!(firsts.windows(2).all(|w| w[0] < w[1]), "{firsts:?}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_missing_topic_is_named_with_the_topics_the_bag_has() {
    let mut bag = Bag::new("missing");
    write_regular(&mut bag, |ms, n| image(ms, n, 4, "rgb8"));
    let path = bag.finish();
    let opts = ImportOptions {
        action_topic: "/servo_node/delta_twist_cmds".into(),
        ..options()
    };
    let err = plan_bag(&path, &opts)
        .err()
        .expect("missing topic")
        .to_string();
    for word in [
        "/servo_node/delta_twist_cmds (--action",
        "/cam (sensor_msgs/msg/Image)",
        "/joint_states (sensor_msgs/msg/JointState)",
        "/cmd (geometry_msgs/msg/TwistStamped)",
        path.to_str().expect("utf-8"),
    ] {
        assert!(err.contains(word), "{word:?} not in {err}");
    }
    let _ = std::fs::remove_file(path);
}

#[test]
fn bad_camera_messages_are_errors_naming_topic_and_message() {
    // An encoding we do not read.
    let mut bag = Bag::new("encoding");
    write_regular(&mut bag, |ms, n| image(ms, n, 4, "16UC1"));
    let path = bag.finish();
    let err = plan_bag(&path, &options())
        .err()
        .expect("encoding")
        .to_string();
    assert!(err.contains("topic /cam") && err.contains("16UC1"), "{err}");
    let _ = std::fs::remove_file(path);

    // A size change in the middle.
    let mut bag = Bag::new("size");
    write_regular(&mut bag, |ms, n| {
        image(ms, n, if ms < 500 { 4 } else { 5 }, "rgb8")
    });
    let path = bag.finish();
    let err = plan_bag(&path, &options()).err().expect("size").to_string();
    for word in [
        "topic /cam",
        "4x3 to 5x3",
        "frame 5 of episode 0",
        "message 6",
    ] {
        assert!(err.contains(word), "{word:?} not in {err}");
    }
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_compressed_image_changing_size_is_found_while_replaying() {
    let png = |w: u32, n: u8| {
        let img = RgbImage::from_pixel(w, 2, image::Rgb([n, 0, 0]));
        let mut bytes = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .expect("png");
        bytes
    };
    let mut bag = Bag::new("png");
    for i in 0..10u64 {
        let ms = i * 100;
        let msg = CompressedImage {
            header: header(ms),
            format: "png".into(),
            data: png(if i < 7 { 3 } else { 6 }, i as u8),
        };
        bag.put("/cam", ms, &msg);
        bag.put("/joint_states", ms, &joints(ms, 1.0, &["a"]));
        bag.put("/cmd", ms, &twist(ms, 0.1));
    }
    let path = bag.finish();
    let plan = plan_bag(&path, &options()).expect("sizes of PNGs are not read in pass 1");
    let mut frames = 0;
    let err = plan
        .replay(|f| {
            assert_eq!(f.images[0].1.get_pixel(0, 0)[0], f.frame as u8);
            frames += 1;
            Ok(())
        })
        .expect_err("size change")
        .to_string();
    assert_eq!(frames, 7, "the frames before the change were handed out");
    assert!(
        err.contains("3x2 to 6x2") && err.contains("frame 7"),
        "{err}"
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn clock_jumps_gaps_and_changing_names_are_errors() {
    // Log time jumping back on one topic.
    let mut bag = Bag::new("back");
    for ms in [0u64, 100, 200, 150, 300] {
        bag.put("/joint_states", ms, &joints(ms, 0.0, &["a"]));
    }
    let path = bag.finish();
    let opts = ImportOptions {
        cameras: vec![("front".into(), "/cam".into())],
        ..options()
    };
    let err = plan_bag(&path, &opts).err().expect("back").to_string();
    assert!(
        err.contains("topic /joint_states") && err.contains("log time jumps back by 0.050 s"),
        "{err}"
    );
    let _ = std::fs::remove_file(path);

    // A header stamp jumping back while the log time goes on.
    let mut bag = Bag::new("stamp");
    for (i, ms) in [0u64, 100, 200, 300].into_iter().enumerate() {
        let stamp_ms = if i == 2 { 50 } else { ms };
        bag.put("/joint_states", ms, &joints(stamp_ms, 0.0, &["a"]));
    }
    let path = bag.finish();
    let err = plan_bag(&path, &opts).err().expect("stamp").to_string();
    assert!(
        err.contains("header stamp jumps back") && err.contains("message 3"),
        "{err}"
    );
    let _ = std::fs::remove_file(path);

    // Joint names that change.
    let mut bag = Bag::new("names");
    bag.put("/joint_states", 0, &joints(0, 0.0, &["a", "b"]));
    bag.put("/joint_states", 10, &joints(10, 0.0, &["a", "c"]));
    let path = bag.finish();
    let err = plan_bag(&path, &opts).err().expect("names").to_string();
    assert!(err.contains("[a, b] to [a, c]"), "{err}");
    let _ = std::fs::remove_file(path);

    // The camera silent for 1.5 s.
    let mut bag = Bag::new("gap");
    write_regular(&mut bag, |ms, n| image(ms, n, 4, "rgb8"));
    for ms in [1000u64, 1100, 2500, 2600] {
        bag.put("/cam", ms, &image(ms, 0, 4, "rgb8"));
    }
    for ms in (1000..2700).step_by(20) {
        bag.put("/joint_states", ms, &joints(ms, 0.0, &["a", "b"]));
        bag.put("/cmd", ms, &twist(ms, 0.0));
    }
    let path = bag.finish();
    let err = plan_bag(&path, &opts).err().expect("gap").to_string();
    assert!(
        err.contains("topic /cam") && err.contains("no message for 1.400 s"),
        "{err}"
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_topic_of_the_wrong_type_for_its_flag_is_refused() {
    let mut bag = Bag::new("type");
    write_regular(&mut bag, |ms, n| image(ms, n, 4, "rgb8"));
    let path = bag.finish();
    let opts = ImportOptions {
        state_topic: "/cam".into(),
        cameras: vec![("front".into(), "/joint_states".into())],
        ..options()
    };
    // /cam speaks first (at 0 ms).
    let err = plan_bag(&path, &opts).err().expect("type").to_string();
    assert!(
        err.contains("topic /cam: has type sensor_msgs/msg/Image, which cannot be read"),
        "{err}"
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn markers_split_a_bag_and_trajectories_and_arrays_are_actions() {
    let mut bag = Bag::new("markers");
    let traj = |ms: u64| JointTrajectory {
        header: header(ms),
        joint_names: vec!["j1".into(), "j2".into()],
        points: vec![JointTrajectoryPoint {
            positions: vec![ms as f64, 1.0],
            ..Default::default()
        }],
    };
    for ms in (0..3000).step_by(50) {
        bag.put("/cam", ms, &image(ms, 0, 4, "rgb8"));
        bag.put("/joint_states", ms, &joints(ms, 0.0, &["a"]));
        bag.put("/traj", ms, &traj(ms));
        let marker = match ms {
            500 => Some("start"),
            1000 => Some("stop"),
            1200 => Some("start"),
            1500 => Some("discard"),
            2000 => Some("start"),
            2600 => Some("stop"),
            2700 => Some("stop"),
            _ => None,
        };
        if let Some(m) = marker {
            bag.put("/vla/episode", ms, &StringMsg { data: m.into() });
        }
    }
    let path = bag.finish();
    let opts = ImportOptions {
        action_topic: "/traj".into(),
        episode_topic: Some("/vla/episode".into()),
        ..options()
    };
    let plan = plan_bag(&path, &opts).expect("plan");
    let lengths: Vec<usize> = plan.episodes().iter().map(|e| e.ticks.len()).collect();
    assert_eq!(
        lengths,
        [6, 7],
        "500..=1000 ms and 2000..=2600 ms at 10 fps"
    );
    assert_eq!(plan.ignored_markers(), 1);
    assert_eq!(plan.action_names(), ["j1", "j2"]);
    let mut first_actions = Vec::new();
    plan.replay(|f| {
        if f.frame == 0 {
            first_actions.push(f.action[0]);
        }
        Ok(())
    })
    .expect("replay");
    assert_eq!(first_actions, [500.0, 2000.0]);
    let _ = std::fs::remove_file(path);

    // A marker we do not know.
    let mut bag = Bag::new("marker-word");
    bag.put(
        "/vla/episode",
        0,
        &StringMsg {
            data: "pause".into(),
        },
    );
    let path = bag.finish();
    let err = plan_bag(&path, &opts).err().expect("marker").to_string();
    assert!(
        err.contains("\"pause\"") && err.contains("/vla/episode"),
        "{err}"
    );
    let _ = std::fs::remove_file(path);

    // Float64MultiArray as the action.
    let mut bag = Bag::new("array");
    for ms in (0..1000).step_by(50) {
        bag.put("/cam", ms, &image(ms, 0, 4, "rgb8"));
        bag.put("/joint_states", ms, &joints(ms, 0.0, &["a"]));
        let data = vec![ms as f64, -1.0, 2.0];
        bag.put(
            "/arr",
            ms,
            &Float64MultiArray {
                data,
                ..Default::default()
            },
        );
    }
    let path = bag.finish();
    let opts = ImportOptions {
        action_topic: "/arr".into(),
        ..options()
    };
    let plan = plan_bag(&path, &opts).expect("plan");
    assert_eq!(plan.action_names(), ["data_0", "data_1", "data_2"]);
    assert_eq!(plan.frames(), 10);
    let _ = std::fs::remove_file(path);
}

#[test]
fn options_are_checked_naming_the_flag() {
    fn check(change: impl Fn(&mut ImportOptions), word: &str) {
        let mut o = options();
        change(&mut o);
        let err = o.validate().expect_err(word).to_string();
        assert!(err.contains(word), "{word:?} not in {err}");
    }
    check(|o| o.fps = 0, "--fps");
    check(|o| o.tolerance_s = f64::NAN, "--tolerance");
    check(|o| o.max_gap_s = 0.0, "--max-gap");
    check(|o| o.cameras.clear(), "--camera");
    check(|o| o.cameras[0].0 = "a b".into(), "--camera a b=/cam");
    check(
        |o| o.cameras.push(("front".into(), "/other".into())),
        "given twice",
    );
    check(
        |o| o.action_topic = "/cam".into(),
        "--camera front=/cam and --action /cam",
    );
    assert!(options().validate().is_ok());
}
