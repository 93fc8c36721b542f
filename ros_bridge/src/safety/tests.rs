//! Each decorator on its own, the latch, the watchdog, and property tests: any sequence of
//! commands (NaN, ∞, huge values included) through the standard chain stays in the envelope.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::safety::kinematics::JointSnapshot;

/// Records what reaches the robot.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Command>>>);

impl CommandSink for Recorder {
    fn send(&mut self, cmd: Command) -> Result<Command, SinkError> {
        if let Ok(mut v) = self.0.lock() {
            v.push(cmd.clone());
        }
        Ok(cmd)
    }
}

impl Recorder {
    fn last(&self) -> Command {
        self.0
            .lock()
            .ok()
            .and_then(|v| v.last().cloned())
            .unwrap_or_else(Command::stop)
    }
}

/// A tool that moves exactly as commanded.
#[derive(Clone)]
struct FakeTool(Arc<Mutex<[f64; 3]>>);

impl ToolPosition for FakeTool {
    fn tool_position(&self) -> Option<[f64; 3]> {
        self.0.lock().ok().map(|p| *p)
    }
}

const DT: f64 = 0.1;

fn twist(l: [f64; 3], a: [f64; 3]) -> Command {
    Command::twist(
        Twist {
            linear: l,
            angular: a,
        },
        None,
    )
}

fn lin(c: &Command) -> [f64; 3] {
    match &c.motion {
        Motion::Twist(t) => t.linear,
        Motion::Joints { .. } => [f64::NAN; 3],
    }
}

