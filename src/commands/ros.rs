//! `vla ros bridge|sim` and `vla bench ros`: the ROS 2 bridge with the VLA policy, the
//! simulator as a ROS 2 robot, and the bridge's latency benchmark.
//!
//! The bridge crate knows nothing of libtorch; this module adapts [`Policy`] to its
//! [`ActionSource`] trait (keeping the raw action tokens for the debug topic and the
//! sub-task it said for `/vla/subtask`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use serde::Serialize;
use vla_model::policy::Policy;
use vla_model::tch::Device;
use vla_ros_bridge::bridge::TickRecord;
use vla_ros_bridge::bridge::{ActionLayout, PolicyInput, PolicyIo, StateLayout};
use vla_ros_bridge::msg::{
    CompressedImage, Header, Image, JointState, StringMsg, Time, TwistStamped,
};
use vla_ros_bridge::transport::{Publisher, Qos};
use vla_ros_bridge::{
    netns, ActionSource, Bridge, BridgeConfig, PolicyOutput, Ros2Transport, Transport,
};

use super::SimOptions;

#[derive(clap::Subcommand)]
pub enum What {
    /// The policy bridge: cameras + instruction in, safe robot commands out.
    Bridge(BridgeArgs),
    /// The simulator as a ROS 2 robot: runs episodes, obeys the bridge's commands.
    Sim(SimArgs),
    /// Record demonstrations from a ROS 2 robot's topics into a LeRobot v3.0 dataset:
    /// cameras, joint states and the teleoperator's commands sampled at record.fps; episodes
    /// marked on topics.episode ("start", "stop", "discard") or at the keyboard.
    Record(RecordArgs),
}

#[derive(clap::Args)]
pub struct RecordArgs {
    /// Directory of the dataset: new (absent or empty), or with --resume one to add to.
    #[arg(long)]
    pub out: PathBuf,
    /// Task of every episode [default: the instruction topic's latest sentence when the
    /// episode ends].
    #[arg(long)]
    pub task: Option<String>,
    /// Bridge config (TOML): topics, QoS, gripper mapping, URDF and the [record] section,
    /// merged over the built-in ros_bridge/config/default.toml.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override any config field: --set record.fps=30 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Stop after this many saved episodes (default: until Ctrl-C or `q`).
    #[arg(long)]
    pub episodes: Option<usize>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Add episodes to the dataset in --out (same features, fps and robot type).
    #[arg(long)]
    pub resume: bool,
    /// `robot_type` of meta/info.json [default: the URDF's robot name].
    #[arg(long)]
    pub robot_type: Option<String>,
    /// Store the cameras as video (`av1`, lerobot's default, or `h264`) instead of PNG
    /// images in the data files.
    #[arg(long, value_name = "CODEC", value_parser = super::parse_video)]
    pub video: Option<vla_datasets::VideoSpec>,
    /// Print the report (episodes, frames, stale ticks per topic) as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct BridgeArgs {
    /// Run directory of a trained policy (model.safetensors, config.json, tokenizer.json).
    #[arg(long)]
    pub ckpt: PathBuf,
    /// Bridge config (TOML), merged over the built-in ros_bridge/config/default.toml.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override any config field: --set control.rate_hz=5 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Print the bridge's counters as JSON on exit.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct SimArgs {
    /// Task family (pick, place, stack, sort).
    #[arg(long, default_value = "pick")]
    pub suite: String,
    #[arg(long, default_value = "seen")]
    pub split: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 10)]
    pub episodes: usize,
    /// Step once per received command (slow policies, reproducible runs) instead of at --rate-hz.
    #[arg(long)]
    pub lockstep: bool,
    /// Wall-clock stepping rate without --lockstep.
    #[arg(long, default_value_t = 10.0)]
    pub rate_hz: f64,
    /// With --lockstep: hold for one step when no command arrives within this time.
    #[arg(long, default_value_t = 30.0)]
    pub command_timeout_s: f64,
    /// `expert`: the scripted expert teleoperates the robot over ROS 2, publishing its
    /// commands on the command topics and marking episodes on topics.episode (what
    /// `vla ros record` records); failed episodes are marked "discard".
    #[arg(long, value_name = "WHO")]
    pub teleop: Option<String>,
    /// Topic names and gripper mapping come from the bridge config.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sim: SimOptions,
}

