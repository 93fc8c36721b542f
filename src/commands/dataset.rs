//! `vla dataset …`: inspect, check and look at LeRobot v3.0 datasets, and make them from
//! rosbag2 recordings (`from-mcap`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use vla_datasets::{validate, CameraSpec, Dataset, DatasetSpec, DatasetWriter, RawFrameRecord};
use vla_ros_bridge::mcap_import::{plan_bag, BagFrame, BagPlan, ImportOptions};

#[derive(clap::Subcommand)]
pub enum What {
    /// Episodes, frames, tasks, features, fps and size.
    Info {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Check every file against `meta/`; exits non-zero with the reason.
    Validate {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Write one episode's camera images (front | wrist) as a GIF.
    ExportGif {
        dir: PathBuf,
        #[arg(long)]
        episode: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// Make a new dataset from rosbag2 recordings (MCAP storage): camera, state and action
    /// topics sampled at --fps; one episode per bag, or per start/stop marker.
    FromMcap(FromMcapArgs),
    /// Join datasets (e.g. the shards of `vla collect --shard i/N`) into a new one, in the
    /// order given: episodes and frames renumbered, task and sub-task tables joined, every
    /// frame re-recorded so statistics are recomputed from the data. The sources must record
    /// the same features, fps and robot type.
    Merge {
        #[arg(required = true, num_args = 1.., value_name = "DATASET")]
        sources: Vec<PathBuf>,
        /// Directory of the merged dataset (must not exist, or be empty).
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

/// `vla dataset from-mcap`.
#[derive(clap::Args)]
pub struct FromMcapArgs {
    /// rosbag2 MCAP files, imported in this order (one episode each without --episode-topic).
    #[arg(required = true, value_name = "BAG.mcap")]
    bags: Vec<PathBuf>,
    /// Directory of the new dataset (must not exist, or be empty).
    #[arg(long)]
    out: PathBuf,
    /// A camera as NAME=TOPIC (sensor_msgs/Image: rgb8, bgr8, rgba8, bgra8, mono8; or
    /// sensor_msgs/CompressedImage: jpeg, png), recorded as `observation.images.NAME` at its
    /// own size; repeat for more cameras.
    #[arg(long = "camera", value_name = "NAME=TOPIC", required = true, value_parser = parse_camera)]
    cameras: Vec<CameraTopic>,
    /// State topic: sensor_msgs/JointState (positions, named by the joint names), or any type
    /// --action reads.
    #[arg(long, value_name = "TOPIC")]
    state: String,
    /// Action topic: geometry_msgs/TwistStamped or Twist (linear x y z, angular x y z),
    /// trajectory_msgs/JointTrajectory (the first point's positions),
    /// std_msgs/Float64MultiArray (data) or sensor_msgs/JointState (positions).
    #[arg(long, value_name = "TOPIC")]
    action: String,
    /// Frames per second: the bag is sampled at this rate on its log-time clock.
    #[arg(long)]
    fps: u32,
    /// Task (instruction) of every episode [default: the bag's file name without extension].
    #[arg(long)]
    task: Option<String>,
    /// A topic whose latest message is older than this at a tick makes the tick stale: it is
    /// dropped and counted (seconds) [default: 2/fps].
    #[arg(long, value_name = "SECONDS")]
    tolerance: Option<f64>,
    /// A topic silent for longer than this inside an episode is an error (seconds).
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    max_gap: f64,
    /// std_msgs/String topic of episode markers (`start`, `stop`, `discard`): one episode per
    /// start…stop instead of one per bag.
    #[arg(long, value_name = "TOPIC")]
    episode_topic: Option<String>,
    /// `robot_type` of meta/info.json.
    #[arg(long, default_value = "ros2")]
    robot_type: String,
    /// Print the report (episodes, frames, stale ticks per topic, seconds) as one JSON object.
    #[arg(long)]
    json: bool,
}

/// A `--camera NAME=TOPIC`.
#[derive(Clone, Debug)]
struct CameraTopic {
    name: String,
    topic: String,
}

fn parse_camera(s: &str) -> Result<CameraTopic, String> {
    match s.split_once('=') {
        Some((name, topic)) if !name.is_empty() && !topic.is_empty() => Ok(CameraTopic {
            name: name.to_string(),
            topic: topic.to_string(),
        }),
        _ => Err(format!(
            "{s:?} is not NAME=TOPIC (e.g. front=/camera/image_raw)"
        )),
    }
}

#[derive(Serialize)]
struct Info {
    dir: PathBuf,
    codebase_version: String,
    robot_type: Option<String>,
    episodes: usize,
    frames: usize,
    tasks: usize,
    fps: u32,
    features: Vec<String>,
    size_bytes: u64,
}

pub fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => dir_size(&e.path()),
                    _ => e.metadata().map(|m| m.len()).unwrap_or(0),
                })
                .sum()
        })
        .unwrap_or(0)
}

