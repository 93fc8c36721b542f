//! `vla ros record`: demonstrations recorded on a ROS 2 robot, sampled on one clock.
//!
//! The recorder subscribes to the cameras of `record.cameras` (`sensor_msgs/Image`, or
//! `sensor_msgs/CompressedImage` for a topic ending in `/compressed`, image_transport's
//! convention), `topics.joint_states`, the teleoperator's command stream (`record.command`:
//! MoveIt Servo's `TwistStamped` on `topics.twist`, a `JointTrajectory` on
//! `topics.joint_trajectory` or a forward-command `Float64MultiArray` on
//! `topics.forward_command`), the gripper command (`output.gripper` on `topics.gripper`), the
//! instruction and the episode markers (`topics.episode`, `std_msgs/String`: `start`, `stop`,
//! `discard`). Subscription callbacks only keep the latest message of each data topic with the
//! instant it arrived. Markers, instructions and the keyboard's commands go through one
//! channel, so they are handled in the order they came.
//!
//! **Sampling** ([`Recorder::tick`]): the caller ticks at `record.fps` on its monotonic clock.
//! At a tick inside an episode, every data topic (cameras, joint states, command) contributes
//! its latest message. A topic whose latest message is older than `record.tolerance_s`, or
//! that has none yet, is stale: the tick is dropped and counted per topic. These are the rules
//! `vla dataset from-mcap` applies to a bag on its log-time clock. The gripper command is a
//! setting, not a stream: the latest one holds (open until the first).
//!
//! **Layouts** (`record.layout`):
//! - `vla`: the policy's own vocabulary, so `vla train` reads a recording as it reads
//!   `vla collect`'s. The state is the 6 arm joints, the gripper opening (twice the driven
//!   finger's travel) and the tool pose by forward kinematics on `robot.urdf`. The action is
//!   the end-effector delta the command asks for over one control period
//!   (`control.period_s`): a twist times the period, or a joint target's tool pose relative to
//!   the measured one. Then the gripper closure (`output`'s open/closed positions).
//! - `raw`: the joint state's positions in message order, and the command's numbers as they
//!   come (twist: linear then angular; trajectory: the last point's positions; array: its data),
//!   then the gripper closure when a gripper topic is configured.
//!
//! **Episodes**: `start` begins one (ending one in progress, which is kept), `stop` ends it,
//! `discard` drops it. A `stop` or `discard` outside an episode is ignored and counted. These
//! are the marker rules of a bag. An episode's task is `--task`, else the last instruction in
//! force during it: an instruction cleared before its `stop` (a node done with its run; DDS
//! does not order one topic's messages against another's) does not take it away.

use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nalgebra::UnitQuaternion;
use serde::{Deserialize, Serialize};
use vla_core::RgbImage;
use vla_kinematics::RobotDescription;

use crate::config::{BridgeConfig, GripperOutput, OutputSection};
use crate::image::{decode_compressed, decode_raw};
use crate::mcap_import::Marker;
use crate::msg::{
    CompressedImage, Float64MultiArray, GripperCommand, Image, JointState, JointTrajectory,
    StringMsg, TwistStamped,
};
use crate::safety::ArmModel;
use crate::transport::{Qos, Transport, TransportError};

/// What a recording's state and action are made of (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordLayout {
    Vla,
    Raw,
}

/// The teleoperator's command stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandInput {
    /// `geometry_msgs/TwistStamped` on `topics.twist` (MoveIt Servo).
    Twist,
    /// `trajectory_msgs/JointTrajectory` on `topics.joint_trajectory` (ros2_control).
    JointTrajectory,
    /// `std_msgs/Float64MultiArray` on `topics.forward_command` (forward command controller),
    /// joint positions in the URDF's order.
    Float64MultiArray,
}

/// The `[record]` section of the bridge config.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordSection {
    /// Frames per second, on the recorder's clock.
    pub fps: u32,
    /// A data topic whose latest message is older than this at a tick is stale (s).
    pub tolerance_s: f64,
    /// Cameras as `NAME=TOPIC`, recorded as `observation.images.NAME`.
    pub cameras: Vec<String>,
    pub command: CommandInput,
    pub layout: RecordLayout,
}

