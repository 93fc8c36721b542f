//! Node logic on the in-process bus: freshest frames, reset on instruction change, holds,
//! malformed input counted, watchdog, latched emergency stop, sub-tasks published on change.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::msg::{Float64MultiArray, TwistStamped};
use crate::transport::memory::MemoryBus;

#[derive(Default)]
struct Seen {
    resets: usize,
    observations: Vec<(u8, String, (u32, u32))>,
}

/// Always asks for +1 cm in x per step and a closed gripper.
struct Scripted(Arc<Mutex<Seen>>);

impl ActionSource for Scripted {
    fn image_size(&self) -> u32 {
        32
    }
    fn reset(&mut self) {
        if let Ok(mut s) = self.0.lock() {
            s.resets += 1;
        }
    }
    fn act(&mut self, obs: &Observation) -> anyhow::Result<PolicyOutput> {
        if let Ok(mut s) = self.0.lock() {
            s.observations.push((
                obs.front.get_pixel(0, 0).0[0],
                obs.instruction.clone(),
                obs.front.dimensions(),
            ));
        }
        Ok(PolicyOutput {
            action: Action::new([0.01, 0.0, 0.0], [0.0; 3], 1.0),
            tokens: vec![1, 2, 3, 4, 5, 6, 7],
            subtask: None,
        })
    }
}

