//! `vla bench policy` and `vla bench train`: model speed on this machine.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use vla_model::tch::{Device, Kind, Tensor};
use vla_model::{
    left_pad, right_pad, AuxTargets, NormStats, Policy, TextTokenizer, TrainStep, VlaBatch,
    VlaModel,
};

use super::train::{parse_device, set_threads};

#[derive(clap::Args)]
pub struct PolicyArgs {
    /// Trained run directory; without it, a freshly initialised model of `--config`.
    #[arg(long)]
    ckpt: Option<PathBuf>,
    #[arg(long, default_value = "vla/configs/tiny.toml")]
    config: PathBuf,
    /// Closed-loop steps to time (after 10 warm-up steps).
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// libtorch intra-op threads.
    #[arg(long)]
    threads: Option<i32>,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct PolicyReport {
    params: i64,
    /// Control steps per forward pass: `action.chunk_size` when a chunk is executed open
    /// loop (the timed steps then mix decodes with steps read off the queue), else 1.
    actions_per_decode: usize,
    step_ms_p50: f64,
    step_ms_p99: f64,
    step_ms_mean: f64,
    /// Control steps per second sustained over the timed steps (1000 / mean): with open-loop
    /// chunks most steps only read the queue, so the median would overstate the rate.
    hz: f64,
    rss_mb: f64,
    threads: i32,
    device: String,
    steps: usize,
}

#[derive(clap::Args)]
pub struct TrainArgs {
    #[arg(long, default_value = "vla/configs/tiny.toml")]
    config: PathBuf,
    /// Override the config's batch size.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Optimisation steps to time (after 3 warm-up steps).
    #[arg(long, default_value_t = 20)]
    steps: usize,
    #[arg(long)]
    threads: Option<i32>,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Also time N data-parallel ranks at the same global batch (started here as `vla train
    /// --nproc` starts them, each with cores/N threads unless --threads is given) and report
    /// their samples/s beside one process's, and the scaling efficiency. Under a launcher
    /// (torchrun, srun, mpirun) this process is one rank.
    #[arg(long, default_value_t = 1)]
    nproc: usize,
    /// Collective backend of the ranks (default: gloo on CPU, nccl on CUDA).
    #[arg(long)]
    dist_backend: Option<vla_dist::Backend>,
    /// Where rank 0 writes its report (set by the --nproc launcher).
    #[arg(long, hide = true)]
    report_to: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize, serde::Deserialize)]
struct TrainReport {
    params: i64,
    /// The global batch: every rank's slices together.
    batch_size: usize,
    samples_per_s: f64,
    step_ms_mean: f64,
    /// libtorch threads per process.
    threads: i32,
    device: String,
    rss_mb: f64,
    /// Processes that stepped together (1 without data parallelism).
    #[serde(default = "one")]
    ranks: usize,
    /// Values read back to the host per optimisation step (each one a host synchronisation
    /// on a GPU), counted by `vla_model::host`.
    #[serde(default)]
    host_reads_per_step: f64,
}

fn one() -> usize {
    1
}

/// `vla bench train --nproc N`: one process and N ranks at the same global batch.
#[derive(Serialize)]
struct ScalingReport {
    ranks: usize,
    backend: String,
    one_process: TrainReport,
    data_parallel: TrainReport,
    /// The ranks' samples/s over one process's: 1.0 is perfect scaling on this machine.
    efficiency: f64,
}

/// Resident memory of this process (MiB), from `/proc/self/status`.
pub fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn fresh_model(
    config: &std::path::Path,
    device: Device,
) -> anyhow::Result<(VlaModel, TextTokenizer)> {
    let (mut cfg, train) = vla_model::train::load_config_file(config)?;
    // LoRA freezes the LM: what a step costs then differs (no weight gradients kept).
    cfg.text.lora = train.lora;
    let corpus = vla_tasks::Language::builtin()?.corpus();
    let tok = TextTokenizer::train_for_instructions(&corpus, cfg.text.vocab_size)?;
    if cfg.text.eos_token_id.is_none() {
        cfg.text.eos_token_id = tok.eos_id().map(|id| id as usize);
    }
    let stats = NormStats::unit(&cfg);
    Ok((VlaModel::new(cfg, stats, device, 0)?, tok))
}

