//! The simulator as a ROS 2 robot: publishes the cameras (`sensor_msgs/Image`, rgb8),
//! `JointState`, the task instruction (latched) and a success flag; obeys the commands the
//! bridge sends, with MoveIt Servo-like semantics (a twist held for one control period
//! becomes the end-effector delta of the simulator's controller) and ros2_control-like
//! joint trajectories. Runs N episodes in sequence and returns the report `vla expert`
//! prints. With `teleop`, the scripted expert drives it over the wire as a teleoperator
//! would, for `vla ros record` (see [`Teleop`]).
//!
//! Two clocks: `rate_hz` steps the simulation at a fixed wall-clock rate using the latest
//! command (stale commands → hold, as Servo does); `lockstep` steps once per received
//! command instead, so a slow policy or renderer changes nothing but the wall time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nalgebra::UnitQuaternion;
use serde::Serialize;
use sha2::{Digest, Sha256};
use vla_core::Action;
use vla_sim::{Env, EnvConfig, RobotDescription, VecEnv};
use vla_tasks::runner::{episode_specs, EpisodeOutcome, Reversals, SuiteReport};
use vla_tasks::{make_task, Language, Split};

use crate::config::{BridgeConfig, GripperOutput};
use crate::image::encode_raw;
use crate::msg::{
    Bool, Float64MultiArray, GripperCommand, Header, Int32MultiArray, JointState, JointTrajectory,
    StringMsg, Twist, TwistStamped, Vector3,
};
use crate::transport::{Publisher, Qos, Transport};

/// What to run.
#[derive(Clone, Debug)]
pub struct SimOptions {
    pub family: String,
    pub split: Split,
    pub seed: u64,
    pub episodes: usize,
    /// Step once per received command instead of at `rate_hz`.
    pub lockstep: bool,
    /// Wall-clock stepping rate when not in lock-step.
    pub rate_hz: f64,
    /// Lock-step: how long to wait for a command before holding for one step.
    pub command_timeout: Duration,
    pub env: EnvConfig,
    pub robot: RobotDescription,
    /// The scripted expert teleoperates: see [`Teleop`].
    pub teleop: bool,
}

#[derive(Clone, Copy, Debug)]
enum Motion {
    Twist([f64; 6]),
    Joints,
}

#[derive(Default)]
struct Commands {
    /// Number of arm commands received (lock-step waits for it to grow).
    seq: u64,
    latest: Option<(Motion, Instant)>,
    joints: Vec<f64>,
    gripper_closed: bool,
    rejected: u64,
    /// Action-token messages received on the bridge's debug topic, and the latest one.
    tokens_seq: u64,
    tokens: Vec<i32>,
}

/// One episode's line in the report.
#[derive(Clone, Debug, Serialize)]
pub struct EpisodeLine {
    pub seed: u64,
    pub instruction: String,
    pub success: bool,
    pub steps: usize,
    /// Lock-step only: the raw action tokens the bridge published with the episode's first
    /// command (its debug topic). Safety limits reshape the commands themselves, but these
    /// are the policy's own output on the first frame: a direct evaluation of the same
    /// checkpoint and seed must produce the same ones, whatever the policy's success rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_tokens: Option<Vec<i32>>,
}

/// `vla expert --json`'s report plus per-episode lines and command counts.
#[derive(Clone, Debug, Serialize)]
pub struct SimReport {
    #[serde(flatten)]
    pub suite: SuiteReport,
    pub per_episode: Vec<EpisodeLine>,
    pub commands_received: u64,
    pub commands_rejected: u64,
    /// Steps taken with no (fresh) command: held still.
    pub held_steps: u64,
}

struct Outputs {
    front: Box<dyn Publisher<crate::msg::Image>>,
    wrist: Box<dyn Publisher<crate::msg::Image>>,
    joints: Box<dyn Publisher<JointState>>,
    instruction: Box<dyn Publisher<StringMsg>>,
    success: Box<dyn Publisher<Bool>>,
}