pub fn run(what: What) -> anyhow::Result<()> {
    match what {
        What::Bridge(a) => bridge(a),
        What::Sim(a) => sim(a),
        What::Record(a) => record(a),
    }
}

fn parse_device(s: &str) -> anyhow::Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|i| i.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(|| anyhow::anyhow!("--device {other:?}: expected cpu, cuda or cuda:N")),
    }
}

/// The VLA policy as the bridge's action source.
pub struct PolicySource {
    policy: Policy,
    io: PolicyIo,
}

impl PolicySource {
    /// Errors when the checkpoint's actions are nothing a robot executes (action space
    /// `other`, or an end-effector delta that is not the simulator's seven numbers).
    pub fn new(policy: Policy) -> anyhow::Result<Self> {
        let io = policy_io(&policy.model().config().features)?;
        Ok(PolicySource { policy, io })
    }
}

/// What the bridge feeds a policy and does with its action, from its feature mapping.
pub fn policy_io(f: &vla_model::features::FeatureMapping) -> anyhow::Result<PolicyIo> {
    use vla_model::features::ActionSpace;
    let cameras = f
        .cameras
        .iter()
        .map(|k| {
            k.strip_prefix("observation.images.")
                .unwrap_or(k)
                .to_string()
        })
        .collect();
    let state = if f
        .state_names
        .iter()
        .map(String::as_str)
        .eq(vla_core::STATE_NAMES)
    {
        StateLayout::Simulator
    } else {
        StateLayout::Joints(f.state_names.clone())
    };
    let action = match f.action_space {
        ActionSpace::EndEffectorDelta => {
            anyhow::ensure!(
                f.action_dim() == vla_core::ACTION_DIM,
                "the policy's end-effector action has {} numbers; the bridge executes the \
                 simulator's {} (dx dy dz droll dpitch dyaw gripper)",
                f.action_dim(),
                vla_core::ACTION_DIM
            );
            ActionLayout::EndEffectorDelta
        }
        ActionSpace::JointPositions => ActionLayout::JointPositions {
            names: f.action_names.clone(),
            gripper: f.gripper_dim,
        },
        ActionSpace::Other => anyhow::bail!(
            "the policy's action space is \"other\" ({}): the bridge executes end-effector \
             deltas and joint positions (train with --action-space)",
            f.action_names.join(", ")
        ),
    };
    Ok(PolicyIo {
        cameras,
        state,
        action,
    })
}

/// The bridge's observation as the policy reads one.
struct BridgeObservation<'a>(&'a PolicyInput);

impl vla_model::policy::PolicyObservation for BridgeObservation<'_> {
    fn images(&self) -> Vec<&vla_core::RgbImage> {
        self.0.images.iter().map(|i| i.as_ref()).collect()
    }
    fn state(&self) -> &[f32] {
        &self.0.state
    }
}

impl ActionSource for PolicySource {
    fn image_size(&self) -> u32 {
        self.policy.model().config().vision.image_size as u32
    }

    fn io(&self) -> PolicyIo {
        self.io.clone()
    }

    /// A chunked policy forgets the chunk it was executing (a new instruction is a new
    /// episode); the one-action policy keeps nothing between steps.
    fn reset(&mut self) {
        self.policy.reset();
    }

    fn act(&mut self, obs: &PolicyInput) -> anyhow::Result<PolicyOutput> {
        let view = BridgeObservation(obs);
        let decision = self
            .policy
            .step(&[0], &[(&view, obs.instruction.as_str())])?
            .into_iter()
            .next()
            .context("the policy returned no decision for one observation")?;
        Ok(PolicyOutput {
            action: decision.values,
            tokens: decision.tokens,
            subtask: decision.subtask,
        })
    }
}