impl RecordSection {
    /// The cameras as (name, topic); errors name the entry.
    pub fn camera_topics(&self) -> Result<Vec<(String, String)>, String> {
        let out = crate::config::parse_cameras("record.cameras", &self.cameras)?;
        if out.is_empty() {
            return Err("record.cameras is empty: a recording needs at least one camera".into());
        }
        Ok(out)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.fps == 0 {
            return Err("record.fps must be at least 1".into());
        }
        if !(self.tolerance_s.is_finite() && self.tolerance_s > 0.0) {
            return Err(format!(
                "record.tolerance_s = {} must be positive and finite",
                self.tolerance_s
            ));
        }
        self.camera_topics().map(|_| ())
    }
}

/// What the keyboard, a marker or the instruction topic asks of the recorder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    Marker(Marker),
    Instruction(String),
    /// A marker that is none of the three words (counted, ignored).
    UnknownMarker(String),
    /// End the recording (the episode in progress is discarded).
    Quit,
}

impl Control {
    /// A line typed at the keyboard: `s`/`start`, `e`/`stop`, `d`/`discard`, `q`/`quit`.
    pub fn from_key(line: &str) -> Option<Self> {
        match line.trim().to_ascii_lowercase().as_str() {
            "s" | "start" => Some(Control::Marker(Marker::Start)),
            "e" | "stop" => Some(Control::Marker(Marker::Stop)),
            "d" | "discard" => Some(Control::Marker(Marker::Discard)),
            "q" | "quit" => Some(Control::Quit),
            _ => None,
        }
    }
}

/// One sampled frame.
#[derive(Clone, Debug)]
pub struct RecordedFrame {
    /// One image per camera, in `record.cameras` order.
    pub images: Vec<(String, RgbImage)>,
    pub state: Vec<f32>,
    pub action: Vec<f32>,
}

/// What a tick did, in order.
#[derive(Clone, Debug)]
pub enum RecordEvent {
    Started,
    Frame(RecordedFrame),
    /// The tick was dropped: these topics were stale.
    Dropped(Vec<String>),
    /// The episode ended and is kept, with its frames so far.
    Saved {
        task: String,
        frames: usize,
    },
    /// The episode in progress was dropped (`discard`, or a quit).
    Discarded {
        frames: usize,
    },
    Quit,
}

/// Why the recording cannot go on. Names the topic.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{topic}: {detail}")]
    Topic { topic: String, detail: String },
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// Counters of a recording (the report and the progress line).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RecordStats {
    pub episodes_saved: usize,
    pub episodes_discarded: usize,
    /// Episodes that ended before their first frame (not written).
    pub episodes_empty: usize,
    pub frames: usize,
    pub dropped_ticks: usize,
    /// Per data topic: ticks dropped because it was stale (every topic listed).
    pub stale: BTreeMap<String, usize>,
    /// Per topic: messages that could not be used (logged once each).
    pub rejected: BTreeMap<String, usize>,
    /// `stop`/`discard` outside an episode, and markers that are none of the three words.
    pub ignored_markers: usize,
    /// Instructions that changed while an episode was recording (it keeps the last).
    pub instruction_changes: usize,
}

/// The latest message of a topic and when it came.
type Latest<M> = Arc<Mutex<Option<(M, Instant)>>>;

#[derive(Clone)]
enum CameraMsg {
    Raw(Image),
    Compressed(CompressedImage),
}

#[derive(Clone)]
enum CommandMsg {
    Twist([f64; 6]),
    Joints {
        names: Vec<String>,
        positions: Vec<f64>,
    },
    Array(Vec<f64>),
}

struct Camera {
    name: String,
    topic: String,
    latest: Latest<CameraMsg>,
    size: Option<(u32, u32)>,
}