fn subscribe_commands<T: Transport>(
    t: &mut T,
    config: &BridgeConfig,
    robot: &RobotDescription,
) -> anyhow::Result<Arc<Mutex<Commands>>> {
    let cmds = Arc::new(Mutex::new(Commands::default()));
    let q = config.qos.commands();
    let c = cmds.clone();
    t.subscribe::<TwistStamped>(
        &config.topics.twist,
        q,
        Box::new(move |m| {
            if let Ok(mut c) = c.lock() {
                match m {
                    Ok(m) => {
                        let (l, a) = (m.twist.linear, m.twist.angular);
                        let v = [l.x, l.y, l.z, a.x, a.y, a.z];
                        if v.iter().all(|x| x.is_finite()) {
                            c.latest = Some((Motion::Twist(v), Instant::now()));
                            c.seq += 1;
                        } else {
                            c.rejected += 1;
                        }
                    }
                    Err(_) => c.rejected += 1,
                }
            }
        }),
    )?;
    let names: Vec<String> = robot.chain.joints.iter().map(|j| j.name.clone()).collect();
    let c = cmds.clone();
    t.subscribe::<JointTrajectory>(
        &config.topics.joint_trajectory,
        q,
        Box::new(move |m| {
            let Ok(mut c) = c.lock() else { return };
            let parsed = m.ok().and_then(|m| {
                let last = m.points.last()?;
                names
                    .iter()
                    .map(|n| {
                        let i = m.joint_names.iter().position(|x| x == n)?;
                        last.positions.get(i).copied().filter(|v| v.is_finite())
                    })
                    .collect::<Option<Vec<f64>>>()
            });
            match parsed {
                Some(q) => {
                    c.joints = q;
                    c.latest = Some((Motion::Joints, Instant::now()));
                    c.seq += 1;
                }
                None => c.rejected += 1,
            }
        }),
    )?;
    // ros2_control's forward command controller: positions in the chain's joint order.
    let (dof, c) = (robot.chain.dof(), cmds.clone());
    t.subscribe::<Float64MultiArray>(
        &config.topics.forward_command,
        q,
        Box::new(move |m| {
            let Ok(mut c) = c.lock() else { return };
            match m {
                Ok(m) if m.data.len() == dof && m.data.iter().all(|v| v.is_finite()) => {
                    c.joints = m.data;
                    c.latest = Some((Motion::Joints, Instant::now()));
                    c.seq += 1;
                }
                _ => c.rejected += 1,
            }
        }),
    )?;
    let output = config.output.clone();
    let c = cmds.clone();
    let set_gripper = move |position: Option<f64>| {
        if let Ok(mut c) = c.lock() {
            match position.filter(|p| p.is_finite()) {
                Some(p) => c.gripper_closed = output.gripper_closure(p) >= 0.5,
                None => c.rejected += 1,
            }
        }
    };
    match config.output.gripper {
        GripperOutput::Float64MultiArray => t.subscribe::<Float64MultiArray>(
            &config.topics.gripper,
            q,
            Box::new(move |m| set_gripper(m.ok().and_then(|m| m.data.first().copied()))),
        )?,
        GripperOutput::GripperCommand => t.subscribe::<GripperCommand>(
            &config.topics.gripper,
            q,
            Box::new(move |m| set_gripper(m.ok().map(|m| m.position))),
        )?,
        GripperOutput::None => {}
    }
    let c = cmds.clone();
    t.subscribe::<Int32MultiArray>(
        &config.topics.action_tokens,
        Qos::reliable(10),
        Box::new(move |m| {
            if let (Ok(m), Ok(mut c)) = (m, c.lock()) {
                c.tokens = m.data;
                c.tokens_seq += 1;
            }
        }),
    )?;
    Ok(cmds)
}

/// The scripted expert as a teleoperator: it publishes its commands on the robot's command
/// topics (a twist per step on `topics.twist`, the gripper position as `output.gripper` says)
/// and marks episodes on `topics.episode` (`start` once the instruction is out; `stop` after a
/// success, `discard` after a failure), as an operator's device and pedal would. The commands
/// come back through the same subscriptions a bridge's do, so whatever listens on the wire
/// (`vla ros record`) sees a teleoperated robot.
struct Teleop {
    twist: Box<dyn Publisher<TwistStamped>>,
    gripper: Option<TeleopGripper>,
    episode: Box<dyn Publisher<StringMsg>>,
}

enum TeleopGripper {
    Array(Box<dyn Publisher<Float64MultiArray>>),
    Command(Box<dyn Publisher<GripperCommand>>),
}

impl Teleop {
    fn new<T: Transport>(t: &mut T, config: &BridgeConfig) -> anyhow::Result<Self> {
        let q = config.qos.commands();
        let topics = &config.topics;
        let gripper = match config.output.gripper {
            GripperOutput::Float64MultiArray => {
                Some(TeleopGripper::Array(t.publisher(&topics.gripper, q)?))
            }
            GripperOutput::GripperCommand => {
                Some(TeleopGripper::Command(t.publisher(&topics.gripper, q)?))
            }
            GripperOutput::None => None,
        };
        Ok(Teleop {
            twist: t.publisher(&topics.twist, q)?,
            gripper,
            episode: t.publisher(&topics.episode, Qos::reliable(10))?,
        })
    }