/// Ctrl-C (and an optional time limit) set one flag the loops watch.
fn stop_flag(seconds: Option<f64>) -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || s.store(true, Ordering::Relaxed))
        .context("cannot install the Ctrl-C handler")?;
    if let Some(secs) = seconds {
        anyhow::ensure!(secs.is_finite() && secs > 0.0, "--seconds must be positive");
        let s = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(secs));
            s.store(true, Ordering::Relaxed);
        });
    }
    Ok(stop)
}

fn bridge(args: BridgeArgs) -> anyhow::Result<()> {
    // First, so a Ctrl-C during the model load is not lost.
    let stop = stop_flag(args.seconds)?;
    let config = BridgeConfig::load(args.config.as_deref(), &args.set)?;
    let device = parse_device(&args.device)?;
    let policy = Policy::load(&args.ckpt, device)
        .with_context(|| format!("cannot load the policy from {}", args.ckpt.display()))?;
    let source = PolicySource::new(policy)?;
    let mut transport = Ros2Transport::new(&config.node.name)?;
    let mut node = Bridge::new(&mut transport, config, Box::new(source))?;
    node.run(&stop)?;
    let stats = node.stats();
    // The process ends here: skip tearing down DDS entities one by one (RustDDS logs
    // spurious errors for readers still owned by reader threads).
    std::mem::forget(node);
    std::mem::forget(transport);
    super::print_report(args.json, &stats, || {
        format!(
            "{} ticks, {} inferences ({:.1} ms mean), {} commands ({} holds), {} frames rejected",
            stats.ticks,
            stats.inferences,
            stats.inference_ms_mean,
            stats.commands,
            stats.holds,
            stats.frames_rejected
        )
    })
}

fn sim(args: SimArgs) -> anyhow::Result<()> {
    let config = BridgeConfig::load(args.config.as_deref(), &args.set)?;
    let families = vla_tasks::parse_suite(&args.suite)?;
    anyhow::ensure!(
        families.len() == 1,
        "--suite must name one family (pick, place, stack or sort)"
    );
    anyhow::ensure!(args.episodes > 0, "--episodes must be at least 1");
    anyhow::ensure!(
        args.command_timeout_s.is_finite() && args.command_timeout_s > 0.0,
        "--command-timeout-s must be positive"
    );
    let mut env = args.sim.env_config()?;
    env.render_enabled = true;
    let opts = vla_ros_bridge::sim_node::SimOptions {
        family: families[0].to_string(),
        split: args.split.parse()?,
        seed: args.seed,
        episodes: args.episodes,
        lockstep: args.lockstep,
        rate_hz: args.rate_hz,
        command_timeout: Duration::from_secs_f64(args.command_timeout_s),
        env,
        robot: args.sim.robot()?,
        teleop: match args.teleop.as_deref() {
            None => false,
            Some("expert") => true,
            Some(other) => anyhow::bail!("--teleop {other:?}: the one teleoperator is \"expert\""),
        },
    };
    let stop = stop_flag(None)?;
    let mut transport = Ros2Transport::new("vla_sim")?;
    let report = vla_ros_bridge::sim_node::run(&mut transport, &config, &opts, &stop)?;
    std::mem::forget(transport);
    super::print_report(args.json, &report, || super::expert::human(&report.suite))
}

// ---------------------------------------------------------------------------------------
// vla ros record

/// The report of `vla ros record`.
#[derive(Serialize)]
struct RecordReport {
    out: PathBuf,
    /// Episodes in the dataset (with --resume, those before included).
    total_episodes: usize,
    total_frames: usize,
    #[serde(flatten)]
    stats: vla_ros_bridge::record::RecordStats,
    /// Ticks that came later than one period after their time (the machine was busy).
    late_ticks: usize,
    seconds: f64,
}

/// Writes the recorder's events through one [`DatasetWriter`], created at the first frame
/// (which gives the cameras' sizes) unless resuming. Every saved episode is committed.
struct RecordSink {
    out: PathBuf,
    fps: u32,
    robot_type: String,
    video: Option<vla_datasets::VideoSpec>,
    writer: Option<vla_datasets::DatasetWriter>,
}