pub fn policy(args: PolicyArgs) -> anyhow::Result<()> {
    set_threads(args.threads)?;
    let device = parse_device(&args.device)?;
    let policy = match &args.ckpt {
        Some(dir) => Policy::load(dir, device)?,
        None => {
            let (m, t) = fresh_model(&args.config, device)?;
            Policy::from_parts(m, t)
        }
    };
    // A real first observation of a pick episode (rendered), so the timing covers exactly
    // what the closed loop does: resize, encode both cameras, prefill, decode 7 tokens.
    let obs = super::act::first_observation("pick", 0)?;
    let instruction = obs.instruction.clone();
    for _ in 0..10 {
        policy.act(&obs, &instruction)?;
    }
    let mut times = Vec::with_capacity(args.steps);
    for _ in 0..args.steps.max(1) {
        let t = Instant::now();
        policy.act(&obs, &instruction)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    times.sort_by(f64::total_cmp);
    let action = &policy.model().config().action;
    let report = PolicyReport {
        params: policy.model().num_parameters(),
        actions_per_decode: match action.chunk_execution {
            vla_model::config::ChunkExecution::OpenLoop => action.chunk_size,
            vla_model::config::ChunkExecution::Ensemble => 1,
        },
        step_ms_p50: percentile(&times, 0.5),
        step_ms_p99: percentile(&times, 0.99),
        step_ms_mean: mean,
        hz: 1e3 / mean,
        rss_mb: rss_mb(),
        threads: vla_model::tch::get_num_threads(),
        device: args.device.clone(),
        steps: times.len(),
    };
    super::print_report(args.json, &report, || {
        format!(
            "{} params: p50 {:.1} ms, p99 {:.1} ms → {:.1} Hz ({} threads, {}), RSS {:.0} MB",
            report.params,
            report.step_ms_p50,
            report.step_ms_p99,
            report.hz,
            report.threads,
            report.device,
            report.rss_mb
        )
    })
}

pub fn train(args: TrainArgs) -> anyhow::Result<()> {
    set_threads(args.threads)?;
    let device = parse_device(&args.device)?;
    let backend = args.dist_backend.unwrap_or(match device {
        Device::Cuda(_) => vla_dist::Backend::Nccl,
        _ => vla_dist::Backend::Gloo,
    });
    match vla_dist::Rendezvous::from_env()? {
        // One rank of a launched job: time the data-parallel steps, rank 0 reports.
        Some(rv) if rv.world_size > 1 => {
            let device = match (backend, device) {
                (vla_dist::Backend::Nccl, Device::Cuda(_)) => Device::Cuda(rv.local_rank),
                _ => device,
            };
            let timeout = std::time::Duration::from_secs(300);
            let dp = super::train::join_group(&rv, backend, timeout)?;
            let report = measure(&args, device, Some(dp))?;
            if rv.rank != 0 {
                return Ok(());
            }
            match &args.report_to {
                Some(path) => std::fs::write(path, serde_json::to_vec(&report)?)
                    .with_context(|| format!("cannot write {}", path.display())),
                None => print_train(args.json, &report),
            }
        }
        _ if args.nproc > 1 => {
            let (_, train_cfg) = vla_model::train::load_config_file(&args.config)?;
            let global = args.batch_size.unwrap_or(train_cfg.batch_size);
            vla_model::train::distributed::check_batch(global, args.nproc)?;
            let one_process = measure(&args, device, None)?;
            let path = std::env::temp_dir().join(format!(
                "vla-bench-train-{}-{}.json",
                std::process::id(),
                args.nproc
            ));
            super::launch_ranks(
                args.nproc,
                args.threads,
                &["--report-to".into(), path.clone().into_os_string()],
            )?;
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("rank 0 left no report in {}", path.display()))?;
            let _ = std::fs::remove_file(&path);
            let data_parallel: TrainReport = serde_json::from_str(&text)
                .with_context(|| format!("rank 0's report {} is malformed", path.display()))?;
            let report = ScalingReport {
                ranks: args.nproc,
                backend: backend.to_string(),
                efficiency: data_parallel.samples_per_s / one_process.samples_per_s,
                one_process,
                data_parallel,
            };
            super::print_report(args.json, &report, || {
                format!(
                    "1 process: {:.1} samples/s ({} threads); {} {} ranks: {:.1} samples/s \
                     ({} threads each) → scaling efficiency {:.0} % (global batch {})",
                    report.one_process.samples_per_s,
                    report.one_process.threads,
                    report.ranks,
                    report.backend,
                    report.data_parallel.samples_per_s,
                    report.data_parallel.threads,
                    100.0 * report.efficiency,
                    report.data_parallel.batch_size
                )
            })
        }
        _ => print_train(args.json, &measure(&args, device, None)?),
    }
}

