//! `vla train`: train a VLA on LeRobot datasets (see `vla_model::train`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use vla_model::tch::Device;
use vla_model::train::{self, TrainEvent, TrainOptions, TrainSummary};

use crate::plot::{line_plot, Series};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// LeRobot v3.0 dataset directories (repeat for several).
    #[arg(long, required = true, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// Run directory: checkpoints, metrics, plots.
    #[arg(long)]
    pub out: PathBuf,
    /// Model config with an optional `[train]` table.
    #[arg(long, default_value = "vla/configs/tiny.toml")]
    pub config: PathBuf,
    /// Override `train.steps`.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Override `train.batch_size`.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Override `train.optim.lr`.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Override `train.seed`.
    #[arg(long)]
    pub seed: Option<u64>,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Continue from the newest checkpoint in `--out`.
    #[arg(long)]
    pub resume: bool,
    /// Fine-tune: start from this run's weights, tokenizer and action statistics, with a
    /// fresh optimiser and schedule (e.g. a DAgger round on aggregated data).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Start the language model from a pretrained Hugging Face directory (`vla import-lm`'s
    /// output, or any `LlamaForCausalLM` saved as safetensors): its config replaces the
    /// `[text]` table, its tokenizer becomes the run's, and the action ids are added.
    #[arg(long, conflicts_with = "init")]
    pub init_lm: Option<PathBuf>,
    /// Co-train (RT-2) on this vision-language dataset (`vla vqa collect`): its answers are
    /// learned as text tokens by the same LM head, beside the robot frames' actions.
    #[arg(long)]
    pub vqa: Option<PathBuf>,
    /// The vision-language share of each batch: `batch_size` robot frames and
    /// `batch_size · r / (1 − r)` vision-language examples per step.
    #[arg(long, default_value_t = 0.2)]
    pub vqa_ratio: f64,
    /// Train the tokenizer on this vision-language dataset's questions and answers too,
    /// without co-training on it: a run without co-training that shares a co-trained run's
    /// tokenizer (`vla demo --ablation cotrain`).
    #[arg(long, conflicts_with = "vqa")]
    pub vqa_words: Option<PathBuf>,
    /// libtorch intra-op threads (default: libtorch's choice, one per core; with --nproc,
    /// the cores shared among the workers).
    #[arg(long)]
    pub threads: Option<i32>,
    /// Stop after this step with a checkpoint, as Ctrl-C would; `--resume` continues the run
    /// exactly (a job's share of a long run under a scheduler's time limit).
    #[arg(long)]
    pub until: Option<usize>,
    /// Data-parallel training: start this many local worker processes (ranks) that split
    /// every global batch and average gradients on PyTorch's c10d. Under a launcher
    /// (`torchrun --nproc-per-node N --no-python vla train …`, Slurm's `srun`, `mpirun`) the
    /// ranks come from RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT instead.
    #[arg(long, default_value_t = 1)]
    pub nproc: usize,
    /// Collective backend of a data-parallel run: gloo (CPU) or nccl (CUDA). Default: nccl
    /// on a CUDA device, gloo otherwise.
    #[arg(long)]
    pub dist_backend: Option<vla_dist::Backend>,
    /// Seconds a rank waits for the others (rendezvous and every collective) before it
    /// gives up with an error: a dead rank stops the run instead of hanging it.
    #[arg(long, default_value_t = 600)]
    pub dist_timeout: u64,
    /// An image or video feature the policy reads, in camera order (repeat); default: the
    /// dataset's one or two cameras (front before wrist). See `vla_model::features`.
    #[arg(long = "camera", value_name = "KEY")]
    pub cameras: Vec<String>,
    /// What the action's numbers command: end_effector_delta, joint_positions or other
    /// [default: inferred from the entry names].
    #[arg(long, value_name = "SPACE", value_parser = parse_action_space)]
    pub action_space: Option<vla_model::ActionSpace>,
    /// The action dimension of the gripper, or `none` [default: inferred from the names].
    #[arg(long, value_name = "N|none", value_parser = parse_gripper_dim)]
    pub gripper_dim: Option<GripperDim>,
    #[arg(long)]
    pub json: bool,
}

pub fn parse_device(s: &str) -> anyhow::Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => Ok(Device::Cuda(i)),
            _ => anyhow::bail!("--device {other:?}: expected cpu, cuda or cuda:N"),
        },
    }
}

/// Applies `--threads` (libtorch intra-op threads) when given.
pub fn set_threads(threads: Option<i32>) -> anyhow::Result<()> {
    if let Some(t) = threads {
        anyhow::ensure!(t > 0, "--threads must be at least 1");
        vla_model::tch::set_num_threads(t);
    }
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let launched = vla_dist::Rendezvous::from_env()?.is_some();
    if args.nproc > 1 && !launched {
        return launch(&args);
    }
    let (summary, main) = train_ranked(&args)?;
    if !main {
        return Ok(());
    }
    super::print_report(args.json, &summary, || {
        let mut s = format!(
            "trained {} steps ({} → {}) in {:.0} s, {:.1} samples/s, {} parameters\n",
            summary.steps - summary.start_step,
            summary.start_step,
            summary.steps,
            summary.seconds,
            summary.samples_per_s,
            summary.params
        );
        if let Some(v) = &summary.final_val {
            s += &format!(
                "validation: loss {:.3}, token accuracy {:.1} %, L1 {:.4}, gripper {:.1} %\n",
                v.loss,
                100.0 * v.accuracy,
                v.l1,
                100.0 * v.gripper_accuracy
            );
        }
        s + &format!("run: {}", summary.out.display())
    })
}