impl RecordSink {
    fn frame(
        &mut self,
        frame: &vla_ros_bridge::record::RecordedFrame,
        names: Option<&vla_ros_bridge::record::FeatureNames>,
    ) -> anyhow::Result<()> {
        use vla_datasets::{CameraSpec, DatasetSpec, DatasetWriter, RawFrameRecord};
        let images: Vec<(&str, &vla_core::RgbImage)> =
            frame.images.iter().map(|(n, i)| (n.as_str(), i)).collect();
        if self.writer.is_none() {
            let names = names.context("the recorder gave a frame before its feature names")?;
            let mut spec = DatasetSpec::with_features(
                self.robot_type.clone(),
                self.fps,
                CameraSpec::of_frame(&images),
                names.state.clone(),
                names.action.clone(),
            );
            spec.flush_every_episodes = 1;
            spec.video = self.video;
            self.writer = Some(DatasetWriter::create(&self.out, spec)?);
        }
        let writer = self.writer.as_mut().context("no dataset writer")?;
        let timestamp = writer.current_episode_len() as f32 / self.fps as f32;
        writer
            .add_raw_frame(RawFrameRecord {
                images: &images,
                state: &frame.state,
                action: &frame.action,
                timestamp,
                subtask: None,
            })
            .with_context(|| {
                format!(
                    "a recorded frame does not fit the dataset in {}",
                    self.out.display()
                )
            })?;
        Ok(())
    }

    /// Drop the episode in progress and close the dataset; what it holds.
    fn close(self) -> anyhow::Result<(usize, usize)> {
        match self.writer {
            Some(mut w) => {
                w.discard_episode();
                let info = w.finalize()?;
                Ok((info.total_episodes, info.total_frames))
            }
            None => Ok((0, 0)),
        }
    }
}

