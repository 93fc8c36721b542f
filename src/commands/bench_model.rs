//! `vla bench policy` and `vla bench train`: model speed on this machine.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;
use vla_model::tch::{Device, Kind, Tensor};
use vla_model::{
    left_pad, right_pad, NormStats, Policy, TextTokenizer, TrainStep, VlaBatch, VlaModel,
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
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct TrainReport {
    params: i64,
    batch_size: usize,
    samples_per_s: f64,
    step_ms_mean: f64,
    threads: i32,
    device: String,
    rss_mb: f64,
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
    let (_, mut train_cfg) = vla_model::train::load_config_file(&args.config)?;
    if let Some(b) = args.batch_size {
        train_cfg.batch_size = b;
    }
    let (mut model, tok) = fresh_model(&args.config, device)?;
    let mut step = TrainStep::new(&mut model, train_cfg.optim.clone())?;
    let cfg = model.config().clone();
    let b = train_cfg.batch_size as i64;
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
    let t = Instant::now();
    for _ in 0..args.steps.max(1) {
        step.step(&model, &batch)?;
    }
    let secs = t.elapsed().as_secs_f64();
    let n = args.steps.max(1) as f64;
    let report = TrainReport {
        params: model.num_parameters(),
        batch_size: b as usize,
        samples_per_s: n * b as f64 / secs,
        step_ms_mean: secs * 1e3 / n,
        threads: vla_model::tch::get_num_threads(),
        device: args.device.clone(),
        rss_mb: rss_mb(),
    };
    super::print_report(args.json, &report, || {
        format!(
            "{} params, batch {}: {:.1} samples/s ({:.0} ms/step, {} threads, {})",
            report.params,
            report.batch_size,
            report.samples_per_s,
            report.step_ms_mean,
            report.threads,
            report.device
        )
    })
}