/// Names of a recording's state and action entries, as its dataset records them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureNames {
    pub state: Vec<String>,
    pub action: Vec<String>,
}

/// Records demonstrations from a robot's topics: see the module docs.
pub struct Recorder {
    cameras: Vec<Camera>,
    joints_topic: String,
    joints: Latest<JointState>,
    command_topic: String,
    command: Latest<CommandMsg>,
    gripper: Option<Latest<f64>>,
    controls: Receiver<Control>,
    sender: Sender<Control>,
    tolerance: Duration,
    layout: RecordLayout,
    arm: ArmModel,
    period_s: f64,
    task: Option<String>,
    instruction: Option<String>,
    /// The last instruction in force during the episode in progress.
    episode_instruction: Option<String>,
    /// Frames of the episode in progress (`None`: between episodes).
    episode: Option<usize>,
    names: Option<FeatureNames>,
    stats: RecordStats,
}

impl Recorder {
    /// Subscribe to the robot's topics. `task` overrides the instruction topic.
    pub fn new<T: Transport>(
        t: &mut T,
        config: &BridgeConfig,
        robot: &RobotDescription,
        task: Option<String>,
    ) -> Result<Self, RecordError> {
        let rec = &config.record;
        rec.validate().map_err(RecordError::Setup)?;
        let topics = &config.topics;
        let (sender, controls) = channel();
        let mut cameras = Vec::new();
        for (name, topic) in rec.camera_topics().map_err(RecordError::Setup)? {
            let latest: Latest<CameraMsg> = Arc::default();
            let slot = latest.clone();
            if topic.ends_with("/compressed") {
                t.subscribe::<CompressedImage>(
                    &topic,
                    config.qos.images(),
                    Box::new(move |m| store(&slot, m.ok().map(CameraMsg::Compressed))),
                )?;
            } else {
                t.subscribe::<Image>(
                    &topic,
                    config.qos.images(),
                    Box::new(move |m| store(&slot, m.ok().map(CameraMsg::Raw))),
                )?;
            }
            cameras.push(Camera {
                name,
                topic,
                latest,
                size: None,
            });
        }
        let joints: Latest<JointState> = Arc::default();
        let slot = joints.clone();
        t.subscribe::<JointState>(
            &topics.joint_states,
            config.qos.joint_states(),
            Box::new(move |m| store(&slot, m.ok())),
        )?;
        let command: Latest<CommandMsg> = Arc::default();
        let slot = command.clone();
        let q = config.qos.commands();
        let command_topic = match rec.command {
            CommandInput::Twist => {
                t.subscribe::<TwistStamped>(
                    &topics.twist,
                    q,
                    Box::new(move |m| {
                        let v = m.ok().map(|m| {
                            let (l, a) = (m.twist.linear, m.twist.angular);
                            CommandMsg::Twist([l.x, l.y, l.z, a.x, a.y, a.z])
                        });
                        store(&slot, v)
                    }),
                )?;
                topics.twist.clone()
            }
            CommandInput::JointTrajectory => {
                t.subscribe::<JointTrajectory>(
                    &topics.joint_trajectory,
                    q,
                    Box::new(move |m| {
                        let v = m.ok().and_then(|m| {
                            let last = m.points.into_iter().last()?;
                            Some(CommandMsg::Joints {
                                names: m.joint_names,
                                positions: last.positions,
                            })
                        });
                        store(&slot, v)
                    }),
                )?;
                topics.joint_trajectory.clone()
            }
            CommandInput::Float64MultiArray => {
                t.subscribe::<Float64MultiArray>(
                    &topics.forward_command,
                    q,
                    Box::new(move |m| store(&slot, m.ok().map(|m| CommandMsg::Array(m.data)))),
                )?;
                topics.forward_command.clone()
            }
        };
        let gripper = match config.output.gripper {
            GripperOutput::None => None,
            kind => {
                let latest: Latest<f64> = Arc::default();
                let slot = latest.clone();
                let output: OutputSection = config.output.clone();
                let closure = move |p: Option<f64>| {
                    store(
                        &slot,
                        p.filter(|p| p.is_finite())
                            .map(|p| output.gripper_closure(p)),
                    )
                };
                if kind == GripperOutput::GripperCommand {
                    t.subscribe::<GripperCommand>(
                        &topics.gripper,
                        q,
                        Box::new(move |m| closure(m.ok().map(|m| m.position))),
                    )?;
                } else {
                    t.subscribe::<Float64MultiArray>(
                        &topics.gripper,
                        q,
                        Box::new(move |m| closure(m.ok().and_then(|m| m.data.first().copied()))),
                    )?;
                }
                Some(latest)
            }
        };
        let s = sender.clone();
        t.subscribe::<StringMsg>(
            &topics.instruction,
            config.qos.instruction(),
            Box::new(move |m| {
                if let Ok(m) = m {
                    let _ = s.send(Control::Instruction(m.data));
                }
            }),
        )?;
        let s = sender.clone();
        t.subscribe::<StringMsg>(
            &topics.episode,
            Qos::reliable(10),
            Box::new(move |m| {
                if let Ok(m) = m {
                    let c = match Marker::parse(&m.data) {
                        Some(marker) => Control::Marker(marker),
                        None => Control::UnknownMarker(m.data),
                    };
                    let _ = s.send(c);
                }
            }),
        )?;
        let mut stats = RecordStats::default();
        for c in &cameras {
            stats.stale.insert(c.topic.clone(), 0);
        }
        stats.stale.insert(topics.joint_states.clone(), 0);
        stats.stale.insert(command_topic.clone(), 0);
        Ok(Recorder {
            cameras,
            joints_topic: topics.joint_states.clone(),
            joints,
            command_topic,
            command,
            gripper,
            controls,
            sender,
            tolerance: Duration::from_secs_f64(rec.tolerance_s),
            layout: rec.layout,
            arm: ArmModel::from_description(robot),
            period_s: config.control.period_s,
            task: task.filter(|t| !t.trim().is_empty()),
            instruction: None,
            episode_instruction: None,
            episode: None,
            names: None,
            stats,
        })
    }