/// Starts `args.nproc` ranks of this same command on this machine, as torchrun would, and
/// waits for them; one rank's failure stops the others.
fn launch(args: &Args) -> anyhow::Result<()> {
    super::launch_ranks(args.nproc, args.threads, &[])
        .context("the last checkpoint is intact: --resume continues from it")
}

/// Joins the launcher's process group (c10d's TCPStore rendezvous at MASTER_ADDR:PORT).
pub fn join_group(
    rv: &vla_dist::Rendezvous,
    backend: vla_dist::Backend,
    timeout: std::time::Duration,
) -> anyhow::Result<train::distributed::DataParallel> {
    let pg = vla_dist::ProcessGroup::new(rv, backend, timeout)?;
    tracing::info!(
        rank = rv.rank,
        world_size = rv.world_size,
        %backend,
        "joined the data-parallel run"
    );
    Ok(train::distributed::DataParallel::new(pg))
}

/// Trains as `args` say; used by `vla train` and `vla demo`.
pub fn train(args: &Args) -> anyhow::Result<TrainSummary> {
    Ok(train_ranked(args)?.0)
}

/// Trains as `args` say, as one rank of a data-parallel run when a launcher set the
/// environment; returns whether this process is the one that reports (rank 0).
fn train_ranked(args: &Args) -> anyhow::Result<(TrainSummary, bool)> {
    let (model, mut train_cfg) = train::load_config_file(&args.config)?;
    if let Some(s) = args.steps {
        train_cfg.steps = s;
    }
    if let Some(b) = args.batch_size {
        train_cfg.batch_size = b;
    }
    if let Some(lr) = args.lr {
        train_cfg.optim.lr = lr;
    }
    if let Some(seed) = args.seed {
        train_cfg.seed = seed;
    }
    set_threads(args.threads)?;
    let mut device = parse_device(&args.device)?;
    let dist = match vla_dist::Rendezvous::from_env()? {
        Some(rv) if rv.world_size > 1 => {
            let backend = args.dist_backend.unwrap_or(match device {
                Device::Cuda(_) => vla_dist::Backend::Nccl,
                _ => vla_dist::Backend::Gloo,
            });
            if let (vla_dist::Backend::Nccl, Device::Cuda(_)) = (backend, device) {
                // One GPU per rank on its node.
                device = Device::Cuda(rv.local_rank);
            }
            let timeout = std::time::Duration::from_secs(args.dist_timeout);
            Some(join_group(&rv, backend, timeout)?)
        }
        _ => None,
    };
    let main = dist.as_ref().is_none_or(|d| d.is_main());
    let corpus = vla_tasks::Language::builtin()?.corpus();
    anyhow::ensure!(
        args.vqa_ratio > 0.0 && args.vqa_ratio < 0.95,
        "--vqa-ratio {} must be in (0, 0.95)",
        args.vqa_ratio
    );
    let cotrain = match &args.vqa {
        Some(dir) => Some(train::CoTraining {
            source: dir.clone(),
            examples: vqa_examples(dir)?,
            ratio: args.vqa_ratio,
        }),
        _ => None,
    };
    let questions = match &args.vqa_words {
        Some(dir) => vqa_examples(dir)?
            .into_iter()
            .flat_map(|e| [e.question, e.answer])
            .collect(),
        None => Vec::new(),
    };
    let opts = TrainOptions {
        data: args.data.clone(),
        out: args.out.clone(),
        model,
        train: train_cfg.clone(),
        device,
        resume: args.resume,
        init: args.init.clone(),
        init_lm: args.init_lm.clone(),
        corpus,
        questions,
        cotrain,
        until: args.until,
        dist,
        mapping: vla_model::MappingOverrides {
            cameras: args.cameras.clone(),
            action_space: args.action_space,
            gripper_dim: args.gripper_dim.map(|g| g.0),
        },
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // A second Ctrl-C (or a handler already installed) falls back to the default.
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\ninterrupt: saving a checkpoint, then stopping (Ctrl-C again to abort)");
        });
    }
    // Rank 0 shows progress and writes the run's plots; the others work quietly.
    let bar_for = |total: u64, what: &str| {
        if main {
            super::progress(total, what)
        } else {
            indicatif::ProgressBar::hidden()
        }
    };
    let load_bar = bar_for(0, "loading");
    let mut bar: Option<indicatif::ProgressBar> = None;
    let out = args.out.clone();
    let mut on_event = |event: TrainEvent<'_>| -> bool {
        match event {
            TrainEvent::Loading { done, total } => {
                load_bar.set_length(total as u64);
                load_bar.set_position(done as u64);
            }
            TrainEvent::Started {
                data,
                params,
                start_step,
                total_steps,
            } => {
                load_bar.finish_and_clear();
                tracing::info!(
                    frames = data.frames,
                    train_episodes = data.train_episodes,
                    val_episodes = data.val_episodes,
                    tasks = data.tasks,
                    params,
                    start_step,
                    "training"
                );
                let b = bar_for(total_steps as u64, "train");
                b.set_position(start_step as u64);
                b.reset_eta();
                bar = Some(b);
            }
            TrainEvent::Step {
                stats,
                samples_per_s,
            } => {
                if let Some(b) = &bar {
                    b.set_position(stats.step as u64 + 1);
                    b.set_message(format!(
                        "loss {:.3} acc {:.0} % {:.0} samples/s",
                        stats.loss,
                        100.0 * stats.accuracy,
                        samples_per_s
                    ));
                }
            }
            TrainEvent::Validated(v) if main => {
                tracing::info!(
                    step = v.step,
                    loss = format!("{:.4}", v.loss),
                    accuracy = format!("{:.3}", v.accuracy),
                    l1 = format!("{:.5}", v.l1),
                    gripper = format!("{:.3}", v.gripper_accuracy),
                    target_far_cm = ?v.target_error_far_cm,
                    target_near_cm = ?v.target_error_near_cm,
                    subgoal_accuracy = ?v.subgoal_accuracy,
                    vqa_seen = ?v.vqa_accuracy_seen,
                    vqa_held_out = ?v.vqa_accuracy_held_out,
                    "validation"
                );
                if let Err(e) = main.then(|| plot_losses(&out)).transpose() {
                    tracing::warn!("loss plot: {e:#}");
                }
            }
            TrainEvent::Validated(_) => {}
            TrainEvent::Checkpoint { step, dir } => {
                tracing::debug!(step, dir = %dir.display(), "checkpoint");
            }
        }
        !stop.load(Ordering::SeqCst)
    };
    let summary = train::train(&opts, &mut on_event)
        .with_context(|| format!("training into {}", args.out.display()))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if main {
        plot_losses(&args.out)?;
    }
    Ok((summary, main))
}