pub fn run(what: What) -> anyhow::Result<()> {
    match what {
        What::FromMcap(args) => {
            let report = from_mcap(&args)?;
            super::print_report(args.json, &report, || report.summary())
        }
        What::Merge { sources, out, json } => {
            let bar = super::progress(0, "merge");
            let report = vla_datasets::merge(&sources, &out, &mut |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            })?;
            bar.finish_and_clear();
            super::print_report(json, &report, || {
                format!(
                    "{}: merged {} datasets into {} episodes, {} frames, {} tasks{}",
                    report.out.display(),
                    report.sources.len(),
                    report.episodes,
                    report.frames,
                    report.tasks,
                    report
                        .subtasks
                        .map_or(String::new(), |n| format!(", {n} sub-tasks"))
                )
            })
        }
        What::Info { dir, json } => {
            // Vision-language data (`vla vqa collect`) has no LeRobot `meta/`.
            if vla_datasets::vqa::is_vqa_dataset(&dir) {
                return vqa_info(dir, json);
            }
            let ds = Dataset::open(&dir)?;
            let info = ds.info();
            let report = Info {
                codebase_version: info.codebase_version.clone(),
                robot_type: info.robot_type.clone(),
                episodes: info.total_episodes,
                frames: info.total_frames,
                tasks: info.total_tasks,
                fps: info.fps,
                features: info.features.keys().cloned().collect(),
                size_bytes: dir_size(&dir),
                dir,
            };
            super::print_report(json, &report, || {
                format!(
                    "{}: LeRobot {} ({}), {} episodes, {} frames, {} tasks, {} fps, {:.1} MB\nfeatures: {}",
                    report.dir.display(),
                    report.codebase_version,
                    report.robot_type.as_deref().unwrap_or("?"),
                    report.episodes,
                    report.frames,
                    report.tasks,
                    report.fps,
                    report.size_bytes as f64 / 1e6,
                    report.features.join(", ")
                )
            })
        }
        What::Validate { dir, json } => {
            let r = validate(&dir)?;
            let report = serde_json::json!({
                "dir": dir, "valid": true, "episodes": r.total_episodes, "frames": r.total_frames,
                "tasks": r.total_tasks, "subtasks": r.total_subtasks, "data_files": r.data_files,
                "video_files": r.video_files, "images_decoded": r.images_decoded,
            });
            super::print_report(json, &report, || {
                format!(
                    "{}: valid ({} episodes, {} frames, {} data files, {} video files)",
                    dir.display(),
                    r.total_episodes,
                    r.total_frames,
                    r.data_files.len(),
                    r.video_files.len()
                )
            })
        }
        What::ExportGif { dir, episode, out } => {
            let ds = Dataset::open(&dir)?;
            let ep = ds
                .episodes()
                .iter()
                .find(|e| e.episode_index == episode)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}: no episode {episode} (the dataset has {})",
                        dir.display(),
                        ds.episodes().len()
                    )
                })?;
            let indices: Vec<usize> = (ep.dataset_from_index..ep.dataset_to_index).collect();
            let frames = ds.frames(&indices)?;
            let images: Vec<vla_core::RgbImage> = frames
                .iter()
                .filter_map(|f| {
                    let front = f.images.get("observation.images.front")?;
                    let wrist = f.images.get("observation.images.wrist")?;
                    let mut canvas = vla_core::RgbImage::new(
                        front.width() + wrist.width(),
                        front.height().max(wrist.height()),
                    );
                    image::imageops::replace(&mut canvas, front, 0, 0);
                    image::imageops::replace(&mut canvas, wrist, front.width() as i64, 0);
                    Some(canvas)
                })
                .collect();
            anyhow::ensure!(
                !images.is_empty(),
                "{}: episode {episode} has no front/wrist images",
                dir.display()
            );
            vla_sim::record::write_gif(&images, &out, ds.fps() as f32)?;
            println!("{} frames -> {}", images.len(), out.display());
            Ok(())
        }
    }
}

