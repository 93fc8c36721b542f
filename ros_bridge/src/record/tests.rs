use std::time::{Duration, Instant};

use vla_core::RgbImage;
use vla_kinematics::RobotDescription;

use super::*;
use crate::image::encode_raw;
use crate::msg::{Header, JointTrajectoryPoint, Twist, Vector3};
use crate::sim_node::home_joint_state;
use crate::transport::memory::MemoryBus;
use crate::transport::Publisher;

struct Cell {
    bus: MemoryBus,
    config: BridgeConfig,
    robot: RobotDescription,
    front: Box<dyn Publisher<Image>>,
    wrist: Box<dyn Publisher<Image>>,
    joints: Box<dyn Publisher<JointState>>,
    twist: Box<dyn Publisher<TwistStamped>>,
    gripper: Box<dyn Publisher<Float64MultiArray>>,
    episode: Box<dyn Publisher<StringMsg>>,
    instruction: Box<dyn Publisher<StringMsg>>,
}

fn cell(overrides: &[&str]) -> Cell {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let config = BridgeConfig::load(None, &overrides).expect("config");
    let robot = RobotDescription::default_arm().expect("arm");
    let mut bus = MemoryBus::new();
    let t = &config.topics;
    Cell {
        front: bus
            .publisher(&t.front_image, Qos::sensor_data(1))
            .expect("pub"),
        wrist: bus
            .publisher(&t.wrist_image, Qos::sensor_data(1))
            .expect("pub"),
        joints: bus
            .publisher(&t.joint_states, Qos::sensor_data(1))
            .expect("pub"),
        twist: bus.publisher(&t.twist, Qos::reliable(1)).expect("pub"),
        gripper: bus.publisher(&t.gripper, Qos::reliable(1)).expect("pub"),
        episode: bus.publisher(&t.episode, Qos::reliable(1)).expect("pub"),
        instruction: bus.publisher(&t.instruction, Qos::latched(1)).expect("pub"),
        bus,
        config,
        robot,
    }
}

impl Cell {
    fn recorder(&mut self, task: Option<&str>) -> Recorder {
        Recorder::new(
            &mut self.bus,
            &self.config,
            &self.robot,
            task.map(String::from),
        )
        .expect("recorder")
    }

    fn say(&self, text: &str) {
        self.instruction
            .publish(StringMsg { data: text.into() })
            .expect("instruction");
    }

    fn mark(&self, word: &str) {
        self.episode
            .publish(StringMsg { data: word.into() })
            .expect("marker");
    }

    /// One round of data: both cameras (`w`×6 pixels), the home joints and a twist.
    fn publish_data(&self, w: u32, linear_x: f64) {
        let img = RgbImage::from_pixel(w, 6, image::Rgb([10, 20, 30]));
        self.front
            .publish(encode_raw(&img, Header::default()))
            .expect("front");
        self.wrist
            .publish(encode_raw(&img, Header::default()))
            .expect("wrist");
        self.joints
            .publish(home_joint_state(&self.robot).expect("home"))
            .expect("joints");
        self.twist
            .publish(TwistStamped {
                header: Header::default(),
                twist: Twist {
                    linear: Vector3 {
                        x: linear_x,
                        y: 0.0,
                        z: -0.1,
                    },
                    angular: Vector3 {
                        x: 0.0,
                        y: 0.0,
                        z: 0.5,
                    },
                },
            })
            .expect("twist");
    }
}

fn frames(events: &[RecordEvent]) -> Vec<&RecordedFrame> {
    events
        .iter()
        .filter_map(|e| match e {
            RecordEvent::Frame(f) => Some(f),
            _ => None,
        })
        .collect()
}