    fn mark(&self, word: &str) -> anyhow::Result<()> {
        Ok(self.episode.publish(StringMsg { data: word.into() })?)
    }

    /// Publish `action` as a twist held for `dt` and a gripper position.
    fn command(&self, action: &Action, dt: f64, config: &BridgeConfig) -> anyhow::Result<()> {
        let [dx, dy, dz] = action.delta_position().map(|v| f64::from(v) / dt);
        let [rx, ry, rz] = action.delta_rotation().map(|v| f64::from(v) / dt);
        self.twist.publish(TwistStamped {
            header: Header::now(&config.output.twist_frame_id),
            twist: Twist {
                linear: Vector3 {
                    x: dx,
                    y: dy,
                    z: dz,
                },
                angular: Vector3 {
                    x: rx,
                    y: ry,
                    z: rz,
                },
            },
        })?;
        let position =
            config
                .output
                .gripper_position(if action.gripper_closed() { 1.0 } else { 0.0 });
        match &self.gripper {
            Some(TeleopGripper::Array(p)) => p.publish(Float64MultiArray {
                data: vec![position],
                ..Default::default()
            })?,
            Some(TeleopGripper::Command(p)) => p.publish(GripperCommand {
                position,
                max_effort: config.output.gripper_max_effort,
            })?,
            None => {}
        }
        Ok(())
    }
}

