//! The bridge node: cameras, instruction and joint states in; the policy at a fixed rate on
//! the freshest frames; commands out through the safety chain; tokens, the policy's
//! sub-task and diagnostics.
//!
//! Each camera has a one-message "pending" slot filled by the transport's reader thread and
//! a decoder thread that always decodes (and resizes) the newest message into a one-frame
//! "latest" slot, so neither the readers nor a tick ever see a backlog: a frame replaced
//! before it was decoded or used is counted as dropped, never queued. The policy runs on a worker
//! thread; a tick waits for it at most `model_deadline` and holds otherwise, so a slow or
//! hung model never stalls the command stream (the watchdog then zeroes the twist).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use vla_core::{RgbImage, STATE_DIM};

use crate::config::{BridgeConfig, MotionOutput};
use crate::image::{decode_compressed_fit, decode_raw_fit, ImageError};
use crate::msg::{
    Bool, CompressedImage, DiagnosticArray, DiagnosticStatus, Header, Image, Int32MultiArray,
    JointState, KeyValue, MultiArrayLayout, StringMsg, Time,
};
use crate::output::{ForwardCommandOutput, JointOrder, JointTrajectoryOutput, TwistOutput};
use crate::safety::{
    ArmModel, Command, CommandSink, EstopHandle, Freshness, IkJointSink, Interventions,
    JointLimits, Motion, SafetyChain, SafetyInputs, SharedJoints, Twist,
};
use crate::transport::{Publisher, Qos, Transport};

/// What a policy reads and what its action means, in the bridge's terms (the CLI fills it
/// from the checkpoint's feature mapping).
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyIo {
    /// Camera names in the policy's order (`observation.images.NAME`), found in
    /// `control.cameras` (or front and wrist on their default topics).
    pub cameras: Vec<String>,
    pub state: StateLayout,
    pub action: ActionLayout,
}

impl PolicyIo {
    /// The simulator's policy: front and wrist, 13-number state, end-effector deltas.
    pub fn simulator() -> Self {
        PolicyIo {
            cameras: vec!["front".into(), "wrist".into()],
            state: StateLayout::Simulator,
            action: ActionLayout::EndEffectorDelta,
        }
    }
}

/// The state vector a policy reads.
#[derive(Clone, Debug, PartialEq)]
pub enum StateLayout {
    /// `vla_core::STATE_NAMES`: 6 joints, gripper opening, tool position and roll-pitch-yaw
    /// by forward kinematics on the URDF.
    Simulator,
    /// One entry per name: the position of the joint of that name (`NAME` or `NAME.pos`,
    /// LeRobot's motor naming) in `/joint_states`, any joint of the message.
    Joints(Vec<String>),
}

/// What a policy's action numbers command.
#[derive(Clone, Debug, PartialEq)]
pub enum ActionLayout {
    /// `[dx, dy, dz, droll, dpitch, dyaw, gripper]` over one control period (a twist).
    EndEffectorDelta,
    /// Absolute positions of the joints named by the non-gripper entries (`NAME` or
    /// `NAME.pos`, the URDF's joints in any order; names the URDF lacks are taken as its
    /// chain in order when there are as many), and an optional gripper closure in [0, 1].
    JointPositions {
        names: Vec<String>,
        gripper: Option<usize>,
    },
}

/// One observation for the policy: images in its camera order (already at its size), its
/// state vector, the instruction.
#[derive(Clone, Debug)]
pub struct PolicyInput {
    pub images: Vec<Arc<RgbImage>>,
    pub state: Vec<f32>,
    pub instruction: String,
}

/// What the policy returns for one observation.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyOutput {
    /// The action's numbers, as [`PolicyIo::action`] says.
    pub action: Vec<f32>,
    /// Raw action tokens (debug topic); empty when the source has none.
    pub tokens: Vec<i64>,
    /// The next step the policy said before this action; `None` for a policy without a plan.
    pub subtask: Option<String>,
}

/// Anything that maps observations to actions: the VLA policy (in the CLI, which links
/// libtorch), or a scripted source in tests. Runs on the bridge's worker thread.
pub trait ActionSource: Send {
    /// Square image side the policy wants; frames are resized to it on arrival (0 = keep).
    fn image_size(&self) -> u32 {
        0
    }
    /// What the policy reads and writes (default: the simulator's layout).
    fn io(&self) -> PolicyIo {
        PolicyIo::simulator()
    }
    /// Forget any context (called when the instruction changes).
    fn reset(&mut self);
    fn act(&mut self, obs: &PolicyInput) -> anyhow::Result<PolicyOutput>;
}

