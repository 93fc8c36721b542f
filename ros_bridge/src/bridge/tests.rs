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
    fn act(&mut self, obs: &PolicyInput) -> anyhow::Result<PolicyOutput> {
        if let Ok(mut s) = self.0.lock() {
            s.observations.push((
                obs.images[0].get_pixel(0, 0).0[0],
                obs.instruction.clone(),
                obs.images[0].dimensions(),
            ));
        }
        Ok(PolicyOutput {
            action: vec![0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
            tokens: vec![1, 2, 3, 4, 5, 6, 7],
            subtask: None,
        })
    }
}

/// Acts like [`Scripted`] and says the next sub-task of a script (then none).
struct Planner(VecDeque<&'static str>);

impl ActionSource for Planner {
    fn reset(&mut self) {}
    fn act(&mut self, _obs: &PolicyInput) -> anyhow::Result<PolicyOutput> {
        Ok(PolicyOutput {
            action: vec![0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
            tokens: vec![],
            subtask: self.0.pop_front().map(String::from),
        })
    }
}

/// Every message published on `topic` from now on.
fn collect<M: crate::msg::RosMessage>(bus: &mut MemoryBus, topic: &str) -> Arc<Mutex<Vec<M>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    bus.subscribe::<M>(
        topic,
        Qos::reliable(10),
        Box::new(move |m| {
            if let (Ok(m), Ok(mut v)) = (m, g.lock()) {
                v.push(m);
            }
        }),
    )
    .expect("sub");
    got
}

struct Rig {
    bus: MemoryBus,
    bridge: Bridge,
    seen: Arc<Mutex<Seen>>,
    twists: Arc<Mutex<Vec<TwistStamped>>>,
    grippers: Arc<Mutex<Vec<Float64MultiArray>>>,
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
    let twists = collect::<TwistStamped>(&mut bus, &config.topics.twist);
    let grippers = collect::<Float64MultiArray>(&mut bus, &config.topics.gripper);
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
        let d = vla_kinematics::RobotDescription::default_arm().expect("arm");
        let target = nalgebra::Isometry3::from_parts(
            nalgebra::Translation3::new(0.45, 0.0, 0.25),
            vla_kinematics::tool_down(0.0),
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
        let name: Vec<String> = d.chain.joints.iter().map(|j| j.name.clone()).collect();
        self.joint_state(name, q);
    }

    /// A joint state of these arm joints, with the driven finger open (0.04 m).
    fn joint_state(&mut self, mut name: Vec<String>, mut position: Vec<f64>) {
        name.push("left_finger_joint".into());
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

    /// The last gripper position sent.
    fn last_gripper(&self) -> Option<f64> {
        let v = self.grippers.lock().expect("lock");
        v.last().and_then(|m| m.data.first().copied())
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
    assert_eq!(r.last_gripper(), Some(0.0)); // closed
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
    let topic = r.config.topics.joint_trajectory.clone();
    let got = collect::<crate::msg::JointTrajectory>(&mut r.bus, &topic);
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

// ---------------------------------------------------------------------------------------
// A joint-space policy (an SO-100-like layout on the built-in arm): its own camera names,
// joint positions as state and action, the joints in another order than the URDF's.

/// The action order: the URDF chain reversed, then the gripper.
const JOINTS: [&str; 6] = [
    "wrist_3_joint.pos",
    "wrist_2_joint.pos",
    "wrist_1_joint.pos",
    "elbow_joint.pos",
    "shoulder_lift_joint.pos",
    "shoulder_pan_joint.pos",
];

/// Reads the joints (and the finger) and asks for `step` rad more on the shoulder pan
/// joint each tick, gripper closed. Records the states it was given.
struct JointPolicy {
    step: f32,
    states: Arc<Mutex<Vec<Vec<f32>>>>,
}

impl ActionSource for JointPolicy {
    fn io(&self) -> PolicyIo {
        let mut state: Vec<String> = JOINTS.iter().map(|s| s.to_string()).collect();
        state.push("left_finger_joint".into());
        let mut names: Vec<String> = JOINTS.iter().map(|s| s.to_string()).collect();
        names.push("gripper".into());
        PolicyIo {
            cameras: vec!["laptop".into(), "phone".into()],
            state: StateLayout::Joints(state),
            action: ActionLayout::JointPositions {
                names,
                gripper: Some(6),
            },
        }
    }
    fn reset(&mut self) {}
    fn act(&mut self, obs: &PolicyInput) -> anyhow::Result<PolicyOutput> {
        assert_eq!(obs.images.len(), 2, "both cameras");
        if let Ok(mut s) = self.states.lock() {
            s.push(obs.state.clone());
        }
        let mut action: Vec<f32> = obs.state[..6].to_vec();
        action[5] += self.step; // shoulder pan, last in this order
        action.push(1.0);
        Ok(PolicyOutput {
            action,
            tokens: vec![],
            subtask: None,
        })
    }
}

struct JointRig {
    rig: Rig,
    states: Arc<Mutex<Vec<Vec<f32>>>>,
    trajectories: Arc<Mutex<Vec<crate::msg::JointTrajectory>>>,
    forward: Arc<Mutex<Vec<Float64MultiArray>>>,
}

fn joint_rig(overrides: &[&str], step: f32) -> JointRig {
    let mut all = vec![
        "control.cameras=[\"laptop=/laptop/image_raw\", \"phone=/phone/image_raw/compressed\"]",
    ];
    all.extend_from_slice(overrides);
    let states = Arc::new(Mutex::new(Vec::new()));
    let s = states.clone();
    let mut rig = rig_with(&all, move |_| Box::new(JointPolicy { step, states: s }));
    let topic = rig.config.topics.joint_trajectory.clone();
    let trajectories = collect(&mut rig.bus, &topic);
    let topic = rig.config.topics.forward_command.clone();
    let forward = collect(&mut rig.bus, &topic);
    JointRig {
        rig,
        states,
        trajectories,
        forward,
    }
}

impl JointRig {
    /// The arm at home, an instruction, a frame per camera, one tick.
    fn start(&mut self) {
        self.rig.joints();
        self.rig.instruction("pick up the red cube");
        self.images(1);
        self.rig.tick();
    }

    fn images(&mut self, value: u8) {
        let jpeg = crate::image::encode_jpeg(
            &RgbImage::from_pixel(64, 48, image::Rgb([value, 0, 0])),
            90,
            Header::now("phone"),
        )
        .expect("jpeg");
        self.rig
            .publish("/laptop/image_raw", Qos::sensor_data(2), image(value));
        self.rig
            .publish("/phone/image_raw/compressed", Qos::sensor_data(2), jpeg);
    }

    /// The last trajectory point, by joint name.
    fn last_point(&self) -> Vec<(String, f64)> {
        let v = self.trajectories.lock().expect("lock");
        let t = v.last().expect("a trajectory was published");
        t.joint_names
            .iter()
            .cloned()
            .zip(t.points[0].positions.iter().copied())
            .collect()
    }

    /// A robot that tracked the last target: publish it as the joint state.
    fn track(&mut self) {
        let (name, position) = self.last_point().into_iter().unzip();
        self.rig.joint_state(name, position);
    }

    /// The measured joints the rig published first, by name.
    fn measured(&self) -> Vec<(String, f64)> {
        let s = self.states.lock().expect("lock");
        let state = s.first().expect("the policy saw a state");
        JOINTS
            .iter()
            .map(|n| n.trim_end_matches(".pos").to_string())
            .zip(state.iter().map(|v| *v as f64))
            .collect()
    }
}

#[test]
fn joint_space_policy_reads_named_joints_and_publishes_limited_trajectories() {
    let mut j = joint_rig(
        &[
            "output.motion=joint_trajectory",
            "limits.max_joint_acceleration=10",
        ],
        0.5,
    );
    j.start();
    // The state: the named joints in the policy's order, then the finger (0.04 m).
    let state = j.states.lock().expect("lock")[0].clone();
    assert_eq!(state.len(), 7);
    assert!((state[6] - 0.04).abs() < 1e-6, "{state:?}");
    let measured = j.measured();
    // Published in the policy's joint order, with the URDF's names.
    let point = j.last_point();
    let names: Vec<&str> = point.iter().map(|(n, _)| n.as_str()).collect();
    let expected: Vec<&str> = JOINTS.iter().map(|n| n.trim_end_matches(".pos")).collect();
    assert_eq!(names, expected);
    // 0.5 rad in 0.1 s asks 5 rad/s, over the speed limit (2 rad/s); from rest the
    // acceleration limit (10 rad/s²) allows 1 rad/s after one period, i.e. 0.1 rad; the
    // other joints stay put.
    let limits = &j.rig.config.limits;
    let first_step = limits.max_joint_acceleration * 0.1 * 0.1;
    let max_speed = limits.max_joint_speed;
    for ((name, v), (_, m)) in point.iter().zip(&measured) {
        let want = if name == "shoulder_pan_joint" {
            m + first_step
        } else {
            *m
        };
        assert!((v - want).abs() < 1e-6, "{name}: {v} vs {want}");
    }
    assert_eq!(j.rig.last_gripper(), Some(0.0)); // closed
                                                 // The robot follows; the policy now asks 0.5 rad past it, 5 rad/s from the last target:
                                                 // the speed limit caps it at 2 rad/s, which is within 1 rad/s of the last speed.
    j.track();
    j.images(2);
    j.rig.tick();
    let pan = |p: &[(String, f64)]| {
        p.iter()
            .find(|(n, _)| n == "shoulder_pan_joint")
            .map(|(_, v)| *v)
            .expect("pan")
    };
    let second = pan(&j.last_point());
    let start = pan(&measured);
    assert!(
        (second - (start + first_step + max_speed * 0.1)).abs() < 1e-6,
        "{second} vs {start}"
    );
    let s = j.rig.bridge.stats();
    assert!(s.interventions["acceleration"] >= 1, "{s:?}");
    assert!(s.interventions["speed"] >= 1, "{s:?}");
    assert_eq!(s.frames_in.get("laptop"), Some(&2));
    assert_eq!(s.frames_in.get("phone"), Some(&2));
}

#[test]
fn joint_space_policy_holds_on_watchdog_and_estop() {
    let mut j = joint_rig(
        &[
            "output.motion=joint_trajectory",
            "control.watchdog_timeout_s=0.05",
        ],
        0.05,
    );
    j.start();
    let moving = j.last_point();
    // Images stop: the watchdog holds the last commanded joints (not the measured ones).
    std::thread::sleep(Duration::from_millis(80));
    j.rig.tick();
    assert_eq!(j.last_point(), moving, "watchdog: hold the last target");
    assert!(j.rig.bridge.stats().interventions["watchdog"] >= 1);
    // E-stop: hold until reset.
    j.rig.bridge.estop().trigger();
    j.images(2);
    j.rig.tick();
    assert_eq!(j.last_point(), moving, "e-stop: hold");
    j.rig.bridge.estop().clear();
    j.track();
    j.images(3);
    j.rig.tick();
    assert_ne!(j.last_point(), moving, "moving again after the reset");
}

#[test]
fn joint_space_policy_drives_a_forward_command_controller() {
    let mut j = joint_rig(&["output.motion=forward_command"], 0.05);
    j.start();
    let measured = j.measured();
    let sent = j
        .forward
        .lock()
        .expect("lock")
        .last()
        .map(|m| m.data.clone())
        .expect("a command");
    // The policy's order (the controller's), the pan joint 0.05 rad on.
    assert_eq!(sent.len(), 6);
    for (i, ((name, m), v)) in measured.iter().zip(&sent).enumerate() {
        let want = if name == "shoulder_pan_joint" {
            m + 0.05
        } else {
            *m
        };
        assert!((v - want).abs() < 1e-6, "entry {i} ({name}): {v} vs {want}");
    }
    assert!(j.trajectories.lock().expect("lock").is_empty());
}

#[test]
fn joint_space_policy_configuration_errors_name_the_fix() {
    let states = Arc::new(Mutex::new(Vec::new()));
    let build = |overrides: &[&str]| {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        let config = BridgeConfig::load(None, &overrides).expect("config");
        let source = Box::new(JointPolicy {
            step: 0.0,
            states: states.clone(),
        });
        Bridge::new(&mut MemoryBus::new(), config, source)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let cameras = "control.cameras=[\"laptop=/a/image_raw\", \"phone=/b/image_raw\"]";
    let e = build(&[cameras]);
    assert!(e.contains("output.motion"), "{e}");
    let e = build(&["output.motion=joint_trajectory"]);
    assert!(e.contains("control.cameras") && e.contains("laptop"), "{e}");
    let e = build(&[
        "output.motion=joint_trajectory",
        "control.cameras=[\"laptop=/a/image_raw\"]",
    ]);
    assert!(e.contains("\"phone\""), "{e}");
}

#[test]
fn joint_names_the_urdf_lacks_are_its_chain_in_order_or_an_error() {
    let arm =
        ArmModel::from_description(&vla_kinematics::RobotDescription::default_arm().expect("arm"));
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // A raw recording of a forward command controller: data_0 … data_5 and the gripper.
    let raw = names(&[
        "data_0", "data_1", "data_2", "data_3", "data_4", "data_5", "gripper",
    ]);
    let entries = joint_action_order(&arm, &raw, Some(6)).expect("chain order");
    assert_eq!(entries, [0, 1, 2, 3, 4, 5]);
    // The URDF's names in another order: each joint's entry.
    let shuffled = names(&[
        "gripper",
        "elbow_joint.pos",
        "shoulder_pan_joint.pos",
        "shoulder_lift_joint.pos",
        "wrist_1_joint.pos",
        "wrist_2_joint.pos",
        "wrist_3_joint.pos",
    ]);
    let entries = joint_action_order(&arm, &shuffled, Some(0)).expect("by name");
    assert_eq!(entries, [2, 3, 1, 4, 5, 6]);
    // A name twice is refused.
    let twice = names(&[
        "elbow_joint",
        "elbow_joint",
        "wrist_1_joint",
        "wrist_2_joint",
        "wrist_3_joint",
        "shoulder_pan_joint",
    ]);
    assert!(joint_action_order(&arm, &twice, None).is_err());
    // Some names are the URDF's, some not: ambiguous.
    let mixed = names(&["shoulder_pan_joint", "x", "y", "z", "u", "v"]);
    let e = joint_action_order(&arm, &mixed, None).expect_err("mixed");
    assert!(e.to_string().contains("robot.urdf"), "{e}");
    // Five joints for a six-joint arm.
    let e = joint_action_order(&arm, &raw[..5], None).expect_err("too few");
    assert!(e.to_string().contains("shoulder_pan_joint"), "{e}");
    let e = joint_action_order(&arm, &raw, Some(9)).expect_err("gripper outside");
    assert!(e.to_string().contains("gripper dimension 9"), "{e}");
}