fn record(args: RecordArgs) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    use vla_ros_bridge::record::{Control, RecordEvent, Recorder};

    let started = Instant::now();
    let stop = stop_flag(args.seconds)?;
    let config = BridgeConfig::load(args.config.as_deref(), &args.set)?;
    let robot = config.robot().map_err(anyhow::Error::msg)?;
    let out = args.out.clone();
    let writer = if args.resume {
        anyhow::ensure!(
            out.join("meta").exists(),
            "--resume: {} holds no dataset",
            out.display()
        );
        let w = vla_datasets::DatasetWriter::open_resume(&out)?;
        anyhow::ensure!(
            w.info().fps == config.record.fps,
            "--resume: {} was recorded at {} fps, record.fps is {}",
            out.display(),
            w.info().fps,
            config.record.fps
        );
        Some(w)
    } else {
        if out.exists() {
            let mut entries = std::fs::read_dir(&out)
                .with_context(|| format!("--out {}: not a readable directory", out.display()))?;
            anyhow::ensure!(
                entries.next().is_none(),
                "--out {}: the directory is not empty (use --resume to add to a dataset)",
                out.display()
            );
        }
        None
    };
    if let Some(n) = args.episodes {
        anyhow::ensure!(n > 0, "--episodes must be at least 1");
    }
    let mut transport = Ros2Transport::new(&format!("{}_recorder", config.node.name))?;
    let mut recorder = Recorder::new(&mut transport, &config, &robot, args.task.clone())?;
    if std::io::stdin().is_terminal() {
        let keys = recorder.controls();
        eprintln!("keys (then Enter): s start · e stop (keep) · d discard · q quit");
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                match Control::from_key(&line) {
                    Some(c) => {
                        if keys.send(c).is_err() {
                            break;
                        }
                    }
                    None => eprintln!("{line:?}: keys are s, e, d, q"),
                }
            }
        });
    }
    let fps = config.record.fps;
    let mut sink = RecordSink {
        out: out.clone(),
        fps,
        robot_type: args
            .robot_type
            .clone()
            .unwrap_or_else(|| robot.name.clone()),
        video: args.video,
        writer,
    };
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} record {msg} ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let period = Duration::from_secs_f64(1.0 / f64::from(fps));
    let mut next = Instant::now() + period;
    let mut late_ticks = 0usize;
    let mut quit_sent = false;
    let result = (|| -> anyhow::Result<()> {
        loop {
            let wanted = args
                .episodes
                .is_some_and(|n| recorder.stats().episodes_saved >= n);
            if (stop.load(Ordering::Relaxed) || wanted) && !quit_sent {
                // Handled at the next tick, after the controls that came before it.
                let _ = recorder.controls().send(Control::Quit);
                quit_sent = true;
            }
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else if now - next > period {
                late_ticks += 1;
                next = now;
            }
            next += period;
            let events = recorder.tick(Instant::now())?;
            let mut done = false;
            for event in events {
                match event {
                    RecordEvent::Started => {
                        tracing::info!("episode started");
                    }
                    RecordEvent::Frame(f) => sink.frame(&f, recorder.feature_names())?,
                    RecordEvent::Dropped(_) => {}
                    RecordEvent::Saved { task, frames } => {
                        let w = sink
                            .writer
                            .as_mut()
                            .context("an episode ended with no dataset")?;
                        let index = w.save_episode(&task)?;
                        tracing::info!("episode {index} saved: {frames} frames, {task:?}");
                    }
                    RecordEvent::Discarded { frames } => {
                        if let Some(w) = sink.writer.as_mut() {
                            w.discard_episode();
                        }
                        tracing::info!("episode discarded ({frames} frames)");
                    }
                    RecordEvent::Quit => done = true,
                }
            }
            let s = recorder.stats();
            let stale = recorder.stale_topics(Instant::now());
            bar.set_message(format!(
                "{} · {} saved, {} discarded · {} frames, {} dropped{}",
                match recorder.episode_frames() {
                    Some(n) => format!("recording ({n} frames)"),
                    None => "waiting for start".into(),
                },
                s.episodes_saved,
                s.episodes_discarded,
                s.frames,
                s.dropped_ticks,
                if stale.is_empty() {
                    String::new()
                } else {
                    format!(" · stale: {}", stale.join(", "))
                }
            ));
            bar.tick();
            if done {
                return Ok(());
            }
        }
    })();
    bar.finish_and_clear();
    let stats = recorder.stats().clone();
    std::mem::forget(recorder);
    std::mem::forget(transport);
    // Whatever happened, the saved episodes stay: the one in progress is dropped.
    let closed = sink.close();
    if let Err(err) = result {
        let kept = match closed {
            Ok((episodes, _)) => format!("{} keeps {episodes} episodes", out.display()),
            Err(e) => format!("and closing {} failed too: {e:#}", out.display()),
        };
        return Err(err.context(kept));
    }
    let (total_episodes, total_frames) = closed?;
    let report = RecordReport {
        out,
        total_episodes,
        total_frames,
        stats,
        late_ticks,
        seconds: started.elapsed().as_secs_f64(),
    };
    super::print_report(args.json, &report, || {
        format!(
            "{}: {} episodes saved ({} discarded, {} empty), {} frames; {} ticks dropped as stale{}; {} episodes in all; took {:.1} s",
            report.out.display(),
            report.stats.episodes_saved,
            report.stats.episodes_discarded,
            report.stats.episodes_empty,
            report.stats.frames,
            report.stats.dropped_ticks,
            {
                let per: Vec<String> = report
                    .stats
                    .stale
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(t, n)| format!("{t} {n}"))
                    .collect();
                if per.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", per.join(", "))
                }
            },
            report.total_episodes,
            report.seconds
        )
    })
}

// ---------------------------------------------------------------------------------------
// vla bench ros

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Seconds per image format (raw and JPEG).
    #[arg(long, default_value_t = 60.0)]
    pub seconds: f64,
    /// Camera rate (Hz) of front and wrist cameras.
    #[arg(long, default_value_t = 30.0)]
    pub camera_hz: f64,
    #[arg(long, default_value_t = 640)]
    pub width: u32,
    #[arg(long, default_value_t = 480)]
    pub height: u32,
    /// JPEG quality for the compressed run.
    #[arg(long, default_value_t = 90)]
    pub jpeg_quality: u8,
    /// Input size of the (zero-cost) policy, i.e. what frames are resized to: 224 as
    /// OpenVLA's ViT, 64 as `vla/configs/tiny.toml`.
    #[arg(long, default_value_t = 224)]
    pub policy_size: u32,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize, Default, Clone)]