/// Strip LeRobot's `.pos` suffix from a joint entry's name.
fn joint_name(entry: &str) -> &str {
    entry.strip_suffix(".pos").unwrap_or(entry)
}

/// The action entry of each URDF chain joint, for a joint-space action with these entry
/// names (the gripper's left out). Errors say which names the URDF lacks.
fn joint_action_order(
    arm: &ArmModel,
    names: &[String],
    gripper: Option<usize>,
) -> anyhow::Result<Vec<usize>> {
    if let Some(g) = gripper {
        anyhow::ensure!(
            g < names.len(),
            "the policy's gripper dimension {g} is outside its {} action entries",
            names.len()
        );
    }
    let joints: Vec<(usize, &str)> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != gripper)
        .map(|(i, n)| (i, joint_name(n)))
        .collect();
    let chain = arm.joint_names();
    let found: Vec<Option<usize>> = joints
        .iter()
        .map(|(_, n)| chain.iter().position(|c| c == n))
        .collect();
    let dof = arm.chain.dof();
    let mut entries = vec![usize::MAX; dof];
    if found.iter().all(Option::is_some) && joints.len() == dof {
        for ((entry, _), c) in joints.iter().zip(&found) {
            if let Some(c) = c {
                entries[*c] = *entry;
            }
        }
        // Unset only when a name repeats.
        if entries.iter().all(|e| *e != usize::MAX) {
            return Ok(entries);
        }
    } else if found.iter().all(Option::is_none) && joints.len() == dof {
        tracing::info!(
            policy = ?joints.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
            urdf = ?chain,
            "the policy's joint names are not the URDF's: its entries are taken as the chain in order"
        );
        return Ok(joints.iter().map(|(e, _)| *e).collect());
    }
    anyhow::bail!(
        "the policy's action joints ({}) are not the URDF's arm joints ({}): set robot.urdf to \
         the robot the policy was trained on",
        joints
            .iter()
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join(", "),
        chain.join(", ")
    )
}

#[derive(Clone)]
struct Frame {
    image: Arc<RgbImage>,
    seq: u64,
    /// Stamp in the message header (the camera's clock).
    stamp: Time,
    /// When the decoded frame was ready for a tick.
    ready: Instant,
    used: bool,
}

#[derive(Default)]
struct Latest {
    /// The newest decoded frame of each camera (the policy's order).
    frames: Vec<Option<Frame>>,
    instruction: String,
    instruction_version: u64,
}

/// Counters of everything the node did, published on `/diagnostics` and returned by
/// [`Bridge::stats`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct BridgeStats {
    /// Camera messages received, per camera.
    pub frames_in: BTreeMap<String, u64>,
    /// Frames replaced by a newer one before any tick used them (by design at 30 Hz in,
    /// 10 Hz out; never queued).
    pub frames_dropped: u64,
    /// Malformed camera messages, dropped.
    pub frames_rejected: u64,
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Samples the transport could not deserialise.
    pub receive_errors: u64,
    pub joint_states_rejected: u64,
    pub instructions: u64,
    pub ticks: u64,
    /// Ticks skipped because `require_new_frames` found no new frames.
    pub ticks_skipped: u64,
    pub inferences: u64,
    /// Model outputs that arrived after their tick's deadline (discarded).
    pub late_outputs: u64,
    pub model_errors: u64,
    pub commands: u64,
    /// Commands that were a stop (hold): no instruction, no images, watchdog, e-stop, …
    pub holds: u64,
    /// Camera messages decoded and resized (on the decoder threads), and how long it took.
    pub decodes: u64,
    pub decode_ms_mean: f64,
    pub decode_ms_max: f64,
    pub inference_ms_last: f64,
    pub inference_ms_mean: f64,
    pub inference_ms_max: f64,
    pub interventions: BTreeMap<String, u64>,
    pub estop_latched: bool,
}

/// One tick, for latency measurements (`vla bench ros`).
#[derive(Clone, Debug)]
pub struct TickRecord {
    /// Header stamp of the first camera's frame (the camera's clock).
    pub camera_stamp: Time,
    /// When that frame was decoded and ready.
    pub camera_ready: Instant,
    pub tick_start: Instant,
    pub model: Duration,
    /// Header stamp of the published TwistStamped (wall clock at publication).
    pub published_stamp: Time,
    pub published_at: Instant,
}

type Probe = Box<dyn FnMut(&TickRecord) + Send>;

enum Job {
    Reset,
    Act(Box<PolicyInput>, u64),
}

struct Done {
    seq: u64,
    result: Result<PolicyOutput, String>,
    took: Duration,
}

