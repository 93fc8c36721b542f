//! `vla collect`: expert demonstrations into a LeRobot v3.0 dataset.
//!
//! Episodes run in K environments; each finished episode is written whole (or dropped when the
//! expert failed, unless `--keep-failures`). Ctrl-C stops scheduling new episodes, lets those
//! in flight finish, and finalizes a valid dataset; `--resume` continues it. Which episode
//! specs are already in the dataset is kept in `<out>/.vla_collect.json`, updated only when the
//! writer has flushed, so a SIGKILL never marks an episode done that the dataset lacks.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use vla_core::{Action, Observation};
use vla_datasets::{DatasetSpec, DatasetWriter, FrameRecord, ImageSize};
use vla_tasks::runner::{
    episode_specs, run as run_episodes, Agent, Event, ExpertAgent, RunSetup, Shard,
};

use super::eval::PolicyAgent;
use super::{EpisodeOptions, SimOptions};

#[derive(clap::Args, Clone)]
pub struct Args {
    #[command(flatten)]
    pub run: EpisodeOptions,
    #[arg(long)]
    pub out: PathBuf,
    /// Keep episodes the expert failed.
    #[arg(long)]
    pub keep_failures: bool,
    /// Continue a dataset this command started (same arguments).
    #[arg(long)]
    pub resume: bool,
    /// DAgger: let this trained policy act, and record what the expert would have done in
    /// the states the policy reaches. Every episode is kept (the failures are the point).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// With `--policy`: probability that a step runs the expert's action instead (DAgger's
    /// β), so that later phases of the task are reached too.
    #[arg(long, default_value_t = 0.0)]
    pub expert_share: f64,
    /// Collect only this part of the episodes: `i/N` (the i-th of N contiguous blocks of the
    /// episode specs, so shards have disjoint seeds), or `env` under a launcher (torchrun,
    /// Slurm, mpirun: its rank and world size). The shard's dataset goes to
    /// `OUT/shard-iii-of-NNN`, so every shard can share one `--out`; `vla dataset merge
    /// OUT/shard-* --out DATA` joins them into the dataset one process would have written.
    #[arg(long, value_name = "i/N|env")]
    pub shard: Option<super::ShardArg>,
    /// Store the cameras as video (`av1`, lerobot's default, or `h264`) instead of PNG
    /// images in the data files.
    #[arg(long, value_name = "CODEC", value_parser = super::parse_video)]
    pub video: Option<vla_datasets::VideoSpec>,
    /// Device for `--policy`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sim: SimOptions,
}

/// What `--resume` needs: the request, and which episode specs are settled.
#[derive(Serialize, Deserialize, Default)]
struct Progress {
    suite: String,
    split: String,
    episodes: usize,
    seed: u64,
    noise: f32,
    #[serde(default)]
    push: f32,
    /// `--vocabulary` / `--splits` (none: the built-in ones), so a resume phrases alike.
    #[serde(default)]
    vocabulary: Option<PathBuf>,
    #[serde(default)]
    splits: Option<PathBuf>,
    #[serde(default)]
    shard: Option<Shard>,
    /// The share of steps the expert drove (`--expert-share`; 0 without `--policy`).
    #[serde(default)]
    expert_share: f64,
    /// Spec indices whose episode is flushed into the dataset, or was dropped as a failure.
    settled: BTreeSet<usize>,
}

/// A language file option as the resume error shows it.
fn shown(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map_or("(built-in)".into(), |p| p.display().to_string())
}

impl Progress {
    fn path(out: &Path) -> PathBuf {
        out.join(".vla_collect.json")
    }