struct Percentiles {
    p50: f64,
    p99: f64,
    max: f64,
}

fn percentiles(mut v: Vec<f64>) -> Percentiles {
    if v.is_empty() {
        return Percentiles::default();
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Percentiles {
        p50: at(0.5),
        p99: at(0.99),
        max: v[v.len() - 1],
    }
}

#[derive(Serialize)]
struct ModeReport {
    format: String,
    bytes_per_frame: usize,
    seconds: f64,
    ticks_measured: usize,
    /// Camera publish → command received, minus model time and minus the time the frame
    /// waited for the fixed-rate tick: transport in + decode + resize + safety + transport out.
    overhead_ms: Percentiles,
    /// Camera publish → decoded frame ready in the bridge.
    transport_in_ms: Percentiles,
    /// Tick start → command received by the robot side, minus model time.
    tick_to_command_ms: Percentiles,
    /// Camera publish → command received (includes waiting for the 10 Hz tick).
    end_to_end_ms: Percentiles,
    model_ms: Percentiles,
    frames_published: u64,
    frames_received: u64,
    /// Published but never delivered (best effort).
    frames_lost: u64,
    /// Delivered, then replaced by a newer frame before a tick used them (never queued).
    frames_superseded: u64,
    frames_rejected: u64,
    /// Per tick: front frames published before the tick began that were newer than the
    /// frame it used (in flight or queued somewhere).
    backlog_max: u64,
    backlog_mean: f64,
    /// The bridge's own counters for the run.
    bridge: vla_ros_bridge::BridgeStats,
}

#[derive(Serialize)]
struct BenchReport {
    camera_hz: f64,
    control_hz: f64,
    resolution: [u32; 2],
    /// Side of the square policy input every frame is resized to.
    policy_size: u32,
    modes: Vec<ModeReport>,
}

/// Zero-cost policy of a given input size: the benchmark measures the bridge, not the model.
struct ConstSource(u32);

impl ActionSource for ConstSource {
    fn image_size(&self) -> u32 {
        self.0
    }
    fn reset(&mut self) {}
    fn act(&mut self, _obs: &PolicyInput) -> anyhow::Result<PolicyOutput> {
        Ok(PolicyOutput {
            action: vec![0.001, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            tokens: vec![],
            subtask: None,
        })
    }
}

fn wall_ns(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as f64
}

/// A synthetic camera picture with smooth regions and texture (JPEG sizes like a real scene).
fn scene(w: u32, h: u32) -> vla_core::RgbImage {
    vla_core::RgbImage::from_fn(w, h, |x, y| {
        let n = ((x.wrapping_mul(2654435761) ^ y.wrapping_mul(40503)) >> 7) as u8 & 15;
        let r = (x * 255 / w.max(1)) as u8;
        let g = (y * 255 / h.max(1)) as u8;
        let b = if (x / 40 + y / 40) % 2 == 0 { 200 } else { 60 };
        image::Rgb([r.saturating_add(n), g.saturating_add(n), b])
    })
}

fn bench_mode(args: &BenchArgs, compressed: bool) -> anyhow::Result<ModeReport> {
    let config = BridgeConfig::load(None, &args.set)?;
    let topics = config.topics.clone();
    let mut bridge_t = Ros2Transport::new("vla_bench_bridge")?;
    let mut robot_t = Ros2Transport::new("vla_bench_robot")?;
    let mut node = Bridge::new(
        &mut bridge_t,
        config.clone(),
        Box::new(ConstSource(args.policy_size)),
    )?;
    let records: Arc<Mutex<Vec<TickRecord>>> = Arc::new(Mutex::new(Vec::new()));
    let r = records.clone();
    node.set_probe(Box::new(move |rec: &TickRecord| {
        if let Ok(mut v) = r.lock() {
            v.push(rec.clone());
        }
    }));
    // The robot side: receives commands (stamp → arrival), publishes cameras and joints.
    let arrivals: Arc<Mutex<std::collections::HashMap<(i32, u32), SystemTime>>> =
        Arc::new(Mutex::new(Default::default()));
    let a = arrivals.clone();
    robot_t.subscribe::<TwistStamped>(
        &topics.twist,
        Qos::reliable(100),
        Box::new(move |m| {
            if let (Ok(m), Ok(mut map)) = (m, a.lock()) {
                map.insert(
                    (m.header.stamp.sec, m.header.stamp.nanosec),
                    SystemTime::now(),
                );
            }
        }),
    )?;
    let instruction: Box<dyn Publisher<StringMsg>> =
        robot_t.publisher(&topics.instruction, config.qos.instruction())?;
    instruction.publish(StringMsg {
        data: "pick up the red cube".into(),
    })?;
    let joints: Box<dyn Publisher<JointState>> =
        robot_t.publisher(&topics.joint_states, config.qos.joint_states())?;
    let js = vla_ros_bridge::sim_node::home_joint_state(&vla_sim::RobotDescription::default_arm()?)
        .map_err(anyhow::Error::msg)?;
    let img = scene(args.width, args.height);
    let raw = vla_ros_bridge::image::encode_raw(&img, Header::now("cam"));
    let jpeg = vla_ros_bridge::image::encode_jpeg(&img, args.jpeg_quality, Header::now("cam"))?;
    let bytes = if compressed {
        jpeg.data.len()
    } else {
        raw.data.len()
    };
    let (front_raw, wrist_raw): (Box<dyn Publisher<Image>>, Box<dyn Publisher<Image>>) = (
        robot_t.publisher(&topics.front_image, config.qos.images())?,
        robot_t.publisher(&topics.wrist_image, config.qos.images())?,
    );
    let (front_c, wrist_c): (
        Box<dyn Publisher<CompressedImage>>,
        Box<dyn Publisher<CompressedImage>>,
    ) = (
        robot_t.publisher(&topics.front_compressed, config.qos.images())?,
        robot_t.publisher(&topics.wrist_compressed, config.qos.images())?,
    );
    // Let discovery settle before measuring.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(3) {
        joints.publish(js.clone())?;
        std::thread::sleep(Duration::from_millis(50));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let bridge_thread = std::thread::spawn(move || {
        let r = node.run(&s);
        (node.stats(), r)
    });
    let period = Duration::from_secs_f64(1.0 / args.camera_hz);
    let mut published: Vec<f64> = Vec::new();
    let start = Instant::now();
    let mut next = start;
    let mut last_js = start;
    while start.elapsed() < Duration::from_secs_f64(args.seconds) {
        let stamp = Time::now();
        let header = Header {
            stamp,
            frame_id: "cam".into(),
        };
        if compressed {
            let mut f = jpeg.clone();
            f.header = header.clone();
            front_c.publish(f.clone())?;
            wrist_c.publish(f)?;
        } else {
            let mut f = raw.clone();
            f.header = header.clone();
            front_raw.publish(f.clone())?;
            wrist_raw.publish(f)?;
        }
        published.push(stamp.as_nanos() as f64);
        if last_js.elapsed() > Duration::from_millis(20) {
            joints.publish(js.clone())?;
            last_js = Instant::now();
        }
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (stats, r) = bridge_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the bridge thread panicked"))?;
    r?;
    std::thread::sleep(Duration::from_millis(300));
    // Mono ↔ wall: one offset measured now (same machine).
    let (wall_now, mono_now) = (wall_ns(SystemTime::now()), Instant::now());
    let wall_of = |i: Instant| wall_now - mono_now.saturating_duration_since(i).as_nanos() as f64;
    let recs = records.lock().map(|v| v.clone()).unwrap_or_default();
    // The twist is stamped just after the tick recorded `published_stamp`: match each tick
    // to the first command stamped at or after it (ticks are 100 ms apart).
    let mut arr: Vec<(f64, SystemTime)> = arrivals
        .lock()
        .map(|m| {
            m.iter()
                .map(|((s, ns), t)| (*s as f64 * 1e9 + *ns as f64, *t))
                .collect()
        })
        .unwrap_or_default();
    arr.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut overhead, mut tin, mut tick, mut total, mut model) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut backlog = Vec::new();
    for rec in &recs {
        let stamp = rec.published_stamp.as_nanos() as f64;
        let i = arr.partition_point(|(s, _)| *s < stamp);
        let Some((_, recv)) = arr.get(i).filter(|(s, _)| *s - stamp < 20e6) else {
            continue;
        };
        let recv = wall_ns(*recv);
        let pub_ns = rec.camera_stamp.as_nanos() as f64;
        let m = rec.model.as_nanos() as f64;
        let ready = wall_of(rec.camera_ready);
        let tick_start = wall_of(rec.tick_start);
        let wait = (tick_start - ready).max(0.0);
        total.push((recv - pub_ns) / 1e6);
        overhead.push((recv - pub_ns - m - wait) / 1e6);
        tin.push((ready - pub_ns) / 1e6);
        tick.push((recv - tick_start - m) / 1e6);
        model.push(m / 1e6);
        backlog.push(
            published
                .iter()
                .filter(|p| **p > pub_ns && **p < tick_start)
                .count() as u64,
        );
    }
    let received = stats.frames_in.get("front").copied().unwrap_or(0);
    let superseded = stats.frames_dropped / 2;
    let rejected = stats.frames_rejected;
    let n = published.len() as u64;
    Ok(ModeReport {
        format: if compressed {
            format!("jpeg q{} {}x{}", args.jpeg_quality, args.width, args.height)
        } else {
            format!("raw rgb8 {}x{}", args.width, args.height)
        },
        bytes_per_frame: bytes,
        seconds: args.seconds,
        ticks_measured: overhead.len(),
        overhead_ms: percentiles(overhead),
        transport_in_ms: percentiles(tin),
        tick_to_command_ms: percentiles(tick),
        end_to_end_ms: percentiles(total),
        model_ms: percentiles(model),
        frames_published: n,
        frames_received: received,
        frames_lost: n.saturating_sub(received),
        frames_superseded: superseded,
        frames_rejected: rejected,
        backlog_max: backlog.iter().copied().max().unwrap_or(0),
        backlog_mean: if backlog.is_empty() {
            0.0
        } else {
            backlog.iter().sum::<u64>() as f64 / backlog.len() as f64
        },
        bridge: stats,
    })
}

/// `vla bench ros`: always inside its own network namespace (re-executes itself there).
pub fn bench(args: BenchArgs) -> anyhow::Result<()> {
    if std::env::var_os(netns::ISOLATED_ENV).is_none() {
        netns::available()
            .map_err(anyhow::Error::msg)
            .context("vla bench ros runs DDS in its own network namespace")?;
        let exe = std::env::current_exe()?;
        let argv: Vec<String> = std::env::args().skip(1).collect();
        let status = netns::command(&exe, &argv).status()?;
        anyhow::ensure!(
            status.success(),
            "vla bench ros failed in its namespace ({status})"
        );
        return Ok(());
    }
    anyhow::ensure!(
        args.seconds > 0.0
            && args.camera_hz > 0.0
            && args.width > 0
            && args.height > 0
            && (1..=4096).contains(&args.policy_size),
        "--seconds, --camera-hz, --width, --height and --policy-size must be positive \
         (--policy-size at most 4096)"
    );
    let config = BridgeConfig::load(None, &args.set)?;
    let mut modes = Vec::new();
    for compressed in [false, true] {
        tracing::info!(compressed, seconds = args.seconds, "measuring");
        modes.push(bench_mode(&args, compressed)?);
    }
    let report = BenchReport {
        camera_hz: args.camera_hz,
        control_hz: config.control.rate_hz,
        resolution: [args.width, args.height],
        policy_size: args.policy_size,
        modes,
    };
    super::print_report(args.json, &report, || {
        let mut s = String::new();
        for m in &report.modes {
            s += &format!(
                "{:24} {:8} B  overhead p50 {:6.2} ms p99 {:6.2} ms  lost {} superseded {} backlog max {}\n",
                m.format,
                m.bytes_per_frame,
                m.overhead_ms.p50,
                m.overhead_ms.p99,
                m.frames_lost,
                m.frames_superseded,
                m.backlog_max
            );
        }
        s.trim_end().to_string()
    })
}