/// The policy on its own thread, one request in flight at most.
struct Worker {
    jobs: mpsc::Sender<Job>,
    done: mpsc::Receiver<Done>,
    outstanding: Option<u64>,
    next_seq: u64,
}

impl Worker {
    fn spawn(mut source: Box<dyn ActionSource>) -> anyhow::Result<Self> {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (done_tx, done) = mpsc::channel::<Done>();
        std::thread::Builder::new()
            .name("vla-policy".into())
            .spawn(move || {
                for job in job_rx {
                    match job {
                        Job::Reset => source.reset(),
                        Job::Act(obs, seq) => {
                            let t0 = Instant::now();
                            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                source.act(&obs)
                            }));
                            let result = match r {
                                Ok(Ok(out)) => Ok(out),
                                Ok(Err(e)) => Err(format!("{e:#}")),
                                Err(_) => Err("the policy panicked".into()),
                            };
                            if done_tx
                                .send(Done {
                                    seq,
                                    result,
                                    took: t0.elapsed(),
                                })
                                .is_err()
                            {
                                break;
                            }
                        }
                    }
                }
            })?;
        Ok(Worker {
            jobs,
            done,
            outstanding: None,
            next_seq: 0,
        })
    }
}

/// A camera message waiting to be decoded (only the newest is kept).
enum Encoded {
    Raw(Image),
    Compressed(CompressedImage),
}

/// Per camera: the newest undecoded message and a bell for its decoder thread.
#[derive(Default)]
struct Pending {
    slot: Mutex<Option<Encoded>>,
    bell: std::sync::Condvar,
}

struct Shared {
    latest: Mutex<Latest>,
    stats: Mutex<BridgeStats>,
    freshness: Freshness,
    size: u32,
    /// Camera names, in the policy's order (indices into `pending` and `Latest::frames`).
    cameras: Vec<String>,
    pending: Vec<Pending>,
}

impl Shared {
    fn stat(&self, f: impl FnOnce(&mut BridgeStats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(&mut s);
        }
    }

    fn reject(&self, camera: usize, e: &ImageError) {
        let name = &self.cameras[camera];
        let mut first = false;
        self.stat(|s| {
            s.frames_rejected += 1;
            let n = s
                .rejected_by_reason
                .entry(e.kind().to_string())
                .or_default();
            *n += 1;
            first = *n <= 3;
        });
        if first {
            tracing::warn!("dropped a malformed {name} camera message: {e}");
        }
    }

    /// Called on the transport's reader thread: park the message for the decoder, replacing
    /// (and counting as dropped) one that was not decoded yet. Never blocks on decoding.
    fn arrive(&self, camera: usize, msg: Encoded) {
        let checked = match &msg {
            Encoded::Raw(m) => crate::image::validate_raw(m).map(|_| ()),
            Encoded::Compressed(m) => crate::image::validate_compressed(m),
        };
        let name = &self.cameras[camera];
        if let Err(e) = checked {
            self.stat(|s| *s.frames_in.entry(name.clone()).or_default() += 1);
            return self.reject(camera, &e);
        }
        let p = &self.pending[camera];
        let replaced = match p.slot.lock() {
            Ok(mut slot) => slot.replace(msg).is_some(),
            Err(_) => return,
        };
        p.bell.notify_one();
        self.stat(|s| {
            *s.frames_in.entry(name.clone()).or_default() += 1;
            s.frames_dropped += replaced as u64;
        });
    }

    /// Decoder thread of one camera: always decodes the newest message, so decoding slower
    /// than the camera rate drops frames instead of building a queue. Ends with the bridge.
    fn decode_loop(shared: std::sync::Weak<Shared>, camera: usize) {
        loop {
            let Some(me) = shared.upgrade() else { return };
            let p = &me.pending[camera];
            let msg = match p.slot.lock() {
                Ok(mut slot) => {
                    if slot.is_none() {
                        slot = match p.bell.wait_timeout(slot, Duration::from_millis(100)) {
                            Ok((g, _)) => g,
                            Err(_) => return,
                        };
                    }
                    slot.take()
                }
                Err(_) => return,
            };
            let t0 = Instant::now();
            match msg {
                Some(Encoded::Raw(m)) => {
                    me.frame(camera, decode_raw_fit(&m, me.size), m.header.stamp)
                }
                Some(Encoded::Compressed(m)) => {
                    me.frame(camera, decode_compressed_fit(&m, me.size), m.header.stamp)
                }
                None => continue,
            }
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            me.stat(|s| {
                s.decodes += 1;
                s.decode_ms_mean += (ms - s.decode_ms_mean) / s.decodes as f64;
                s.decode_ms_max = s.decode_ms_max.max(ms);
            });
        }
    }