    fn save(&self, out: &Path) -> anyhow::Result<()> {
        let path = Self::path(out);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}

#[derive(Serialize)]
pub struct CollectReport {
    pub out: PathBuf,
    pub episodes_written: usize,
    pub episodes_dropped: usize,
    pub frames_written: usize,
    pub total_episodes: usize,
    pub total_frames: usize,
    pub expert_success_rate: f64,
    pub frames_per_s: f64,
    pub interrupted: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let report = collect(&args)?;
    super::print_report(args.json, &report, || {
        format!(
            "{}: wrote {} episodes ({} frames), dropped {}; dataset has {} episodes, {} frames; {:.0} frames/s{}",
            report.out.display(),
            report.episodes_written,
            report.frames_written,
            report.episodes_dropped,
            report.total_episodes,
            report.total_frames,
            report.frames_per_s,
            if report.interrupted { " (interrupted: rerun with --resume)" } else { "" }
        )
    })
}

pub fn collect(args: &Args) -> anyhow::Result<CollectReport> {
    let (families, split) = args.run.validate()?;
    let shard = args.shard.map(super::ShardArg::resolve).transpose()?;
    let out = match shard {
        Some(s) => args.out.join(s.tag()),
        None => args.out.clone(),
    };
    let out = &out;
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.expert_share),
        "--expert-share must be in [0, 1], got {}",
        args.expert_share
    );
    anyhow::ensure!(
        args.policy.is_some() || args.expert_share == 0.0,
        "--expert-share needs --policy"
    );
    let policy = match &args.policy {
        Some(dir) => {
            let p = vla_model::Policy::load(dir, super::train::parse_device(&args.device)?)
                .with_context(|| format!("loading the policy from {}", dir.display()))?;
            super::require_simulator_layout(&p, "vla collect --policy")?;
            Some(p)
        }
        None => None,
    };
    let mut config = args.sim.env_config()?;
    config.render_enabled = true;
    let robot = args.sim.robot()?;
    let lang = args.run.language.language()?;

    let (mut writer, mut progress) = if args.resume {
        let progress_path = Progress::path(out);
        let text = std::fs::read_to_string(&progress_path)
            .with_context(|| format!("--resume: cannot read {}", progress_path.display()))?;
        let progress: Progress = serde_json::from_str(&text)
            .with_context(|| format!("--resume: {} is malformed", progress_path.display()))?;
        anyhow::ensure!(
            progress.suite == args.run.suite
                && progress.split == args.run.split
                && progress.seed == args.run.seed
                && progress.noise == args.run.noise
                && progress.push == args.run.push
                && progress.vocabulary == args.run.language.vocabulary
                && progress.splits == args.run.language.splits
                && progress.shard == shard
                && progress.expert_share == args.expert_share,
            "--resume: {} was collected with --suite {} --split {} --seed {} --noise {} --push {} \
             --vocabulary {} --splits {} --shard {} --expert-share {}",
            out.display(),
            progress.suite,
            progress.split,
            progress.seed,
            progress.noise,
            progress.push,
            shown(&progress.vocabulary),
            shown(&progress.splits),
            progress.shard.map_or("(none)".into(), |s| s.to_string()),
            progress.expert_share,
        );
        (DatasetWriter::open_resume(out)?, progress)
    } else {
        anyhow::ensure!(
            !out.join("meta").exists(),
            "{} already holds a dataset: use --resume to continue it, or another --out",
            out.display()
        );
        let mut spec = DatasetSpec::new(
            robot.name.clone(),
            config.sim.control_hz.round() as u32,
            ImageSize {
                width: config.render.width,
                height: config.render.height,
            },
        );
        // Every frame records the step the expert is on (`subtask_index`), the labels of a
        // policy that says its next step before it acts.
        spec.subtasks = true;
        spec.video = args.video;
        let writer = DatasetWriter::create(out, spec)?;
        let progress = Progress {
            suite: args.run.suite.clone(),
            split: args.run.split.clone(),
            episodes: args.run.episodes,
            seed: args.run.seed,
            noise: args.run.noise,
            push: args.run.push,
            vocabulary: args.run.language.vocabulary.clone(),
            splits: args.run.language.splits.clone(),
            shard,
            expert_share: args.expert_share,
            settled: BTreeSet::new(),
        };
        progress.save(out)?;
        (writer, progress)
    };
    progress.episodes = progress.episodes.max(args.run.episodes);

    let mut specs = episode_specs(&families, split, args.run.episodes, args.run.seed);
    if let Some(s) = shard {
        specs = s.select(specs);
    }
    let specs: Vec<_> = specs
        .into_iter()
        .filter(|s| !progress.settled.contains(&s.index))
        .collect();
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        // A second Ctrl-C falls through to the default (immediate) exit.
        let _ = ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\ninterrupted: finishing the episodes in flight, then closing the dataset (Ctrl-C again to abort)");
        });
    }

    let bar = super::progress(specs.len() as u64, "collect");
    let start = Instant::now();
    let k = args.run.envs.max(1);
    let mut buffers: Vec<Vec<(Observation, Action, Option<String>)>> =
        (0..k).map(|_| Vec::new()).collect();
    let (mut written, mut dropped, mut frames, mut successes, mut finished) =
        (0usize, 0usize, 0usize, 0usize, 0usize);
    // Specs saved to the writer since its last flush, and dropped ones since then.
    let mut pending: Vec<usize> = Vec::new();
    let mut committed = writer.committed_episodes();
    let mut failure: Option<anyhow::Error> = None;

    let setup = RunSetup {
        envs: k,
        config: &config,
        robot: &robot,
        language: &lang,
        noise: args.run.expert_noise(),
    };
    let mut expert = ExpertAgent;
    let mut dagger = policy.as_ref().map(|p| PolicyAgent {
        query_expert: true,
        expert_share: args.expert_share,
        rng: ChaCha8Rng::seed_from_u64(args.run.seed ^ 0xDA66E7),
        ..PolicyAgent::new(p)
    });
    let agent: &mut dyn Agent = match dagger.as_mut() {
        Some(d) => d,
        None => &mut expert,
    };
    run_episodes(&specs, &setup, agent, &mut |event| {
        if failure.is_some() {
            return false;
        }
        match event {
            Event::Reset { slot, .. } => buffers[slot].clear(),
            // The clean expert action is the label; with --noise the noisy one is what ran.
            Event::Step {
                slot,
                label,
                subtask,
                previous,
                ..
            } => buffers[slot].push((previous.clone(), *label, subtask.map(str::to_string))),
            Event::Done { slot, outcome } => {
                finished += 1;
                successes += outcome.success as usize;
                let keep = outcome.success || args.keep_failures || args.policy.is_some();
                let episode = std::mem::take(&mut buffers[slot]);
                if keep {
                    let fps = config.sim.control_hz as f32;
                    let result = (|| -> anyhow::Result<()> {
                        for (i, (obs, action, subtask)) in episode.iter().enumerate() {
                            writer.add_frame(FrameRecord {
                                observation: obs,
                                action: *action,
                                timestamp: i as f32 / fps,
                                subtask: subtask.as_deref(),
                            })?;
                        }
                        writer.save_episode(&outcome.instruction)?;
                        Ok(())
                    })();
                    if let Err(e) = result {
                        failure = Some(e);
                        return false;
                    }
                    written += 1;
                    frames += episode.len();
                } else {
                    dropped += 1;
                }
                pending.push(outcome.spec.index);
                if writer.committed_episodes() != committed {
                    committed = writer.committed_episodes();
                    progress.settled.extend(pending.drain(..));
                    if let Err(e) = progress.save(out) {
                        failure = Some(e);
                        return false;
                    }
                }
                bar.inc(1);
                bar.set_message(format!(
                    "{:.0} frames/s, expert success {:.0} %",
                    frames as f64 / start.elapsed().as_secs_f64().max(1e-9),
                    100.0 * successes as f64 / finished as f64
                ));
            }
        }
        !interrupted.load(Ordering::SeqCst)
    })?;
    bar.finish_and_clear();
    if let Some(e) = failure {
        return Err(e);
    }
    let info = writer.finalize()?;
    progress.settled.extend(pending.drain(..));
    progress.save(out)?;
    Ok(CollectReport {
        out: out.clone(),
        episodes_written: written,
        episodes_dropped: dropped,
        frames_written: frames,
        total_episodes: info.total_episodes,
        total_frames: info.total_frames,
        expert_success_rate: if finished > 0 {
            successes as f64 / finished as f64
        } else {
            0.0
        },
        frames_per_s: frames as f64 / start.elapsed().as_secs_f64().max(1e-9),
        interrupted: interrupted.load(Ordering::SeqCst),
    })
}