/// `vla dataset info` of a VQA dataset: rows, scenes, kinds of question, held-out share.
fn vqa_info(dir: PathBuf, json: bool) -> anyhow::Result<()> {
    let s = vla_datasets::vqa::summary(&dir)?;
    let report = serde_json::json!({
        "dir": dir, "format": "vqa", "rows": s.rows, "scenes": s.scenes, "kinds": s.kinds,
        "held_out_rows": s.held_out, "held_out_share": s.held_out as f64 / s.rows.max(1) as f64,
        "image_size": s.image_size, "files": s.files, "size_bytes": dir_size(&dir),
    });
    super::print_report(json, &report, || {
        let kinds: Vec<String> = s.kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        format!(
            "{}: vision-language Q&A (Hugging Face parquet), {} questions about {} scenes, \
             {:.0} % with held-out words, {:.1} MB\nkinds: {}",
            dir.display(),
            s.rows,
            s.scenes,
            100.0 * s.held_out as f64 / s.rows.max(1) as f64,
            dir_size(&dir) as f64 / 1e6,
            kinds.join(", ")
        )
    })
}

/// What `vla dataset from-mcap` did with one bag.
#[derive(Serialize)]
struct BagReport {
    bag: PathBuf,
    task: String,
    episodes: usize,
    frames: usize,
    /// Ticks dropped because a topic was stale (see `dropped`).
    dropped_ticks: usize,
    /// Per topic: ticks it made stale.
    dropped: BTreeMap<String, usize>,
    /// Marker episodes that held no frame.
    empty_episodes: usize,
    /// `stop`/`discard` markers outside an episode.
    ignored_markers: usize,
    /// Recorded time the episodes span.
    duration_s: f64,
}

/// The report of `vla dataset from-mcap`.
#[derive(Serialize)]
struct FromMcapReport {
    out: PathBuf,
    episodes: usize,
    frames: usize,
    dropped_ticks: usize,
    dropped: BTreeMap<String, usize>,
    duration_s: f64,
    /// Wall-clock time of the import.
    seconds: f64,
    bags: Vec<BagReport>,
}

impl FromMcapReport {
    fn summary(&self) -> String {
        let dropped: Vec<String> = self
            .dropped
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(t, n)| format!("{t} {n}"))
            .collect();
        format!(
            "{}: {} episodes, {} frames from {} bags ({:.1} s recorded); dropped {} stale ticks{}; took {:.1} s",
            self.out.display(),
            self.episodes,
            self.frames,
            self.bags.len(),
            self.duration_s,
            self.dropped_ticks,
            if dropped.is_empty() {
                String::new()
            } else {
                format!(" ({})", dropped.join(", "))
            },
            self.seconds
        )
    }
}

/// Writes the frames of every bag through one [`DatasetWriter`], created at the first frame
/// (which gives the cameras' image sizes). Every episode is committed to disk as it is saved.
struct McapSink<'a> {
    args: &'a FromMcapArgs,
    state_names: Vec<String>,
    action_names: Vec<String>,
    writer: Option<DatasetWriter>,
    bar: indicatif::ProgressBar,
}

impl McapSink<'_> {
    fn frame(&mut self, plan: &BagPlan, task: &str, f: BagFrame<'_>) -> anyhow::Result<()> {
        let args = self.args;
        if self.writer.is_none() {
            let mut spec = DatasetSpec::with_features(
                args.robot_type.clone(),
                args.fps,
                CameraSpec::of_frame(f.images),
                self.state_names.clone(),
                self.action_names.clone(),
            );
            spec.flush_every_episodes = 1;
            self.writer = Some(DatasetWriter::create(&args.out, spec)?);
        }
        let Some(writer) = self.writer.as_mut() else {
            anyhow::bail!("no dataset writer");
        };
        writer
            .add_raw_frame(RawFrameRecord {
                images: f.images,
                state: f.state,
                action: f.action,
                timestamp: f.frame as f32 / args.fps as f32,
                subtask: None,
            })
            .with_context(|| {
                let cameras: Vec<String> = args
                    .cameras
                    .iter()
                    .map(|c| format!("{} is {}", c.name, c.topic))
                    .collect();
                format!(
                    "{}: frame {} of episode {} does not fit the dataset (cameras: {}; --state {}, --action {})",
                    plan.path().display(),
                    f.frame,
                    f.episode,
                    cameras.join(", "),
                    args.state,
                    args.action
                )
            })?;
        if f.last_of_episode {
            writer.save_episode(task)?;
        }
        self.bar.inc(1);
        Ok(())
    }
}

/// The task of a bag's episodes: `--task`, or the bag's file name without extension.
fn bag_task(args: &FromMcapArgs, bag: &Path) -> String {
    args.task.clone().unwrap_or_else(|| {
        bag.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| bag.display().to_string())
    })
}