    /// Whether every received camera message has been decoded (tests).
    fn settled(&self) -> bool {
        self.pending
            .iter()
            .all(|p| p.slot.lock().map(|s| s.is_none()).unwrap_or(true))
    }

    /// Store a decoded frame, already at the policy's size.
    fn frame(&self, camera: usize, decoded: Result<RgbImage, ImageError>, stamp: Time) {
        let image = match decoded {
            Ok(img) => img,
            Err(e) => return self.reject(camera, &e),
        };
        let ready = Instant::now();
        let mut dropped = false;
        let mut all = None;
        if let Ok(mut l) = self.latest.lock() {
            let Some(slot) = l.frames.get_mut(camera) else {
                return;
            };
            let seq = slot.as_ref().map_or(1, |f| f.seq + 1);
            dropped = slot.as_ref().is_some_and(|f| !f.used);
            *slot = Some(Frame {
                image: Arc::new(image),
                seq,
                stamp,
                ready,
                used: false,
            });
            // The images are as fresh as the oldest camera's newest frame.
            all = l
                .frames
                .iter()
                .map(|f| f.as_ref().map(|f| f.ready))
                .collect::<Option<Vec<_>>>()
                .and_then(|t| t.into_iter().min());
        }
        self.stat(|s| s.frames_dropped += dropped as u64);
        if let Some(t) = all {
            self.freshness.images(t);
        }
    }
}

/// The node. Build with [`Bridge::new`], then [`Bridge::run`] (or [`Bridge::tick`]).
pub struct Bridge {
    config: BridgeConfig,
    shared: Arc<Shared>,
    arm: Arc<ArmModel>,
    joints: SharedJoints,
    estop: EstopHandle,
    counts: Arc<Interventions>,
    chain: Box<dyn CommandSink>,
    tokens: Box<dyn Publisher<Int32MultiArray>>,
    diagnostics: Box<dyn Publisher<DiagnosticArray>>,
    subtask: Box<dyn Publisher<StringMsg>>,
    /// The sub-task last published (cleared when the instruction changes).
    last_subtask: Option<String>,
    io: PolicyIo,
    /// Each camera's topics (raw or `…/compressed`), in the policy's order.
    camera_topics: Vec<Vec<String>>,
    /// A joint-space policy's action: the entry of each chain joint, the gripper's.
    joint_action: Option<(Vec<usize>, Option<usize>)>,
    /// State entries not found in `/joint_states` (warned once each).
    missing_state: std::collections::BTreeSet<String>,
    worker: Worker,
    seen_instruction: u64,
    /// Sequence numbers of the frames the last inference used, per camera.
    last_used: Vec<u64>,
    inference_total_ms: f64,
    probe: Option<Probe>,
    last_diagnostics: Instant,
}