/// Wait (up to `timeout`) until every publisher that says how many subscriptions it has
/// (`counts`: one per publisher) has at least one, so what a listener must not miss (an
/// episode's start) is not sent before discovery has matched it.
fn wait_for_listeners<const N: usize>(
    counts: impl Fn() -> [Option<usize>; N],
    timeout: Duration,
    stop: &AtomicBool,
) {
    let t0 = Instant::now();
    while counts().contains(&Some(0)) {
        if t0.elapsed() > timeout || stop.load(Ordering::Relaxed) {
            tracing::warn!(
                "teleoperation starts without a listener on every topic after {:.0} s",
                timeout.as_secs_f64()
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls the received commands every millisecond until `ready` yields something, `timeout`
/// passes or `stop` is set (lock-step waits for commands and for their tokens).
fn wait_for<T>(
    cmds: &Mutex<Commands>,
    timeout: Duration,
    stop: &AtomicBool,
    ready: impl Fn(&Commands) -> Option<T>,
) -> Option<T> {
    let t0 = Instant::now();
    loop {
        if let Some(v) = cmds.lock().ok().and_then(|c| ready(&c)) {
            return Some(v);
        }
        if t0.elapsed() > timeout || stop.load(Ordering::Relaxed) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Joint names and positions as a `JointState` (arm joints, then the driven finger).
fn joint_state(env: &Env, robot: &RobotDescription) -> Option<JointState> {
    let cell = env.cell()?;
    let mut name: Vec<String> = robot.chain.joints.iter().map(|j| j.name.clone()).collect();
    let mut position = cell.robot.joint_positions(&cell.world);
    if let Some(g) = &robot.gripper {
        name.push(g.driver_joint.clone());
        position.push(cell.robot.finger_position(&cell.world));
    }
    Some(JointState {
        header: Header::now("base_link"),
        name,
        position,
        velocity: vec![],
        effort: vec![],
    })
}

/// The simulator's action for the latest command: twist × period, or the joint target's
/// pose relative to the controller's commanded pose.
fn action_for(
    motion: Motion,
    c: &Commands,
    env: &Env,
    robot: &RobotDescription,
    dt: f64,
) -> Action {
    let g = if c.gripper_closed { 1.0 } else { 0.0 };
    let hold = Action::new([0.0; 3], [0.0; 3], g);
    match motion {
        Motion::Twist(v) => Action::new(
            [(v[0] * dt) as f32, (v[1] * dt) as f32, (v[2] * dt) as f32],
            [(v[3] * dt) as f32, (v[4] * dt) as f32, (v[5] * dt) as f32],
            g,
        ),
        Motion::Joints => {
            let Some(ctrl) = env.controller() else {
                return hold;
            };
            if c.joints.len() != robot.chain.dof() {
                return hold;
            }
            let target = robot.chain.forward(&c.joints);
            let dp = target.translation.vector - ctrl.target.translation.vector;
            let rel: UnitQuaternion<f64> = target.rotation * ctrl.target.rotation.inverse();
            let (r, p, y) = rel.euler_angles();
            Action::new(
                [dp.x as f32, dp.y as f32, dp.z as f32],
                [r as f32, p as f32, y as f32],
                g,
            )
        }
    }
}

/// Joint state of the arm at the simulator's home pose (tool down at 0.45, 0, 0.25), gripper
/// open: what a robot at rest would publish (tests and benchmarks).
pub fn home_joint_state(robot: &RobotDescription) -> Result<JointState, String> {
    let home = vla_sim::SimConfig::default();
    let [x, y, z] = home.home_position;
    let target = nalgebra::Isometry3::from_parts(
        nalgebra::Translation3::new(x, y, z),
        vla_sim::kinematics::tool_down(0.0),
    );
    let sol = robot
        .chain
        .inverse(&target, &home.home_seed, &Default::default())
        .map_err(|e| e.to_string())?;
    if !sol.converged {
        return Err("home pose is not reachable".into());
    }
    let mut name: Vec<String> = robot.chain.joints.iter().map(|j| j.name.clone()).collect();
    let mut position = sol.joints;
    if let Some(g) = &robot.gripper {
        name.push(g.driver_joint.clone());
        position.push(g.upper);
    }
    Ok(JointState {
        header: Header::now("base_link"),
        name,
        position,
        velocity: vec![],
        effort: vec![],
    })
}

/// Run the episodes; returns the report. `stop` ends early (after the current step).
pub fn run<T: Transport>(
    t: &mut T,
    config: &BridgeConfig,
    opts: &SimOptions,
    stop: &AtomicBool,
) -> anyhow::Result<SimReport> {
    anyhow::ensure!(opts.episodes > 0, "episodes must be at least 1");
    anyhow::ensure!(
        opts.rate_hz.is_finite() && opts.rate_hz > 0.0,
        "rate_hz must be positive"
    );
    let topics = &config.topics;
    let out = Outputs {
        front: t.publisher(&topics.front_image, config.qos.images())?,
        wrist: t.publisher(&topics.wrist_image, config.qos.images())?,
        joints: t.publisher(&topics.joint_states, config.qos.joint_states())?,
        instruction: t.publisher(&topics.instruction, config.qos.instruction())?,
        success: t.publisher(&topics.success, config.qos.instruction())?,
    };
    let cmds = subscribe_commands(t, config, &opts.robot)?;
    let teleop = if opts.teleop {
        let teleop = Teleop::new(t, config)?;
        tracing::info!(
            "the scripted expert teleoperates over {} and marks episodes on {}",
            config.topics.twist,
            config.topics.episode
        );
        // The robot's own command subscriptions, and a recorder's, before the first marker.
        wait_for_listeners(
            || {
                [
                    teleop.episode.subscribers(),
                    teleop.twist.subscribers(),
                    out.front.subscribers(),
                    out.wrist.subscribers(),
                    out.joints.subscribers(),
                ]
            },
            opts.command_timeout,
            stop,
        );
        Some(teleop)
    } else {
        None
    };
    let lang = Language::builtin()?;
    let specs = episode_specs(
        &[opts.family.as_str()],
        opts.split,
        opts.episodes,
        opts.seed,
    );
    let first = make_task(&opts.family, opts.split, &lang, 0.0, 0)?;
    let mut venv = VecEnv::new(vec![Env::new(first, opts.env.clone(), opts.robot.clone())])?;
    let dt = opts.env.sim.control_dt();
    let period = Duration::from_secs_f64(1.0 / opts.rate_hz);
    let fresh = period + Duration::from_millis(100);
    let mut outcomes = Vec::new();
    let mut lines = Vec::new();
    let mut held = 0u64;
    'episodes: for spec in &specs {
        let task = make_task(&spec.family, spec.split, &lang, 0.0, spec.seed ^ 0xA5A5)?;
        venv.envs[0].set_task(task);
        let mut obs = venv.reset_one(0, spec.seed)?;
        let instruction = venv.envs[0].instruction().to_string();
        tracing::info!(seed = spec.seed, "episode {}: {instruction:?}", spec.index);
        out.instruction.publish(StringMsg {
            data: instruction.clone(),
        })?;
        out.success.publish(Bool { data: false })?;
        if let Ok(mut c) = cmds.lock() {
            // A new episode starts from an open gripper and no pending motion.
            c.latest = None;
            c.gripper_closed = false;
        }
        if let Some(teleop) = &teleop {
            // The instruction lands before the episode starts, as an operator reads it first.
            std::thread::sleep(period);
            teleop.mark("start")?;
        }
        let mut hasher = Sha256::new();
        hasher.update(spec.family.as_bytes());
        hasher.update(spec.seed.to_le_bytes());
        hasher.update(instruction.as_bytes());
        let mut next = Instant::now() + period;
        let mut first_tokens = None;
        let mut first_step = true;
        let mut reversals = Reversals::default();
        loop {
            if stop.load(Ordering::Relaxed) {
                break 'episodes;
            }
            let (seen, tokens_seen) = cmds.lock().map(|c| (c.seq, c.tokens_seq)).unwrap_or((0, 0));
            if let Some(js) = joint_state(&venv.envs[0], &opts.robot) {
                out.joints.publish(js)?;
            }
            out.front
                .publish(encode_raw(&obs.front, Header::now("front_camera")))?;
            out.wrist
                .publish(encode_raw(&obs.wrist, Header::now("wrist_camera")))?;
            if let Some(teleop) = &teleop {
                let action = venv.envs[0].expert_action()?;
                teleop.command(&action, dt, config)?;
            }
            let motion = if opts.lockstep {
                wait_for(&cmds, opts.command_timeout, stop, |c| {
                    (c.seq > seen).then_some(())
                });
                // The gripper travels on its own topic: give it a moment to land.
                std::thread::sleep(Duration::from_millis(3));
                if std::mem::take(&mut first_step) {
                    // The bridge publishes the tokens just after the command.
                    first_tokens = wait_for(&cmds, Duration::from_millis(100), stop, |c| {
                        (c.tokens_seq > tokens_seen).then(|| c.tokens.clone())
                    });
                }
                cmds.lock()
                    .ok()
                    .and_then(|c| (c.seq > seen).then_some(c.latest).flatten())
                    .map(|(m, _)| m)
            } else {
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
                next = Instant::now().max(next) + period;
                cmds.lock()
                    .ok()
                    .and_then(|c| c.latest)
                    .filter(|(_, at)| at.elapsed() <= fresh)
                    .map(|(m, _)| m)
            };
            let action = {
                let c = cmds
                    .lock()
                    .map_err(|_| anyhow::anyhow!("command lock poisoned"))?;
                match motion {
                    Some(m) => action_for(m, &c, &venv.envs[0], &opts.robot, dt),
                    None => {
                        held += 1;
                        let g = if c.gripper_closed { 1.0 } else { 0.0 };
                        Action::new([0.0; 3], [0.0; 3], g)
                    }
                }
            };
            for v in action.0 {
                hasher.update(v.to_bits().to_le_bytes());
            }
            reversals.step(&action);
            let mut results = venv.step(&[action])?;
            let Some(result) = results.pop() else {
                anyhow::bail!("the simulator returned no step result");
            };
            out.success.publish(Bool {
                data: result.success,
            })?;
            obs = result.observation;
            if result.terminated || result.truncated {
                if let Some(teleop) = &teleop {
                    teleop.mark(if result.success { "stop" } else { "discard" })?;
                }
                for state in venv.envs[0].object_states() {
                    for v in state.translation.iter().chain(state.rotation.iter()) {
                        hasher.update(v.to_bits().to_le_bytes());
                    }
                }
                tracing::info!(
                    success = result.success,
                    steps = result.info.step,
                    "episode {} done",
                    spec.index
                );
                lines.push(EpisodeLine {
                    seed: spec.seed,
                    instruction: instruction.clone(),
                    success: result.success,
                    steps: result.info.step,
                    first_tokens: first_tokens.take(),
                });
                outcomes.push(EpisodeOutcome {
                    spec: spec.clone(),
                    instruction: instruction.clone(),
                    success: result.success,
                    steps: result.info.step,
                    interventions: result.info.interventions,
                    digest: hasher
                        .finalize()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect(),
                    progress: result.reward,
                    reversals: reversals.count,
                    held_out: venv.envs[0].held_out().map(str::to_string),
                });
                break;
            }
        }
    }
    // Leave an empty instruction so a connected bridge holds.
    out.instruction.publish(StringMsg::default())?;
    let (received, rejected) = cmds.lock().map(|c| (c.seq, c.rejected)).unwrap_or((0, 0));
    Ok(SimReport {
        suite: SuiteReport::from_outcomes(&opts.family, opts.split, &outcomes),
        per_episode: lines,
        commands_received: received,
        commands_rejected: rejected,
        held_steps: held,
    })
}