/// `RUN/loss.png`: training loss (mean per log interval) and validation loss per step.
pub fn plot_losses(run: &Path) -> anyhow::Result<()> {
    let metrics = train::read_metrics(run)?;
    let series = |kind: &str| -> Vec<(f64, f64)> {
        metrics
            .iter()
            .filter(|m| m.get("kind").and_then(|k| k.as_str()) == Some(kind))
            .filter_map(|m| Some((m.get("step")?.as_f64()?, m.get("loss")?.as_f64()?)))
            .collect()
    };
    line_plot(
        &run.join("loss.png"),
        "action-token cross-entropy",
        "step",
        &[
            Series {
                label: "train",
                color: [31, 119, 180],
                points: series("train"),
            },
            Series {
                label: "validation",
                color: [214, 39, 40],
                points: series("val"),
            },
        ],
    )
}

/// The examples of a vision-language dataset (`vla vqa collect`), for co-training.
fn vqa_examples(dir: &Path) -> anyhow::Result<Vec<vla_model::train::vqa::VqaExample>> {
    let data = vla_datasets::vqa::VqaDataset::open(dir)
        .with_context(|| format!("--vqa {}: not a vision-language dataset", dir.display()))?;
    anyhow::ensure!(
        !data.rows.is_empty(),
        "--vqa {}: the dataset holds no question",
        dir.display()
    );
    Ok(data
        .rows
        .into_iter()
        .map(|r| {
            // A pointing answer is "x y" in pixels of the front image: a place the
            // grounding heads learn too.
            let point = (r.kind == "point")
                .then(|| {
                    let mut xy = r.answer.split_whitespace().map(str::parse::<f32>);
                    let (x, y) = (xy.next()?.ok()?, xy.next()?.ok()?);
                    let (w, h) = (r.image.width() as f32, r.image.height() as f32);
                    Some([(x + 0.5) / w, (y + 0.5) / h])
                })
                .flatten();
            vla_model::train::vqa::VqaExample {
                front: r.image,
                wrist: r.wrist_image,
                question: r.question,
                answer: r.answer,
                held_out: r.held_out,
                scene: r.scene,
                point,
            }
        })
        .collect())
}

/// `--gripper-dim N|none`.
#[derive(Clone, Copy, Debug)]
pub struct GripperDim(Option<usize>);

fn parse_gripper_dim(s: &str) -> Result<GripperDim, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(GripperDim(None));
    }
    s.parse()
        .map(|i| GripperDim(Some(i)))
        .map_err(|_| format!("{s:?} is not an action dimension (0, 1, …) or none"))
}

fn parse_action_space(s: &str) -> Result<vla_model::ActionSpace, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("{s:?}: expected end_effector_delta, joint_positions or other"))
}