/// Acts like [`Scripted`] and says the next sub-task of a script (then none).
struct Planner(VecDeque<&'static str>);

impl ActionSource for Planner {
    fn reset(&mut self) {}
    fn act(&mut self, _obs: &Observation) -> anyhow::Result<PolicyOutput> {
        Ok(PolicyOutput {
            action: Action::new([0.01, 0.0, 0.0], [0.0; 3], 1.0),
            tokens: vec![],
            subtask: self.0.pop_front().map(String::from),
        })
    }
}

struct Rig {
    bus: MemoryBus,
    bridge: Bridge,
    seen: Arc<Mutex<Seen>>,
    twists: Arc<Mutex<Vec<TwistStamped>>>,
    grippers: Arc<Mutex<Vec<f64>>>,
    config: BridgeConfig,
}

fn rig(overrides: &[&str]) -> Rig {
    rig_with(overrides, |seen| Box::new(Scripted(seen)))
}

fn rig_with(
    overrides: &[&str],
    source: impl FnOnce(Arc<Mutex<Seen>>) -> Box<dyn ActionSource>,
) -> Rig {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let config = BridgeConfig::load(None, &overrides).expect("config");
    let mut bus = MemoryBus::new();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let bridge = Bridge::new(&mut bus, config.clone(), source(seen.clone())).expect("bridge");
    let twists = Arc::new(Mutex::new(Vec::new()));
    let t = twists.clone();
    bus.subscribe::<TwistStamped>(
        &config.topics.twist,
        Qos::reliable(10),
        Box::new(move |m| {
            if let (Ok(m), Ok(mut v)) = (m, t.lock()) {
                v.push(m);
            }
        }),
    )
    .expect("sub");
    let grippers = Arc::new(Mutex::new(Vec::new()));
    let g = grippers.clone();
    bus.subscribe::<Float64MultiArray>(
        &config.topics.gripper,
        Qos::reliable(10),
        Box::new(move |m| {
            if let (Ok(m), Ok(mut v)) = (m, g.lock()) {
                v.extend(m.data);
            }
        }),
    )
    .expect("sub");
    Rig {
        bus,
        bridge,
        seen,
        twists,
        grippers,
        config,
    }
}

fn image(value: u8) -> Image {
    let img = RgbImage::from_pixel(64, 48, image::Rgb([value, 0, 0]));
    crate::image::encode_raw(&img, Header::now("cam"))
}

impl Rig {
    fn publish<M: crate::msg::RosMessage>(&mut self, topic: &str, qos: Qos, m: M) {
        self.bus
            .publisher::<M>(topic, qos)
            .expect("pub")
            .publish(m)
            .expect("publish");
    }

    fn images(&mut self, value: u8) {
        let t = self.config.topics.clone();
        self.publish(&t.front_image, Qos::sensor_data(2), image(value));
        self.publish(&t.wrist_image, Qos::sensor_data(2), image(value));
    }

    fn instruction(&mut self, s: &str) {
        let t = self.config.topics.instruction.clone();
        self.publish(&t, Qos::latched(1), StringMsg { data: s.into() });
    }

    fn joints(&mut self) {
        let d = vla_sim::RobotDescription::default_arm().expect("arm");
        let target = nalgebra::Isometry3::from_parts(
            nalgebra::Translation3::new(0.45, 0.0, 0.25),
            vla_sim::kinematics::tool_down(0.0),
        );
        let q = d
            .chain
            .inverse(
                &target,
                &[0.0, 0.5, 1.6, 0.0, 1.04, 0.0],
                &Default::default(),
            )
            .expect("ik")
            .joints;
        let mut name: Vec<String> = d.chain.joints.iter().map(|j| j.name.clone()).collect();
        name.push("left_finger_joint".into());
        let mut position = q;
        position.push(0.04);
        let t = self.config.topics.joint_states.clone();
        self.publish(
            &t,
            Qos::sensor_data(5),
            JointState {
                header: Header::now(""),
                name,
                position,
                velocity: vec![],
                effort: vec![],
            },
        );
    }

    fn tick(&mut self) {
        assert!(
            self.bridge.settle(Duration::from_secs(5)),
            "decoders settle"
        );
        self.bridge.tick().expect("tick");
    }

    /// Every string published on the sub-task topic from now on (and the latched one).
    fn subtasks(&mut self) -> Arc<Mutex<Vec<String>>> {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let topic = self.config.topics.subtask.clone();
        self.bus
            .subscribe::<StringMsg>(
                &topic,
                Qos::latched(1),
                Box::new(move |m| {
                    if let (Ok(m), Ok(mut v)) = (m, g.lock()) {
                        v.push(m.data);
                    }
                }),
            )
            .expect("sub");
        got
    }

    fn last_twist(&self) -> [f64; 3] {
        let v = self.twists.lock().expect("lock");
        let t = v.last().expect("a twist was published");
        [t.twist.linear.x, t.twist.linear.y, t.twist.linear.z]
    }
}

#[test]
fn holds_without_instruction_then_acts_on_the_freshest_frames() {
    let mut r = rig(&[]);
    r.joints();
    r.images(10);
    r.tick();
    assert_eq!(r.last_twist(), [0.0; 3], "no instruction: hold");
    r.instruction("pick up the red cube");
    r.images(20);
    r.images(30);
    r.images(40);
    r.tick();
    let v = r.last_twist();
    // 1 cm per 0.1 s period = 0.1 m/s, within the 0.3 m/s limit but acceleration-limited
    // from rest to a·dt = 0.3 m/s: passes unchanged.
    assert!((v[0] - 0.1).abs() < 1e-6, "{v:?}");
    let seen = r.seen.lock().expect("lock");
    assert_eq!(
        seen.observations.last().map(|o| o.0),
        Some(40),
        "freshest frame used"
    );
    assert_eq!(
        seen.observations.last().map(|o| o.2),
        Some((32, 32)),
        "resized"
    );
    assert!(seen.resets >= 1);
    drop(seen);
    assert_eq!(r.grippers.lock().expect("lock").last().copied(), Some(0.0)); // closed
    let s = r.bridge.stats();
    assert_eq!(s.frames_dropped, 4, "{s:?}"); // frames 20 and 30 of each camera, never used
    assert_eq!(s.inferences, 1);
}

#[test]
fn instruction_change_resets_and_empty_instruction_holds() {
    let mut r = rig(&[]);
    r.joints();
    r.instruction("pick up the red cube");
    r.images(1);
    r.tick();
    r.instruction("pick up the blue ball");
    r.images(2);
    r.tick();
    // Resets are handled on the worker before the next act.
    assert_eq!(r.seen.lock().expect("lock").resets, 2);
    r.instruction("");
    r.images(3);
    r.tick();
    assert_eq!(r.last_twist(), [0.0; 3]);
}

#[test]
fn malformed_images_are_dropped_and_counted() {
    let mut r = rig(&[]);
    r.joints();
    r.instruction("pick up the red cube");
    let topic = r.config.topics.front_image.clone();
    let mut bad = image(5);
    bad.encoding = "yuv422".into();
    r.publish(&topic, Qos::sensor_data(2), bad);
    let mut bad = image(5);
    bad.data.truncate(10);
    r.publish(&topic, Qos::sensor_data(2), bad);
    let ctopic = r.config.topics.front_compressed.clone();
    r.publish(
        &ctopic,
        Qos::sensor_data(2),
        CompressedImage {
            header: Header::default(),
            format: "jpeg".into(),
            data: vec![0xFF, 0xD8, 0xFF, 0x00, 0x01],
        },
    );
    assert!(r.bridge.settle(Duration::from_secs(5)));
    let s = r.bridge.stats();
    assert_eq!(s.frames_rejected, 3, "{s:?}");
    assert_eq!(s.rejected_by_reason.get("unknown_encoding"), Some(&1));
    r.tick();
    assert_eq!(r.last_twist(), [0.0; 3], "no valid frames: hold");
}

#[test]
fn watchdog_zeroes_the_twist_when_images_stop() {
    let mut r = rig(&["control.watchdog_timeout_s=0.05"]);
    r.joints();
    r.instruction("pick up the red cube");
    r.images(1);
    r.tick();
    assert!(r.last_twist()[0] > 0.0);
    std::thread::sleep(Duration::from_millis(80));
    r.tick();
    assert_eq!(r.last_twist(), [0.0; 3]);
    assert!(r.bridge.stats().interventions["watchdog"] >= 1);
}

#[test]
fn estop_topic_latches_until_reset() {
    let mut r = rig(&[]);
    r.joints();
    r.instruction("pick up the red cube");
    let (estop, reset) = (
        r.config.topics.estop.clone(),
        r.config.topics.estop_reset.clone(),
    );
    r.publish(&estop, Qos::reliable(10), Bool { data: true });
    r.publish(&estop, Qos::reliable(10), Bool { data: false });
    for v in 0..3 {
        r.images(v);
        r.tick();
        assert_eq!(r.last_twist(), [0.0; 3]);
    }
    assert!(r.bridge.stats().estop_latched);
    r.publish(&reset, Qos::reliable(10), Bool { data: true });
    r.images(9);
    r.tick();
    assert!(r.last_twist()[0] > 0.0);
}

#[test]
fn joint_trajectory_output_stays_within_joint_limits() {
    let mut r = rig(&["output.motion=joint_trajectory"]);
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let topic = r.config.topics.joint_trajectory.clone();
    r.bus
        .subscribe::<crate::msg::JointTrajectory>(
            &topic,
            Qos::reliable(10),
            Box::new(move |m| {
                if let (Ok(m), Ok(mut v)) = (m, g.lock()) {
                    v.push(m);
                }
            }),
        )
        .expect("sub");
    r.joints();
    r.instruction("pick up the red cube");
    r.images(1);
    r.tick();
    let v = got.lock().expect("lock");
    let traj = v.last().expect("a trajectory");
    assert_eq!(traj.joint_names.len(), 6);
    assert_eq!(traj.points.len(), 1);
    assert!((traj.points[0].time_from_start.as_secs_f64() - 0.1).abs() < 1e-6);
}

#[test]
fn subtask_is_published_when_it_changes() {
    let mut r = rig_with(&[], |_| {
        Box::new(Planner(VecDeque::from(["a", "a", "b", "b"])))
    });
    assert_eq!(r.config.topics.subtask, "/vla/subtask");
    let got = r.subtasks();
    r.joints();
    r.instruction("put the red cube in the red bin");
    for v in 0..3 {
        r.images(v);
        r.tick();
    }
    assert_eq!(*got.lock().expect("lock"), ["a", "b"]);
    // A new instruction starts a new plan: its first sub-task is sent even if unchanged.
    r.instruction("put the blue cube in the blue bin");
    r.images(3);
    r.tick();
    // Out of script: no sub-task, nothing sent.
    r.images(4);
    r.tick();
    assert_eq!(*got.lock().expect("lock"), ["a", "b", "b"]);
    assert!(r.last_twist()[0] > 0.0, "acting all along");
    // Latched: an operator display started late still gets the current one.
    assert_eq!(*r.subtasks().lock().expect("lock"), ["b"]);
}

#[test]
fn no_subtask_publishes_nothing() {
    let mut r = rig(&[]);
    let got = r.subtasks();
    r.joints();
    r.instruction("pick up the red cube");
    for v in 0..3 {
        r.images(v);
        r.tick();
    }
    assert!(r.last_twist()[0] > 0.0);
    assert!(got.lock().expect("lock").is_empty());
}