fn norm(v: [f64; 3]) -> f64 {
    (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt()
}

fn arm() -> Arc<ArmModel> {
    let d = vla_kinematics::RobotDescription::default_arm().expect("built-in arm");
    Arc::new(ArmModel::from_description(&d))
}

/// Joints with the tool pointing down at (0.45, 0, 0.25), as the simulator's home.
fn home(arm: &ArmModel) -> Vec<f64> {
    let target = nalgebra::Isometry3::from_parts(
        nalgebra::Translation3::new(0.45, 0.0, 0.25),
        vla_kinematics::tool_down(0.0),
    );
    let sol = arm
        .chain
        .inverse(
            &target,
            &[0.0, 0.5, 1.6, 0.0, 1.04, 0.0],
            &Default::default(),
        )
        .expect("home IK");
    assert!(sol.converged);
    sol.joints
}

fn shared(q: Vec<f64>) -> SharedJoints {
    Arc::new(Mutex::new(Some(JointSnapshot {
        positions: q,
        finger: None,
        named: Vec::new(),
        received: Instant::now(),
    })))
}

#[test]
fn finite_guard_stops_on_nan_and_infinity() {
    let rec = Recorder::default();
    let counts = Arc::new(Interventions::default());
    let mut g = FiniteGuard::new(rec.clone(), counts.clone());
    g.send(twist([f64::NAN, 0.0, 0.0], [0.0; 3])).expect("sent");
    assert!(rec.last().is_stop());
    let mut c = twist([0.1, 0.0, 0.0], [0.0, f64::INFINITY, 0.0]);
    c.gripper = Some(f64::NAN);
    g.send(c).expect("sent");
    assert!(rec.last().is_stop());
    assert_eq!(rec.last().gripper, None);
    g.send(twist([0.1, 0.0, 0.0], [0.0; 3])).expect("sent");
    assert!(!rec.last().is_stop());
    assert_eq!(
        counts.nonfinite.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[test]
fn speed_and_acceleration_are_limited_but_stops_are_immediate() {
    let rec = Recorder::default();
    let counts = Arc::new(Interventions::default());
    let limits = Limits {
        max_linear_acceleration: 2.0,
        ..Limits::default()
    };
    let mut s = SpeedLimit::new(rec.clone(), &limits, DT, counts.clone());
    // From rest, one period may add at most a·dt = 0.2 m/s.
    s.send(twist([10.0, 0.0, 0.0], [0.0; 3])).expect("sent");
    assert!((norm(lin(&rec.last())) - 0.2).abs() < 1e-9);
    s.send(twist([10.0, 0.0, 0.0], [0.0; 3])).expect("sent");
    assert!((norm(lin(&rec.last())) - 0.3).abs() < 1e-9); // speed cap
    s.send(Command::stop()).expect("sent");
    assert!(rec.last().is_stop());
    assert!(counts.speed.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    assert!(
        counts
            .acceleration
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}

#[test]
fn workspace_box_never_pushes_out_and_allows_coming_back() {
    let rec = Recorder::default();
    let counts = Arc::new(Interventions::default());
    let tool = FakeTool(Arc::new(Mutex::new([0.79, 0.0, 0.3])));
    let ws = [[0.15, -0.45, 0.012], [0.80, 0.45, 0.55]];
    let mut w = WorkspaceBox::new(rec.clone(), Box::new(tool.clone()), ws, DT, counts.clone());
    w.send(twist([0.3, 0.0, 0.0], [0.0; 3])).expect("sent");
    assert!((lin(&rec.last())[0] - 0.1).abs() < 1e-9, "{:?}", rec.last());
    // Outside the box: only motion back in passes.
    *tool.0.lock().expect("lock") = [0.9, 0.0, 0.3];
    w.send(twist([0.2, 0.0, 0.0], [0.0; 3])).expect("sent");
    assert_eq!(lin(&rec.last())[0], 0.0);
    w.send(twist([-0.2, 0.0, 0.0], [0.0; 3])).expect("sent");
    assert_eq!(lin(&rec.last())[0], -0.2);
    assert_eq!(
        counts.workspace.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[test]
fn workspace_without_joint_state_stops() {
    let rec = Recorder::default();
    let counts = Arc::new(Interventions::default());
    let fk = JointStateFk::new(arm(), Arc::new(Mutex::new(None)));
    let mut w = WorkspaceBox::new(
        rec.clone(),
        Box::new(fk),
        Limits::default().workspace,
        DT,
        counts,
    );
    w.send(twist([0.1, 0.0, 0.0], [0.0; 3])).expect("sent");
    assert!(rec.last().is_stop());
}

#[test]
fn joint_limits_clamp_targets_and_scale_twists() {
    let arm = arm();
    let q = home(&arm);
    let rec = Recorder::default();
    let counts = Arc::new(Interventions::default());
    let mut j = JointLimits::new(
        rec.clone(),
        arm.clone(),
        shared(q.clone()),
        0.01,
        DT,
        counts.clone(),
    );
    let mut wild = q.clone();
    wild[0] = 100.0;
    j.send(Command {
        motion: Motion::Joints {
            positions: wild,
            duration: DT,
        },
        gripper: None,
    })
    .expect("sent");
    let Motion::Joints { positions, .. } = rec.last().motion else {
        panic!("joint command expected")
    };
    let j0 = &arm.chain.joints[0];
    assert!(positions[0] <= j0.upper && positions[0] <= q[0] + j0.max_velocity * DT + 1e-12);
    assert_eq!(
        counts
            .joint_limits
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Put joint 0 at its upper limit and ask to turn further that way.
    let mut at_limit = q.clone();
    at_limit[0] = j0.upper - 0.01;
    let mut j = JointLimits::new(rec.clone(), arm.clone(), shared(at_limit), 0.01, DT, counts);
    j.send(twist([0.0; 3], [0.0, 0.0, 1.0])).expect("sent");
    let Motion::Twist(t) = rec.last().motion else {
        panic!("twist expected")
    };
    assert!(t.angular[2].abs() < 1e-6, "{t:?}");
}

#[test]
fn gripper_rate_is_limited_and_clamped() {
    let rec = Recorder::default();
    let counts = Arc::new(Interventions::default());
    let mut g = GripperRateLimit::new(rec.clone(), 2.0, DT, counts);
    let mut c = Command::stop();
    c.gripper = Some(0.0);
    g.send(c.clone()).expect("sent");
    c.gripper = Some(1.0);
    g.send(c.clone()).expect("sent");
    assert!((rec.last().gripper.unwrap_or(-1.0) - 0.2).abs() < 1e-12);
    c.gripper = Some(-7.0);
    g.send(c).expect("sent");
    assert!((rec.last().gripper.unwrap_or(-1.0)).abs() < 1e-12);
}

#[test]
fn emergency_stop_latches_until_cleared() {
    let rec = Recorder::default();
    let counts = Arc::new(Interventions::default());
    let h = EstopHandle::new();
    let mut e = EmergencyStop::new(rec.clone(), h.clone(), counts.clone());
    let go = twist([0.1, 0.0, 0.0], [0.0; 3]);
    e.send(go.clone()).expect("sent");
    assert!(!rec.last().is_stop());
    h.trigger();
    for _ in 0..3 {
        e.send(go.clone()).expect("sent");
        assert!(rec.last().is_stop());
    }
    h.clear();
    e.send(go).expect("sent");
    assert!(!rec.last().is_stop());
    assert_eq!(counts.estop.load(std::sync::atomic::Ordering::Relaxed), 3);
}

#[test]
fn watchdog_zeroes_on_stale_images_model_or_missing_instruction() {
    let rec = Recorder::default();
    let counts = Arc::new(Interventions::default());
    let f = Freshness::new();
    let timeout = Duration::from_millis(200);
    let mut w = Watchdog::new(rec.clone(), f.clone(), timeout, None, counts.clone());
    let go = twist([0.1, 0.0, 0.0], [0.0; 3]);
    w.send(go.clone()).expect("sent");
    assert!(rec.last().is_stop(), "nothing received yet");
    let now = Instant::now();
    f.images(now);
    f.model(now);
    w.send(go.clone()).expect("sent");
    assert!(rec.last().is_stop(), "no instruction");
    f.instruction(Some(now));
    w.send(go.clone()).expect("sent");
    assert!(!rec.last().is_stop());
    let old = now.checked_sub(Duration::from_millis(500)).unwrap_or(now);
    f.images(old);
    w.send(go.clone()).expect("sent");
    assert!(rec.last().is_stop(), "images stale");
    f.images(Instant::now());
    f.model(old);
    w.send(go.clone()).expect("sent");
    assert!(rec.last().is_stop(), "model stale");
    f.model(Instant::now());
    f.instruction(None);
    w.send(go).expect("sent");
    assert!(rec.last().is_stop(), "instruction cleared");
    assert_eq!(
        counts.watchdog.load(std::sync::atomic::Ordering::Relaxed),
        5
    );
}

fn wild_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => -2.0f64..2.0,
        1 => -1e12f64..1e12,
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(0.0),
    ]
}

fn wild_command() -> impl Strategy<Value = (Command, bool, bool)> {
    (
        proptest::array::uniform3(wild_f64()),
        proptest::array::uniform3(wild_f64()),
        proptest::option::of(wild_f64()),
        any::<bool>(),
        prop_oneof![9 => Just(false), 1 => Just(true)],
        prop_oneof![9 => Just(false), 1 => Just(true)],
    )
        .prop_map(|(l, a, g, _, estop, clear)| {
            (
                Command::twist(
                    Twist {
                        linear: l,
                        angular: a,
                    },
                    g,
                ),
                estop,
                clear,
            )
        })
}

fn inputs(arm: Arc<ArmModel>, q: Vec<f64>) -> SafetyInputs {
    let f = Freshness::new();
    let now = Instant::now();
    f.images(now);
    f.model(now);
    f.instruction(Some(now));
    SafetyInputs {
        arm,
        joints: shared(q),
        freshness: f,
        estop: EstopHandle::new(),
        counts: Arc::new(Interventions::default()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Twist output: the tool (moving exactly as commanded, its joints following by IK)
    /// never leaves the box, never exceeds speed limits, gripper stays in [0, 1] and
    /// rate-limited, and while latched every command is a stop.
    #[test]
    fn twist_chain_stays_in_the_envelope(cmds in proptest::collection::vec(wild_command(), 1..60)) {
        let arm = arm();
        let q = home(&arm);
        let limits = Limits::default();
        let ins = inputs(arm.clone(), q);
        let rec = Recorder::default();
        let mut chain = SafetyChain::new(
            rec.clone(), &limits, DT, Duration::from_secs(60), None, &ins,
        );
        let [lo, hi] = limits.workspace;
        let mut last_g: Option<f64> = None;
        for (cmd, estop, clear) in cmds {
            if estop { ins.estop.trigger(); }
            if clear { ins.estop.clear(); }
            let latched = ins.estop.is_latched();
            let out = chain.send(cmd).expect("sent");
            let Motion::Twist(t) = out.motion else { panic!("twist expected") };
            prop_assert!(t.is_finite());
            prop_assert!(norm(t.linear) <= limits.max_linear_speed + 1e-9);
            prop_assert!(norm(t.angular) <= limits.max_angular_speed + 1e-9);
            if latched { prop_assert!(t.is_zero()); }
            if let Some(g) = out.gripper {
                prop_assert!((0.0..=1.0).contains(&g));
                if let Some(l) = last_g {
                    prop_assert!((g - l).abs() <= limits.max_gripper_rate * DT + 1e-9);
                }
                last_g = Some(g);
            }
            // Move the robot: IK to the commanded tool motion, then check the box.
            let mut guard = ins.joints.lock().expect("lock");
            let snap = guard.as_mut().expect("joints");
            let pose = arm.tool_pose(&snap.positions);
            let p = pose.translation.vector + nalgebra::Vector3::from(t.linear) * DT;
            for a in 0..3 {
                prop_assert!(p[a] >= lo[a] - 1e-6 && p[a] <= hi[a] + 1e-6, "axis {a}: {}", p[a]);
            }
            let target = nalgebra::Isometry3::from_parts(
                nalgebra::Translation3::from(p),
                nalgebra::UnitQuaternion::from_scaled_axis(nalgebra::Vector3::from(t.angular) * DT)
                    * pose.rotation,
            );
            if let Ok(sol) = arm.chain.inverse(&target, &snap.positions, &Default::default()) {
                if sol.converged { snap.positions = sol.joints; }
            }
            for (qi, j) in snap.positions.iter().zip(&arm.chain.joints) {
                prop_assert!(*qi >= j.lower - 1e-9 && *qi <= j.upper + 1e-9);
            }
        }
    }

    /// A joint-space policy's targets (wild offsets from where the arm is, NaN and ∞
    /// included) through the standard chain: every executed target is finite, inside the
    /// URDF limits, within each joint's speed limit of the last executed one, changes speed
    /// by at most the acceleration limit, and keeps the tool in the box (robot tracks).
    #[test]
    fn joint_targets_stay_in_the_envelope(
        steps in proptest::collection::vec(proptest::array::uniform6(wild_f64()), 1..25)
    ) {
        let arm = arm();
        let limits = Limits::default();
        let ins = inputs(arm.clone(), home(&arm));
        let rec = Recorder::default();
        let clamp = JointLimits::new(rec.clone(), arm.clone(), ins.joints.clone(), limits.joint_margin, DT, ins.counts.clone());
        let out = IkJointSink::new(clamp, arm.clone(), ins.joints.clone(), DT);
        let mut chain = SafetyChain::new(out, &limits, DT, Duration::from_secs(60), None, &ins);
        let [lo, hi] = limits.workspace;
        let mut last: Vec<f64> = home(&arm);
        let mut last_v = vec![0.0; 6];
        for offsets in steps {
            let positions: Vec<f64> = last.iter().zip(&offsets).map(|(q, o)| q + 0.3 * o).collect();
            chain.send(Command { motion: Motion::Joints { positions, duration: DT }, gripper: None }).expect("sent");
            let Motion::Joints { positions, .. } = rec.last().motion else { panic!("joints expected") };
            let mut v = Vec::new();
            for ((p, j), b) in positions.iter().zip(&arm.chain.joints).zip(&last) {
                prop_assert!(p.is_finite());
                prop_assert!(*p >= j.lower && *p <= j.upper);
                let vmax = limits.max_joint_speed.min(j.max_velocity);
                prop_assert!((p - b).abs() <= vmax * DT + 1e-9, "{} → {}", b, p);
                v.push((p - b) / DT);
            }
            // A hold (NaN/∞ target) stops at once; any motion ramps.
            if v.iter().any(|x| *x != 0.0) {
                for (vi, li) in v.iter().zip(&last_v) {
                    prop_assert!((vi - li).abs() <= limits.max_joint_acceleration * DT + 1e-6);
                }
            }
            let p = arm.tool_pose(&positions).translation.vector;
            for a in 0..3 {
                prop_assert!(p[a] >= lo[a] - 1e-6 && p[a] <= hi[a] + 1e-6, "axis {a}: {}", p[a]);
            }
            if let Some(s) = ins.joints.lock().expect("lock").as_mut() { s.positions = positions.clone(); }
            last = positions;
            last_v = v;
        }
    }

    /// Joint-trajectory output: targets from IK on the twist stay inside joint limits and
    /// joint speed limits, and the tool stays in the box (robot tracks perfectly).
    #[test]
    fn joint_chain_stays_in_the_envelope(cmds in proptest::collection::vec(wild_command(), 1..30)) {
        let arm = arm();
        let q = home(&arm);
        let limits = Limits::default();
        let ins = inputs(arm.clone(), q);
        let rec = Recorder::default();
        let counts = ins.counts.clone();
        let clamp = JointLimits::new(rec.clone(), arm.clone(), ins.joints.clone(), limits.joint_margin, DT, counts);
        let ik = IkJointSink::new(clamp, arm.clone(), ins.joints.clone(), DT);
        let mut chain = SafetyChain::new(ik, &limits, DT, Duration::from_secs(60), None, &ins);
        let [lo, hi] = limits.workspace;
        for (cmd, _, _) in cmds {
            let before = ins.joints.lock().expect("lock").as_ref().expect("joints").positions.clone();
            chain.send(cmd).expect("sent");
            let Motion::Joints { positions, .. } = rec.last().motion else { panic!("joints expected") };
            for ((v, j), b) in positions.iter().zip(&arm.chain.joints).zip(&before) {
                prop_assert!(v.is_finite());
                prop_assert!(*v >= j.lower && *v <= j.upper);
                prop_assert!((v - b).abs() <= j.max_velocity * DT + 1e-9);
            }
            let p = arm.tool_pose(&positions).translation.vector;
            for a in 0..3 {
                prop_assert!(p[a] >= lo[a] - 2e-3 && p[a] <= hi[a] + 2e-3, "axis {a}: {}", p[a]);
            }
            let mut guard = ins.joints.lock().expect("lock");
            if let Some(s) = guard.as_mut() { s.positions = positions; }
        }
    }
}