impl Bridge {
    pub fn new<T: Transport>(
        transport: &mut T,
        config: BridgeConfig,
        source: Box<dyn ActionSource>,
    ) -> anyhow::Result<Self> {
        let robot = config.robot().map_err(anyhow::Error::msg)?;
        let arm = Arc::new(ArmModel::from_description(&robot));
        let io = source.io();
        anyhow::ensure!(!io.cameras.is_empty(), "the policy reads no camera");
        let configured = config.camera_topics().map_err(anyhow::Error::msg)?;
        let camera_topics: Vec<Vec<String>> = io
            .cameras
            .iter()
            .map(|name| {
                configured
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, t)| t.clone())
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "the policy reads the cameras {}; control.cameras has no {name:?} \
                             (set control.cameras = [\"{name}=/its/image_raw\", …] in the \
                             policy's camera order)",
                            io.cameras.join(", ")
                        )
                    })
            })
            .collect::<anyhow::Result<_>>()?;
        let joint_action = match &io.action {
            ActionLayout::EndEffectorDelta => None,
            ActionLayout::JointPositions { names, gripper } => {
                anyhow::ensure!(
                    config.output.motion != MotionOutput::Twist,
                    "the policy commands joint positions: set output.motion = \
                     \"joint_trajectory\" or \"forward_command\""
                );
                Some((joint_action_order(&arm, names, *gripper)?, *gripper))
            }
        };
        let joint_order = match &joint_action {
            // The controller's order is the policy's: the order it was recorded in.
            Some((entries, _)) => {
                let chain = arm.joint_names();
                let mut by_entry: Vec<usize> = (0..entries.len()).collect();
                by_entry.sort_by_key(|&c| entries[c]);
                JointOrder {
                    names: by_entry.iter().map(|&c| chain[c].clone()).collect(),
                    chain_index: by_entry,
                }
            }
            None => JointOrder::chain(&arm),
        };
        let joints: SharedJoints = Arc::new(Mutex::new(None));
        let estop = EstopHandle::new();
        let counts = Arc::new(Interventions::default());
        let freshness = Freshness::new();
        let shared = Arc::new(Shared {
            latest: Mutex::new(Latest {
                frames: vec![None; io.cameras.len()],
                ..Latest::default()
            }),
            stats: Mutex::new(BridgeStats::default()),
            freshness: freshness.clone(),
            size: source.image_size(),
            cameras: io.cameras.clone(),
            pending: io.cameras.iter().map(|_| Pending::default()).collect(),
        });
        for camera in 0..io.cameras.len() {
            let weak = Arc::downgrade(&shared);
            std::thread::Builder::new()
                .name(format!("decode-{}", io.cameras[camera]))
                .spawn(move || Shared::decode_loop(weak, camera))?;
        }
        let inputs = SafetyInputs {
            arm: arm.clone(),
            joints: joints.clone(),
            freshness: freshness.clone(),
            estop: estop.clone(),
            counts: counts.clone(),
        };
        let period = config.control.period_s;
        let (dog, itime) = (config.watchdog_timeout(), config.instruction_timeout());
        let chain = match config.output.motion {
            MotionOutput::Twist => SafetyChain::new(
                TwistOutput::new(transport, &config)?,
                &config.limits,
                period,
                dog,
                itime,
                &inputs,
            ),
            // Joint outputs: an end-effector policy's twists become joint targets by IK
            // (a joint-space policy's pass through), clamped to the URDF's limits once more
            // after IK; a stop holds the last commanded joints.
            MotionOutput::JointTrajectory | MotionOutput::ForwardCommand => {
                let out: Box<dyn CommandSink> =
                    if config.output.motion == MotionOutput::JointTrajectory {
                        Box::new(JointTrajectoryOutput::new(transport, &config, joint_order)?)
                    } else {
                        Box::new(ForwardCommandOutput::new(transport, &config, joint_order)?)
                    };
                let clamp = JointLimits::new(
                    out,
                    arm.clone(),
                    joints.clone(),
                    config.limits.joint_margin,
                    period,
                    counts.clone(),
                );
                let ik = IkJointSink::new(clamp, arm.clone(), joints.clone(), period);
                SafetyChain::new(ik, &config.limits, period, dog, itime, &inputs)
            }
        };
        let tokens = transport.publisher(&config.topics.action_tokens, Qos::reliable(10))?;
        let diagnostics = transport.publisher(&config.topics.diagnostics, Qos::reliable(10))?;
        // Latched like the instruction: an operator display started late still shows it.
        let subtask = transport.publisher(&config.topics.subtask, config.qos.instruction())?;
        let bridge = Bridge {
            worker: Worker::spawn(source)?,
            config,
            shared,
            arm,
            joints,
            estop,
            counts,
            chain,
            tokens,
            diagnostics,
            subtask,
            last_subtask: None,
            last_used: vec![0; io.cameras.len()],
            io,
            camera_topics,
            joint_action,
            missing_state: Default::default(),
            seen_instruction: 0,
            inference_total_ms: 0.0,
            probe: None,
            last_diagnostics: Instant::now(),
        };
        bridge.subscribe(transport)?;
        tracing::info!(
            motion = ?bridge.config.output.motion,
            rate_hz = bridge.config.control.rate_hz,
            "bridge ready"
        );
        Ok(bridge)
    }

    fn subscribe<T: Transport>(&self, t: &mut T) -> anyhow::Result<()> {
        let topics = self.config.topics.clone();
        let q = &self.config.qos;
        for (camera, camera_topics) in self.camera_topics.iter().enumerate() {
            for topic in camera_topics {
                let s = self.shared.clone();
                // image_transport's naming: `…/compressed` carries CompressedImage.
                if topic.ends_with("/compressed") {
                    t.subscribe::<CompressedImage>(
                        topic,
                        q.images(),
                        Box::new(move |m| match m {
                            Ok(m) => s.arrive(camera, Encoded::Compressed(m)),
                            Err(e) => {
                                tracing::debug!("{e}");
                                s.stat(|st| st.receive_errors += 1)
                            }
                        }),
                    )?;
                } else {
                    t.subscribe::<Image>(
                        topic,
                        q.images(),
                        Box::new(move |m| match m {
                            Ok(m) => s.arrive(camera, Encoded::Raw(m)),
                            Err(e) => {
                                tracing::debug!("{e}");
                                s.stat(|st| st.receive_errors += 1)
                            }
                        }),
                    )?;
                }
            }
        }
        let s = self.shared.clone();
        t.subscribe::<StringMsg>(
            &topics.instruction,
            q.instruction(),
            Box::new(move |m| match m {
                Ok(m) => {
                    let text = m.data.trim().to_string();
                    let mut changed = false;
                    if let Ok(mut l) = s.latest.lock() {
                        if l.instruction != text {
                            l.instruction = text.clone();
                            l.instruction_version += 1;
                            changed = true;
                        }
                    }
                    s.freshness
                        .instruction((!text.is_empty()).then(Instant::now));
                    s.stat(|st| st.instructions += 1);
                    if changed {
                        tracing::info!("instruction: {text:?}");
                    }
                }
                Err(e) => {
                    tracing::debug!("{e}");
                    s.stat(|st| st.receive_errors += 1)
                }
            }),
        )?;
        let (s, arm, joints) = (self.shared.clone(), self.arm.clone(), self.joints.clone());
        t.subscribe::<JointState>(
            &topics.joint_states,
            q.joint_states(),
            Box::new(
                move |m| match m.map_err(|e| e.to_string()).and_then(|m| arm.snapshot(&m)) {
                    Ok(snap) => {
                        if let Ok(mut j) = joints.lock() {
                            *j = Some(snap);
                        }
                    }
                    Err(e) => {
                        tracing::debug!("rejected joint state: {e}");
                        s.stat(|st| st.joint_states_rejected += 1)
                    }
                },
            ),
        )?;
        let estop = self.estop.clone();
        t.subscribe::<Bool>(
            &topics.estop,
            Qos::reliable(10),
            Box::new(move |m| {
                if let Ok(Bool { data: true }) = m {
                    estop.trigger();
                }
            }),
        )?;
        let estop = self.estop.clone();
        t.subscribe::<Bool>(
            &topics.estop_reset,
            Qos::reliable(10),
            Box::new(move |m| {
                if let Ok(Bool { data: true }) = m {
                    estop.clear();
                }
            }),
        )?;
        Ok(())
    }

    /// Wait until every received camera message is decoded (tests; false on timeout).
    pub fn settle(&self, timeout: Duration) -> bool {
        let t0 = Instant::now();
        while !self.shared.settled() {
            if t0.elapsed() > timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // The decoder may still be storing the frame it just took.
        std::thread::sleep(Duration::from_millis(20));
        true
    }

    /// The latched emergency stop (trigger/clear from code as well as topics).
    pub fn estop(&self) -> EstopHandle {
        self.estop.clone()
    }

    /// Called after every tick that published a command (benchmarks).
    pub fn set_probe(&mut self, probe: Probe) {
        self.probe = Some(probe);
    }

    pub fn stats(&self) -> BridgeStats {
        let mut s = self
            .shared
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        s.interventions = self
            .counts
            .snapshot()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        s.estop_latched = self.estop.is_latched();
        s
    }

    /// Run at `control.rate_hz` until `stop` is set. Missed deadlines are skipped, never
    /// caught up in a burst.
    pub fn run(&mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        let period = self.config.loop_period();
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if let Err(e) = self.tick() {
                tracing::warn!("tick failed: {e:#}");
            }
            next += period;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else {
                next = now;
            }
        }
        // Leave the robot holding.
        let _ = self.chain.send(Command::stop());
        Ok(())
    }

    /// The state vector the policy reads ([`StateLayout`]); `None` (hold) before a joint
    /// state arrived or while it lacks a joint the policy reads.
    fn state(&mut self) -> Option<Vec<f32>> {
        let snap = self.joints.lock().ok()?.clone()?;
        let names = match &self.io.state {
            StateLayout::Simulator => {
                let mut s = vec![0.0f32; STATE_DIM];
                for (i, v) in snap.positions.iter().take(6).enumerate() {
                    s[i] = *v as f32;
                }
                s[6] = (2.0 * snap.finger.unwrap_or(0.0)) as f32;
                let pose = self.arm.tool_pose(&snap.positions);
                let t = pose.translation.vector;
                let rpy = vla_kinematics::rpy(&pose.rotation);
                s[7..10].copy_from_slice(&[t.x as f32, t.y as f32, t.z as f32]);
                s[10..13].copy_from_slice(&[rpy[0] as f32, rpy[1] as f32, rpy[2] as f32]);
                return Some(s);
            }
            StateLayout::Joints(names) => names,
        };
        let mut state = Vec::with_capacity(names.len());
        for entry in names {
            let name = joint_name(entry);
            match snap.named.iter().find(|(n, _)| n == name) {
                Some((_, v)) => state.push(*v as f32),
                None => {
                    if self.missing_state.insert(name.to_string()) {
                        tracing::warn!(
                            "the policy's state entry {entry:?} has no joint {name:?} in {}: holding",
                            self.config.topics.joint_states
                        );
                    }
                    return None;
                }
            }
        }
        Some(state)
    }

    /// The command for a policy's action numbers; `None` when they are not as many as
    /// the policy's layout says.
    fn command(&self, action: &[f32]) -> Option<Command> {
        let period = self.config.control.period_s;
        let a: Vec<f64> = action.iter().map(|v| *v as f64).collect();
        match &self.joint_action {
            None => {
                if a.len() != vla_core::ACTION_DIM {
                    return None;
                }
                let g = a[6];
                Some(Command::twist(
                    Twist {
                        linear: [a[0] / period, a[1] / period, a[2] / period],
                        angular: [a[3] / period, a[4] / period, a[5] / period],
                    },
                    // Binary gripper, thresholded as the simulator does; NaN stays NaN (→ guard).
                    Some(if g.is_nan() {
                        g
                    } else {
                        (g >= 0.5) as u8 as f64
                    }),
                ))
            }
            Some((entries, gripper)) => {
                let expected = entries.len() + gripper.is_some() as usize;
                if a.len() != expected {
                    return None;
                }
                Some(Command {
                    motion: Motion::Joints {
                        positions: entries.iter().map(|&e| a[e]).collect(),
                        duration: period,
                    },
                    // A closure; the gripper rate limit keeps it in [0, 1].
                    gripper: gripper.map(|g| a[g]),
                })
            }
        }
    }

    fn hold(&mut self) -> anyhow::Result<()> {
        let done = self.chain.send(Command::stop())?;
        self.shared.stat(|s| {
            s.commands += 1;
            s.holds += done.is_stop() as u64;
        });
        Ok(())
    }

    fn record_inference(&mut self, took: Duration) {
        let ms = took.as_secs_f64() * 1e3;
        self.inference_total_ms += ms;
        let total = self.inference_total_ms;
        self.shared.stat(|s| {
            s.inferences += 1;
            s.inference_ms_last = ms;
            s.inference_ms_max = s.inference_ms_max.max(ms);
            s.inference_ms_mean = total / s.inferences as f64;
        });
    }

    /// One control step.
    pub fn tick(&mut self) -> anyhow::Result<()> {
        let tick_start = Instant::now();
        self.shared.stat(|s| s.ticks += 1);
        if self.last_diagnostics.elapsed() >= Duration::from_secs(1) {
            self.publish_diagnostics();
        }
        // A late answer from an earlier tick: too old to act on.
        if self.worker.outstanding.is_some() {
            match self.worker.done.try_recv() {
                Ok(done) => {
                    self.worker.outstanding = None;
                    self.record_inference(done.took);
                    self.shared.stat(|s| s.late_outputs += 1);
                }
                Err(mpsc::TryRecvError::Empty) if self.config.control.require_new_frames => {
                    return Ok(())
                }
                Err(mpsc::TryRecvError::Empty) => return self.hold(),
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.shared.stat(|s| s.model_errors += 1);
                    return self.hold();
                }
            }
        }
        let (frames, instruction, version) = {
            let mut l = self
                .shared
                .latest
                .lock()
                .map_err(|_| anyhow::anyhow!("frame lock poisoned"))?;
            let frames: Vec<Option<Frame>> = l
                .frames
                .iter_mut()
                .map(|f| {
                    f.as_mut().map(|f| {
                        f.used = true;
                        f.clone()
                    })
                })
                .collect();
            (frames, l.instruction.clone(), l.instruction_version)
        };
        if version != self.seen_instruction {
            self.seen_instruction = version;
            self.last_subtask = None;
            let _ = self.worker.jobs.send(Job::Reset);
        }
        if self.config.control.require_new_frames {
            // Lock-step partner: publish only commands computed from new frames (a hold
            // published before the first frame would be executed as a step).
            let fresh = frames
                .iter()
                .zip(&self.last_used)
                .all(|(f, used)| f.as_ref().is_some_and(|f| f.seq != *used));
            if !fresh || instruction.is_empty() {
                self.shared.stat(|s| s.ticks_skipped += 1);
                return Ok(());
            }
        }
        let Some(frames) = frames.into_iter().collect::<Option<Vec<Frame>>>() else {
            return self.hold();
        };
        if instruction.is_empty() {
            return self.hold();
        }
        self.last_used = frames.iter().map(|f| f.seq).collect();
        let Some(state) = self.state() else {
            return self.hold();
        };
        let obs = PolicyInput {
            images: frames.iter().map(|f| f.image.clone()).collect(),
            state,
            instruction,
        };
        let seq = self.worker.next_seq;
        self.worker.next_seq += 1;
        if self.worker.jobs.send(Job::Act(Box::new(obs), seq)).is_err() {
            self.shared.stat(|s| s.model_errors += 1);
            return self.hold();
        }
        self.worker.outstanding = Some(seq);
        let deadline = self.config.model_deadline();
        let wait = deadline.saturating_sub(tick_start.elapsed());
        let done = match self.worker.done.recv_timeout(wait) {
            Ok(d) if d.seq == seq => d,
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => return self.hold(),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                self.worker.outstanding = None;
                self.shared.stat(|s| s.model_errors += 1);
                return self.hold();
            }
        };
        self.worker.outstanding = None;
        self.record_inference(done.took);
        let out = match done.result {
            Ok(out) => out,
            Err(e) => {
                tracing::warn!("policy failed: {e}");
                self.shared.stat(|s| s.model_errors += 1);
                return self.hold();
            }
        };
        let Some(cmd) = self.command(&out.action) else {
            tracing::warn!(
                "the policy returned {} action numbers; its layout is {:?}",
                out.action.len(),
                self.io.action
            );
            self.shared.stat(|s| s.model_errors += 1);
            return self.hold();
        };
        self.shared.freshness.model(Instant::now());
        let published_stamp = Time::now();
        let done_cmd = self.chain.send(cmd)?;
        let published_at = Instant::now();
        self.shared.stat(|s| {
            s.commands += 1;
            s.holds += done_cmd.is_stop() as u64;
        });
        if !out.tokens.is_empty() {
            let data: Vec<i32> = out
                .tokens
                .iter()
                .map(|t| (*t).clamp(i32::MIN as i64, i32::MAX as i64) as i32)
                .collect();
            let msg = Int32MultiArray {
                layout: MultiArrayLayout::vector("action_tokens", data.len()),
                data,
            };
            if let Err(e) = self.tokens.publish(msg) {
                tracing::debug!("{e}");
            }
        }
        // Published on change only (and first per instruction): for operators, not a 10 Hz stream.
        if let Some(text) = out
            .subtask
            .filter(|t| self.last_subtask.as_ref() != Some(t))
        {
            tracing::info!("sub-task: {text:?}");
            match self.subtask.publish(StringMsg { data: text.clone() }) {
                Ok(()) => self.last_subtask = Some(text),
                Err(e) => tracing::debug!("{e}"),
            }
        }
        if let Some(probe) = self.probe.as_mut() {
            probe(&TickRecord {
                camera_stamp: frames[0].stamp,
                camera_ready: frames[0].ready,
                tick_start,
                model: done.took,
                published_stamp,
                published_at,
            });
        }
        Ok(())
    }

    /// Publish the counters on `/diagnostics`.
    pub fn publish_diagnostics(&mut self) {
        self.last_diagnostics = Instant::now();
        let s = self.stats();
        let level = if s.estop_latched {
            DiagnosticStatus::ERROR
        } else if s.frames_rejected > 0 || s.model_errors > 0 {
            DiagnosticStatus::WARN
        } else {
            DiagnosticStatus::OK
        };
        let mut values = Vec::new();
        if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(&s) {
            for (k, v) in map {
                match v {
                    serde_json::Value::Object(inner) => {
                        for (k2, v2) in inner {
                            values.push(KeyValue {
                                key: format!("{k}.{k2}"),
                                value: v2.to_string(),
                            });
                        }
                    }
                    other => values.push(KeyValue {
                        key: k,
                        value: other.to_string(),
                    }),
                }
            }
        }
        let msg = DiagnosticArray {
            header: Header::now(""),
            status: vec![DiagnosticStatus {
                level,
                name: format!("{}: policy bridge", self.config.node.name),
                message: if s.estop_latched {
                    "emergency stop latched".into()
                } else {
                    "running".into()
                },
                hardware_id: "vla".into(),
                values,
            }],
        };
        if let Err(e) = self.diagnostics.publish(msg) {
            tracing::debug!("{e}");
        }
    }
}

#[cfg(test)]
mod tests;