    /// Where the keyboard (or anything else) sends its commands.
    pub fn controls(&self) -> Sender<Control> {
        self.sender.clone()
    }

    pub fn stats(&self) -> &RecordStats {
        &self.stats
    }

    /// Frames of the episode in progress, if one is.
    pub fn episode_frames(&self) -> Option<usize> {
        self.episode
    }

    /// The state and action names, once the first frame fixed them.
    pub fn feature_names(&self) -> Option<&FeatureNames> {
        self.names.as_ref()
    }

    /// The data topics whose latest message is too old at `now` (or that have none).
    pub fn stale_topics(&self, now: Instant) -> Vec<String> {
        let fresh = |at: Option<Instant>| {
            at.is_some_and(|at| now.saturating_duration_since(at) <= self.tolerance)
        };
        let mut out = Vec::new();
        for c in &self.cameras {
            if !fresh(arrival(&c.latest)) {
                out.push(c.topic.clone());
            }
        }
        if !fresh(arrival(&self.joints)) {
            out.push(self.joints_topic.clone());
        }
        if !fresh(arrival(&self.command)) {
            out.push(self.command_topic.clone());
        }
        out
    }

    /// Handle the controls that came since the last tick, then sample a frame if an episode
    /// is in progress. An error (an image whose size changed) leaves the episode in progress
    /// for the caller to discard.
    pub fn tick(&mut self, now: Instant) -> Result<Vec<RecordEvent>, RecordError> {
        let mut events = Vec::new();
        while let Ok(control) = self.controls.try_recv() {
            match control {
                Control::Instruction(text) => {
                    if self.episode.is_some_and(|n| n > 0)
                        && self.instruction.as_deref() != Some(text.as_str())
                    {
                        self.stats.instruction_changes += 1;
                        tracing::warn!("the instruction changed during an episode: now {text:?}");
                    }
                    self.instruction = Some(text).filter(|t| !t.trim().is_empty());
                    if self.episode.is_some() && self.instruction.is_some() {
                        self.episode_instruction.clone_from(&self.instruction);
                    }
                }
                Control::Marker(Marker::Start) => {
                    if self.episode.is_some() {
                        self.end_episode(&mut events);
                    }
                    self.episode = Some(0);
                    self.episode_instruction.clone_from(&self.instruction);
                    events.push(RecordEvent::Started);
                }
                Control::Marker(Marker::Stop) => match self.episode {
                    Some(_) => self.end_episode(&mut events),
                    None => self.stats.ignored_markers += 1,
                },
                Control::Marker(Marker::Discard) => match self.episode.take() {
                    Some(frames) => {
                        self.stats.episodes_discarded += 1;
                        events.push(RecordEvent::Discarded { frames });
                    }
                    None => self.stats.ignored_markers += 1,
                },
                Control::UnknownMarker(word) => {
                    self.stats.ignored_markers += 1;
                    tracing::warn!(
                        "episode marker {word:?} is not start, stop or discard: ignored"
                    );
                }
                Control::Quit => {
                    if let Some(frames) = self.episode.take() {
                        self.stats.episodes_discarded += 1;
                        events.push(RecordEvent::Discarded { frames });
                    }
                    events.push(RecordEvent::Quit);
                    return Ok(events);
                }
            }
        }
        if self.episode.is_some() {
            match self.sample(now)? {
                Ok(frame) => {
                    self.stats.frames += 1;
                    if let Some(n) = self.episode.as_mut() {
                        *n += 1;
                    }
                    events.push(RecordEvent::Frame(frame));
                }
                Err(stale) => {
                    self.stats.dropped_ticks += 1;
                    for t in &stale {
                        *self.stats.stale.entry(t.clone()).or_default() += 1;
                    }
                    events.push(RecordEvent::Dropped(stale));
                }
            }
        }
        Ok(events)
    }