fn print_train(json: bool, report: &TrainReport) -> anyhow::Result<()> {
    super::print_report(json, report, || {
        format!(
            "{} params, batch {}: {:.1} samples/s ({:.0} ms/step, {:.1} host reads/step, {} threads, {}{})",
            report.params,
            report.batch_size,
            report.samples_per_s,
            report.step_ms_mean,
            report.host_reads_per_step,
            report.threads,
            report.device,
            match report.ranks {
                1 => String::new(),
                n => format!(", {n} ranks"),
            }
        )
    })
}

/// Times optimisation steps on a synthetic batch of the config's shapes: the whole global
/// batch in one process, or this rank's slice of it with gradients averaged over `dp`.
fn measure(
    args: &TrainArgs,
    device: Device,
    dp: Option<vla_model::train::distributed::DataParallel>,
) -> anyhow::Result<TrainReport> {
    let (_, mut train_cfg) = vla_model::train::load_config_file(&args.config)?;
    if let Some(b) = args.batch_size {
        train_cfg.batch_size = b;
    }
    let (mut model, tok) = fresh_model(&args.config, device)?;
    let mut step = TrainStep::new(&mut model, train_cfg.optim.clone())?;
    let global = train_cfg.batch_size;
    let (ranks, local) = match &dp {
        Some(dp) => {
            vla_model::train::distributed::check_batch(global, dp.world_size())?;
            // Every rank starts from rank 0's weights, as `vla train` does.
            dp.broadcast_model(&model)?;
            step.set_data_parallel(dp.clone())?;
            (dp.world_size(), dp.shard(global).len())
        }
        None => (1, global),
    };
    let cfg = model.config().clone();
    let b = local as i64;
    let s = cfg.vision.image_size as i64;
    vla_model::tch::manual_seed(0);
    let prompt = tok.encode_prompt("put the red cube in the blue bin")?;
    let (prompt_ids, prompt_mask) = left_pad(&vec![prompt; b as usize], tok.pad_id());
    let actions: Vec<Vec<f32>> = (0..b)
        .map(|i| vec![0.1 * (i % 7) as f32 - 0.3; cfg.action.action_dim])
        .collect();
    let batch = VlaBatch {
        images: Tensor::randint(
            256,
            [b, cfg.vision.num_cameras as i64, 3, s, s],
            (Kind::Uint8, Device::Cpu),
        ),
        state: Some(Tensor::randn(
            [b, cfg.action.state_dim as i64],
            (Kind::Float, Device::Cpu),
        )),
        prompt_ids,
        prompt_mask,
        // A chunked model learns K actions per frame: the same one K times will do here.
        action_tokens: model
            .encode_actions(&actions)?
            .repeat([1, cfg.action.chunk_size as i64]),
        action_is_pad: None,
        // A model with a plan also learns the sub-task's tokens (the prompt's sentence).
        subtask: match cfg.plan.enabled() {
            true => Some(right_pad(
                &vec![tok.encode_subtask("put the red cube in the blue bin")?; b as usize],
                tok.pad_id(),
            )),
            false => None,
        },
    }
    .to_device(device);
    for _ in 0..3 {
        step.step(&model, &batch)?;
    }
    // The ranks start and stop the clock together.
    let sync = |dp: &Option<vla_model::train::distributed::DataParallel>| -> anyhow::Result<()> {
        if let Some(dp) = dp {
            dp.all(true)?;
        }
        Ok(())
    };
    sync(&dp)?;
    let reads = vla_model::host::reads();
    let t = Instant::now();
    // As the training loop steps between two logs: nothing read back until the last step.
    let mut last = None;
    for _ in 0..args.steps.max(1) {
        last = Some(step.step_with_targets(&model, &batch, &AuxTargets::default())?);
    }
    if let Some(last) = last {
        last.resolve()?;
    }
    sync(&dp)?;
    let secs = t.elapsed().as_secs_f64();
    let reads = vla_model::host::reads() - reads;
    let n = args.steps.max(1) as f64;
    Ok(TrainReport {
        params: model.num_parameters(),
        batch_size: global,
        samples_per_s: n * global as f64 / secs,
        step_ms_mean: secs * 1e3 / n,
        threads: vla_model::tch::get_num_threads(),
        device: args.device.clone(),
        rss_mb: rss_mb(),
        ranks,
        host_reads_per_step: reads as f64 / n,
    })
}