/// `vla dataset from-mcap`: every bag is read and checked first (so a bad bag writes nothing),
/// then the frames are written, each episode committed as it ends. An error while writing
/// keeps the episodes committed before it; one before the first episode leaves `--out` as it
/// was.
fn from_mcap(args: &FromMcapArgs) -> anyhow::Result<FromMcapReport> {
    let started = Instant::now();
    let opts = ImportOptions {
        cameras: args
            .cameras
            .iter()
            .map(|c| (c.name.clone(), c.topic.clone()))
            .collect(),
        state_topic: args.state.clone(),
        action_topic: args.action.clone(),
        episode_topic: args.episode_topic.clone(),
        fps: args.fps,
        tolerance_s: args
            .tolerance
            .unwrap_or_else(|| ImportOptions::default_tolerance_s(args.fps)),
        max_gap_s: args.max_gap,
    };
    opts.validate()?;
    let out = &args.out;
    let out_existed = out.exists();
    if out_existed {
        let mut entries = std::fs::read_dir(out)
            .with_context(|| format!("--out {}: not a readable directory", out.display()))?;
        anyhow::ensure!(
            entries.next().is_none(),
            "--out {}: the directory is not empty (from-mcap makes a new dataset)",
            out.display()
        );
    }

    // Pass 1 over every bag: whatever is wrong with one is found before anything is written.
    let bar = super::progress(args.bags.len() as u64, "reading");
    let mut plans = Vec::with_capacity(args.bags.len());
    for bag in &args.bags {
        bar.set_message(bag.display().to_string());
        plans.push(plan_bag(bag, &opts)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let Some((first, rest)) = plans.split_first() else {
        anyhow::bail!("no bag given");
    };
    for plan in rest {
        for (flag, topic, theirs, ours) in [
            (
                "--state",
                &args.state,
                plan.state_names(),
                first.state_names(),
            ),
            (
                "--action",
                &args.action,
                plan.action_names(),
                first.action_names(),
            ),
        ] {
            anyhow::ensure!(
                theirs == ours,
                "{}: {flag} {topic} has entries [{}], but {} has [{}]; one dataset needs the same",
                plan.path().display(),
                theirs.join(", "),
                first.path().display(),
                ours.join(", ")
            );
        }
    }
    let frames: usize = plans.iter().map(BagPlan::frames).sum();
    anyhow::ensure!(
        frames > 0,
        "no frames to write: {} (with --episode-topic, are there start markers after every \
         named topic has spoken?)",
        args.bags
            .iter()
            .map(|b| b.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Pass 2: decode the camera images and write.
    let mut sink = McapSink {
        args,
        state_names: first.state_names().to_vec(),
        action_names: first.action_names().to_vec(),
        writer: None,
        bar: super::progress(frames as u64, "writing"),
    };
    let tasks: Vec<String> = args.bags.iter().map(|b| bag_task(args, b)).collect();
    let written = plans
        .iter()
        .zip(&tasks)
        .try_for_each(|(plan, task)| plan.replay(|f| sink.frame(plan, task, f)));
    sink.bar.finish_and_clear();
    let info = match (written, sink.writer.take()) {
        (Ok(()), Some(writer)) => writer.finalize()?,
        (Ok(()), None) => anyhow::bail!("no frames were written"),
        (Err(err), writer) => {
            // The episode in progress is dropped; every saved one is already committed.
            let committed = match writer {
                Some(w) => w.finalize().map(|i| i.total_episodes).unwrap_or(0),
                None => 0,
            };
            if committed == 0 {
                // Leave --out as it was.
                let _ = std::fs::remove_dir_all(out);
                if out_existed {
                    let _ = std::fs::create_dir_all(out);
                }
                return Err(err.context(format!("nothing was written to {}", out.display())));
            }
            let episodes = if committed == 1 {
                "episode"
            } else {
                "episodes"
            };
            return Err(err.context(format!(
                "{} keeps the {committed} {episodes} written before this error",
                out.display()
            )));
        }
    };

    let mut dropped: BTreeMap<String, usize> = BTreeMap::new();
    let bags: Vec<BagReport> = plans
        .iter()
        .zip(tasks)
        .map(|(plan, task)| {
            let per_topic = plan.stale_per_topic();
            for (topic, n) in &per_topic {
                *dropped.entry(topic.clone()).or_default() += n;
            }
            BagReport {
                bag: plan.path().to_path_buf(),
                task,
                episodes: plan.episodes().len(),
                frames: plan.frames(),
                dropped_ticks: plan.dropped_ticks(),
                dropped: per_topic,
                empty_episodes: plan.empty_episodes(),
                ignored_markers: plan.ignored_markers(),
                duration_s: plan.duration_s(),
            }
        })
        .collect();
    Ok(FromMcapReport {
        out: out.clone(),
        episodes: info.total_episodes,
        frames: info.total_frames,
        dropped_ticks: bags.iter().map(|b| b.dropped_ticks).sum(),
        dropped,
        duration_s: bags.iter().map(|b| b.duration_s).sum(),
        seconds: started.elapsed().as_secs_f64(),
        bags,
    })
}