    /// End the episode in progress: kept with its task, or counted empty.
    fn end_episode(&mut self, events: &mut Vec<RecordEvent>) {
        let Some(frames) = self.episode.take() else {
            return;
        };
        if frames == 0 {
            self.stats.episodes_empty += 1;
            return;
        }
        let instruction = self.episode_instruction.take();
        match self.task.clone().or(instruction) {
            Some(task) => {
                self.stats.episodes_saved += 1;
                events.push(RecordEvent::Saved { task, frames });
            }
            None => {
                tracing::warn!(
                    "an episode of {frames} frames was dropped: it has no task (give --task, or \
                     publish the instruction)"
                );
                self.stats.episodes_discarded += 1;
                events.push(RecordEvent::Discarded { frames });
            }
        }
    }

    fn reject(&mut self, topic: &str, why: &str) {
        let n = self.stats.rejected.entry(topic.to_string()).or_default();
        if *n == 0 {
            tracing::warn!("{topic}: {why} (such messages are skipped and counted)");
        }
        *n += 1;
    }

    /// The frame at `now`, or the stale topics. A message that cannot be used counts as
    /// stale (and rejected); an image size change is an error.
    fn sample(&mut self, now: Instant) -> Result<Result<RecordedFrame, Vec<String>>, RecordError> {
        let stale = self.stale_topics(now);
        if !stale.is_empty() {
            return Ok(Err(stale));
        }
        let (Some(js), Some(cmd)) = (latest(&self.joints), latest(&self.command)) else {
            return Ok(Err(vec![self.joints_topic.clone()]));
        };
        let gripper = self.gripper.as_ref().and_then(latest).unwrap_or(0.0) as f32;
        let joints_topic = self.joints_topic.clone();
        let command_topic = self.command_topic.clone();
        let vectors = match self.layout {
            RecordLayout::Vla => self.vla_vectors(&js, &cmd, gripper),
            RecordLayout::Raw => Ok(raw_vectors(&js, &cmd, self.gripper.is_some(), gripper)),
        };
        let (state, action, names) = match vectors {
            Ok(v) => v,
            Err((joint_side, why)) => {
                let topic = if joint_side {
                    joints_topic
                } else {
                    command_topic
                };
                self.reject(&topic, &why);
                return Ok(Err(vec![topic]));
            }
        };
        match &self.names {
            None => self.names = Some(names),
            Some(before) if *before != names => {
                let (topic, what, was, now) = if before.state != names.state {
                    (&joints_topic, "joint names", &before.state, &names.state)
                } else {
                    (
                        &command_topic,
                        "command entries",
                        &before.action,
                        &names.action,
                    )
                };
                let why = format!(
                    "the {what} change from [{}] to [{}]",
                    was.join(", "),
                    now.join(", ")
                );
                let topic = topic.clone();
                self.reject(&topic, &why);
                return Ok(Err(vec![topic]));
            }
            Some(_) => {}
        }
        let mut images = Vec::with_capacity(self.cameras.len());
        for i in 0..self.cameras.len() {
            let Some(msg) = latest(&self.cameras[i].latest) else {
                return Ok(Err(vec![self.cameras[i].topic.clone()]));
            };
            let decoded = match &msg {
                CameraMsg::Raw(m) => decode_raw(m),
                CameraMsg::Compressed(m) => decode_compressed(m),
            };
            let topic = self.cameras[i].topic.clone();
            let img = match decoded {
                Ok(img) => img,
                Err(e) => {
                    self.reject(&topic, &format!("cannot decode an image: {e}"));
                    return Ok(Err(vec![topic]));
                }
            };
            let size = img.dimensions();
            let cam = &mut self.cameras[i];
            match cam.size {
                None => cam.size = Some(size),
                Some(before) if before != size => {
                    return Err(RecordError::Topic {
                        topic,
                        detail: format!(
                            "the image size changes from {}x{} to {}x{} (camera {}); a dataset \
                             holds one size per camera",
                            before.0, before.1, size.0, size.1, cam.name
                        ),
                    })
                }
                Some(_) => {}
            }
            images.push((cam.name.clone(), img));
        }
        Ok(Ok(RecordedFrame {
            images,
            state,
            action,
        }))
    }