#[test]
fn a_marked_episode_is_sampled_in_the_policy_layout_and_saved_with_its_instruction() {
    let mut c = cell(&[]);
    let mut rec = c.recorder(None);
    c.say("pick up the red cube");
    c.publish_data(8, 0.2);
    // Nothing is recorded before a start marker.
    let events = rec.tick(Instant::now()).expect("tick");
    assert!(events.is_empty(), "{events:?}");
    c.mark("start");
    c.gripper
        .publish(Float64MultiArray {
            data: vec![0.0],
            ..Default::default()
        })
        .expect("gripper");
    let events = rec.tick(Instant::now()).expect("tick");
    assert!(matches!(events[0], RecordEvent::Started), "{events:?}");
    let f = frames(&events);
    assert_eq!(f.len(), 1);
    let f = f[0];
    assert_eq!(f.images.len(), 2);
    assert_eq!(f.images[0].0, "front");
    assert_eq!(f.images[0].1.dimensions(), (8, 6));
    // State: joints, opening, tool pose at home (0.45, 0, 0.25).
    assert_eq!(f.state.len(), vla_core::STATE_DIM);
    let home = home_joint_state(&c.robot).expect("home");
    for i in 0..6 {
        assert!((f.state[i] - home.position[i] as f32).abs() < 1e-6);
    }
    assert!((f.state[6] - 2.0 * home.position[6] as f32).abs() < 1e-6);
    for (got, want) in f.state[7..10].iter().zip([0.45, 0.0, 0.25]) {
        assert!((got - want).abs() < 1e-3, "tool at {:?}", &f.state[7..10]);
    }
    // Action: the twist over one control period (0.1 s), then the closure of a closed gripper.
    let want = [0.02, 0.0, -0.01, 0.0, 0.0, 0.05, 1.0];
    for (got, want) in f.action.iter().zip(want) {
        assert!((got - want).abs() < 1e-6, "action {:?}", f.action);
    }
    // One second later every data topic is stale: the tick is dropped and counted.
    let events = rec
        .tick(Instant::now() + Duration::from_secs(1))
        .expect("tick");
    match &events[..] {
        [RecordEvent::Dropped(stale)] => assert_eq!(stale.len(), 4, "{stale:?}"),
        other => panic!("expected one dropped tick, got {other:?}"),
    }
    c.mark("stop");
    let events = rec.tick(Instant::now()).expect("tick");
    match &events[..] {
        [RecordEvent::Saved { task, frames }] => {
            assert_eq!(task, "pick up the red cube");
            assert_eq!(*frames, 1);
        }
        other => panic!("expected the episode saved, got {other:?}"),
    }
    let s = rec.stats();
    assert_eq!((s.episodes_saved, s.frames, s.dropped_ticks), (1, 1, 1));
    assert_eq!(s.stale["/joint_states"], 1);
    assert_eq!(
        rec.feature_names().expect("names").action,
        vla_core::action::ACTION_NAMES.map(String::from).to_vec()
    );
}

#[test]
fn markers_follow_the_rules_of_a_bag() {
    let mut c = cell(&[]);
    let mut rec = c.recorder(Some("sort the blocks"));
    // Outside an episode, stop and discard are ignored (counted); so is an unknown word.
    c.mark("stop");
    c.mark("discard");
    c.mark("pause");
    assert!(rec.tick(Instant::now()).expect("tick").is_empty());
    assert_eq!(rec.stats().ignored_markers, 3);
    c.publish_data(8, 0.0);
    c.mark("start");
    assert_eq!(frames(&rec.tick(Instant::now()).expect("tick")).len(), 1);
    // A start while one is in progress keeps that one and starts the next.
    c.mark("start");
    let events = rec.tick(Instant::now()).expect("tick");
    assert!(matches!(
        &events[..],
        [
            RecordEvent::Saved { frames: 1, .. },
            RecordEvent::Started,
            RecordEvent::Frame(_)
        ]
    ));
    c.mark("discard");
    let events = rec.tick(Instant::now()).expect("tick");
    assert!(matches!(
        &events[..],
        [RecordEvent::Discarded { frames: 1 }]
    ));
    // An episode without a frame is not saved.
    c.mark("start");
    c.mark("stop");
    let events = rec.tick(Instant::now()).expect("tick");
    assert!(matches!(&events[..], [RecordEvent::Started]), "{events:?}");
    assert_eq!(rec.stats().episodes_empty, 1);
    // Quitting drops the episode in progress.
    c.mark("start");
    rec.tick(Instant::now()).expect("tick");
    rec.controls().send(Control::Quit).expect("send");
    let events = rec.tick(Instant::now()).expect("tick");
    assert!(
        matches!(
            &events[..],
            [RecordEvent::Discarded { frames: 1 }, RecordEvent::Quit]
        ),
        "{events:?}"
    );
    let s = rec.stats();
    assert_eq!((s.episodes_saved, s.episodes_discarded), (1, 2));
}

#[test]
fn an_episode_without_a_task_is_not_saved() {
    let mut c = cell(&[]);
    let mut rec = c.recorder(None);
    c.publish_data(8, 0.0);
    c.mark("start");
    rec.tick(Instant::now()).expect("tick");
    c.mark("stop");
    let events = rec.tick(Instant::now()).expect("tick");
    assert!(matches!(
        &events[..],
        [RecordEvent::Discarded { frames: 1 }]
    ));
}

/// A node that clears the instruction when its run is over may be heard before the last
/// `stop` (two topics, no order between them): the episode keeps the instruction it ran under.
#[test]
fn an_instruction_cleared_before_the_stop_stays_the_episodes_task() {
    let mut c = cell(&[]);
    let mut rec = c.recorder(None);
    c.say("pick up the red cube");
    c.publish_data(8, 0.0);
    c.mark("start");
    rec.tick(Instant::now()).expect("tick");
    c.say("");
    c.mark("stop");
    let events = rec.tick(Instant::now()).expect("tick");
    assert!(
        matches!(&events[..], [RecordEvent::Saved { task, frames: 1 }] if task == "pick up the red cube"),
        "{events:?}"
    );
    // The next episode has no instruction in force: not saved.
    c.mark("start");
    rec.tick(Instant::now()).expect("tick");
    c.mark("stop");
    let events = rec.tick(Instant::now()).expect("tick");
    assert!(
        matches!(&events[..], [RecordEvent::Discarded { frames: 1 }]),
        "{events:?}"
    );
}