    /// The `vla` layout's state and action; `Err((true, why))` blames the joint states,
    /// `Err((false, why))` the command.
    fn vla_vectors(
        &self,
        js: &JointState,
        cmd: &CommandMsg,
        gripper: f32,
    ) -> Result<Vectors, (bool, String)> {
        let snap = self.arm.snapshot(js).map_err(|e| (true, e))?;
        let finger = match (&self.arm.gripper_joint, snap.finger) {
            (Some(_), Some(f)) => f,
            (Some((name, _, _)), None) => {
                return Err((true, format!("JointState lacks the finger joint {name:?}")))
            }
            (None, _) => 0.0,
        };
        let tool = self.arm.tool_pose(&snap.positions);
        let mut state: Vec<f32> = snap.positions.iter().take(6).map(|v| *v as f32).collect();
        state.resize(6, 0.0);
        state.push((2.0 * finger) as f32);
        let t = tool.translation.vector;
        state.extend([t.x as f32, t.y as f32, t.z as f32]);
        state.extend(vla_kinematics::rpy(&tool.rotation).map(|v| v as f32));
        let dt = self.period_s;
        let (dp, dr) = match cmd {
            CommandMsg::Twist(v) => (
                [v[0] * dt, v[1] * dt, v[2] * dt],
                [v[3] * dt, v[4] * dt, v[5] * dt],
            ),
            CommandMsg::Joints { names, positions } => {
                let q = self.in_chain_order(names, positions)?;
                self.tool_delta(&snap.positions, &q)
            }
            CommandMsg::Array(positions) => {
                let dof = self.arm.chain.dof();
                if positions.len() != dof || positions.iter().any(|v| !v.is_finite()) {
                    return Err((
                        false,
                        format!(
                            "a command of {} numbers, not {dof} finite joint positions",
                            positions.len()
                        ),
                    ));
                }
                self.tool_delta(&snap.positions, positions)
            }
        };
        if dp.iter().chain(&dr).any(|v| !v.is_finite()) {
            return Err((false, "a command with a non-finite value".into()));
        }
        let action: Vec<f32> = dp
            .iter()
            .chain(&dr)
            .map(|v| *v as f32)
            .chain([gripper])
            .collect();
        let names = FeatureNames {
            state: vla_core::STATE_NAMES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            action: vla_core::action::ACTION_NAMES
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        Ok((state, action, names))
    }

    /// A trajectory's positions in the URDF's joint order.
    fn in_chain_order(
        &self,
        names: &[String],
        positions: &[f64],
    ) -> Result<Vec<f64>, (bool, String)> {
        self.arm
            .chain
            .joints
            .iter()
            .map(|j| {
                let i = names
                    .iter()
                    .position(|n| *n == j.name)
                    .ok_or_else(|| (false, format!("the trajectory lacks joint {:?}", j.name)))?;
                positions
                    .get(i)
                    .copied()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| (false, format!("no finite position for joint {:?}", j.name)))
            })
            .collect()
    }