#[test]
fn an_image_size_change_is_an_error_naming_the_topic() {
    let mut c = cell(&[]);
    let mut rec = c.recorder(Some("t"));
    c.publish_data(8, 0.0);
    c.mark("start");
    rec.tick(Instant::now()).expect("tick");
    c.publish_data(10, 0.0);
    let e = rec.tick(Instant::now()).expect_err("size change");
    let s = e.to_string();
    assert!(
        s.contains("/camera/front/image_raw") && s.contains("8x6") && s.contains("10x6"),
        "{s}"
    );
}

#[test]
fn joint_states_without_the_arm_are_skipped_and_counted() {
    let mut c = cell(&[]);
    let mut rec = c.recorder(Some("t"));
    c.publish_data(8, 0.0);
    c.joints
        .publish(JointState {
            name: vec!["elbow".into()],
            position: vec![0.1],
            ..Default::default()
        })
        .expect("joints");
    c.mark("start");
    let events = rec.tick(Instant::now()).expect("tick");
    assert!(
        matches!(&events[..], [RecordEvent::Started, RecordEvent::Dropped(t)] if t == &["/joint_states".to_string()]),
        "{events:?}"
    );
    assert_eq!(rec.stats().rejected["/joint_states"], 1);
}

#[test]
fn a_joint_target_is_recorded_as_the_tool_move_it_asks_for() {
    let mut c = cell(&["record.command=joint_trajectory"]);
    let mut rec = c.recorder(Some("t"));
    c.publish_data(8, 0.0);
    let home = home_joint_state(&c.robot).expect("home");
    let traj: Box<dyn Publisher<JointTrajectory>> = c
        .bus
        .publisher(&c.config.topics.joint_trajectory, Qos::reliable(1))
        .expect("pub");
    let dof = c.robot.chain.dof();
    let target = |q: Vec<f64>| JointTrajectory {
        joint_names: home.name[..dof].to_vec(),
        points: vec![JointTrajectoryPoint {
            positions: q,
            ..Default::default()
        }],
        ..Default::default()
    };
    traj.publish(target(home.position[..dof].to_vec()))
        .expect("traj");
    c.mark("start");
    let events = rec.tick(Instant::now()).expect("tick");
    let f = frames(&events)[0];
    // Holding still: no tool move.
    assert!(
        f.action[..6].iter().all(|v| v.abs() < 1e-9),
        "{:?}",
        f.action
    );
    // A move of the base joint turns the tool about z.
    let mut q = home.position[..dof].to_vec();
    q[0] += 0.1;
    traj.publish(target(q)).expect("traj");
    let events = rec.tick(Instant::now()).expect("tick");
    let f = frames(&events)[0];
    assert!((f.action[5] - 0.1).abs() < 1e-5, "{:?}", f.action);
    assert!(
        f.action[1] > 0.01,
        "the tool swings towards +y: {:?}",
        f.action
    );
}

#[test]
fn the_raw_layout_keeps_the_messages_numbers_and_names() {
    let mut c = cell(&["record.layout=raw"]);
    let mut rec = c.recorder(Some("t"));
    c.publish_data(8, 0.3);
    c.mark("start");
    let events = rec.tick(Instant::now()).expect("tick");
    let f = frames(&events)[0];
    let home = home_joint_state(&c.robot).expect("home");
    assert_eq!(f.state.len(), home.position.len());
    assert_eq!(f.action, vec![0.3, 0.0, -0.1, 0.0, 0.0, 0.5, 0.0]);
    let names = rec.feature_names().expect("names");
    assert_eq!(names.state, home.name);
    assert_eq!(names.action[0], "linear.x");
    assert_eq!(names.action[6], "gripper");
}

#[test]
fn config_errors_name_the_field() {
    for (set, field) in [
        ("record.fps=0", "record.fps"),
        ("record.tolerance_s=-1", "record.tolerance_s"),
        ("record.cameras=[\"front\"]", "record.cameras"),
        ("record.cameras=[]", "record.cameras"),
        ("record.cameras=[\"a=/x\", \"a=/y\"]", "record.cameras"),
        ("record.cameras=[\"a=x\"]", "record.cameras entry a"),
        ("topics.episode=episode", "topics.episode"),
    ] {
        let e = BridgeConfig::load(None, &[set.into()]).expect_err(set);
        assert!(e.to_string().contains(field), "{set}: {e}");
    }
}

#[test]
fn keys_map_to_controls() {
    assert_eq!(
        Control::from_key("s\n"),
        Some(Control::Marker(Marker::Start))
    );
    assert_eq!(
        Control::from_key(" stop"),
        Some(Control::Marker(Marker::Stop))
    );
    assert_eq!(
        Control::from_key("D"),
        Some(Control::Marker(Marker::Discard))
    );
    assert_eq!(Control::from_key("q"), Some(Control::Quit));
    assert_eq!(Control::from_key("x"), None);
}