    /// The tool's move from joints `from` to joints `to`, as the simulator's controller takes
    /// an action: position difference and the roll-pitch-yaw of the relative rotation.
    fn tool_delta(&self, from: &[f64], to: &[f64]) -> ([f64; 3], [f64; 3]) {
        let a = self.arm.tool_pose(from);
        let b = self.arm.tool_pose(to);
        let dp = b.translation.vector - a.translation.vector;
        let rel: UnitQuaternion<f64> = b.rotation * a.rotation.inverse();
        let (r, p, y) = rel.euler_angles();
        ([dp.x, dp.y, dp.z], [r, p, y])
    }
}

/// A frame's state, action and their entries' names.
type Vectors = (Vec<f32>, Vec<f32>, FeatureNames);

/// The `raw` layout's state and action.
fn raw_vectors(js: &JointState, cmd: &CommandMsg, has_gripper: bool, gripper: f32) -> Vectors {
    let state: Vec<f32> = js.position.iter().map(|v| *v as f32).collect();
    let state_names = if js.name.len() == js.position.len() {
        js.name.clone()
    } else {
        (0..js.position.len())
            .map(|i| format!("position_{i}"))
            .collect()
    };
    let (mut action, mut action_names): (Vec<f32>, Vec<String>) = match cmd {
        CommandMsg::Twist(v) => (
            v.iter().map(|x| *x as f32).collect(),
            [
                "linear.x",
                "linear.y",
                "linear.z",
                "angular.x",
                "angular.y",
                "angular.z",
            ]
            .map(String::from)
            .to_vec(),
        ),
        CommandMsg::Joints { names, positions } => (
            positions.iter().map(|x| *x as f32).collect(),
            if names.len() == positions.len() {
                names.clone()
            } else {
                (0..positions.len())
                    .map(|i| format!("position_{i}"))
                    .collect()
            },
        ),
        CommandMsg::Array(data) => (
            data.iter().map(|x| *x as f32).collect(),
            (0..data.len()).map(|i| format!("data_{i}")).collect(),
        ),
    };
    if has_gripper {
        action.push(gripper);
        action_names.push("gripper".into());
    }
    (
        state,
        action,
        FeatureNames {
            state: state_names,
            action: action_names,
        },
    )
}

fn store<M>(slot: &Latest<M>, value: Option<M>) {
    if let (Some(v), Ok(mut s)) = (value, slot.lock()) {
        *s = Some((v, Instant::now()));
    }
}

fn latest<M: Clone>(slot: &Latest<M>) -> Option<M> {
    slot.lock().ok()?.as_ref().map(|(m, _)| m.clone())
}

fn arrival<M>(slot: &Latest<M>) -> Option<Instant> {
    slot.lock().ok()?.as_ref().map(|(_, at)| *at)
}

#[cfg(test)]
mod tests;
