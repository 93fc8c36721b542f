//! `vla act`: one action from a trained policy for an image and an instruction.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use vla_core::{Observation, ACTION_NAMES, STATE_DIM};
use vla_model::Policy;
use vla_sim::{Env, EnvConfig, RobotDescription, VecEnv};
use vla_tasks::{make_task, Language, Split};

use super::train::parse_device;

#[derive(clap::Args)]
pub struct Args {
    /// Run directory written by `vla train`.
    #[arg(long)]
    ckpt: PathBuf,
    /// Front camera image (PNG or JPEG, any size: resized to the model's).
    #[arg(long)]
    image: PathBuf,
    /// Wrist camera image; defaults to the front image (the model expects both cameras).
    #[arg(long)]
    wrist: Option<PathBuf>,
    #[arg(long)]
    instruction: String,
    /// Proprioceptive state, comma-separated (see `vla tasks`); default: the training mean.
    #[arg(long)]
    state: Option<String>,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct ActReport {
    instruction: String,
    tokens: Vec<i64>,
    action: Vec<f32>,
    action_names: Vec<&'static str>,
    latency_ms: f64,
}

fn load_image(path: &Path) -> anyhow::Result<vla_core::RgbImage> {
    Ok(image::open(path)
        .with_context(|| format!("cannot read image {}", path.display()))?
        .to_rgb8())
}

fn parse_state(text: &str) -> anyhow::Result<[f32; STATE_DIM]> {
    let values = text
        .split(',')
        .map(|v| {
            v.trim()
                .parse::<f32>()
                .map_err(|e| anyhow::anyhow!("--state: {v:?} is not a number: {e}"))
        })
        .collect::<anyhow::Result<Vec<f32>>>()?;
    anyhow::ensure!(
        values.len() == STATE_DIM,
        "--state has {} values, expected {STATE_DIM}",
        values.len()
    );
    anyhow::ensure!(
        values.iter().all(|v| v.is_finite()),
        "--state has a non-finite value"
    );
    let mut s = [0.0; STATE_DIM];
    s.copy_from_slice(&values);
    Ok(s)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let policy = Policy::load(&args.ckpt, parse_device(&args.device)?)?;
    let front = load_image(&args.image)?;
    let wrist = match &args.wrist {
        Some(p) => load_image(p)?,
        None => front.clone(),
    };
    let state = match &args.state {
        Some(s) => parse_state(s)?,
        None => {
            let mean = &policy.model().norm_stats().state.mean;
            let mut s = [0.0; STATE_DIM];
            for (d, v) in s.iter_mut().zip(mean) {
                *d = *v;
            }
            s
        }
    };
    let obs = Observation {
        front,
        wrist,
        front_depth: None,
        state,
        instruction: args.instruction.clone(),
    };
    let t = Instant::now();
    let mut out = policy.act_batch_with_tokens(&[(&obs, args.instruction.as_str())])?;
    let latency_ms = t.elapsed().as_secs_f64() * 1e3;
    let (tokens, action) = out.pop().context("the policy returned no action")?;
    let report = ActReport {
        instruction: args.instruction,
        tokens,
        action: action.0.to_vec(),
        action_names: ACTION_NAMES.to_vec(),
        latency_ms,
    };
    super::print_report(args.json, &report, || {
        let mut s = format!("tokens {:?}\n", report.tokens);
        for (n, v) in report.action_names.iter().zip(&report.action) {
            s += &format!("  {n:8} {v:+.5}\n");
        }
        s + &format!("({:.1} ms)", report.latency_ms)
    })
}

/// The first observation of an episode of `family` (rendered), e.g. for benchmarks.
pub fn first_observation(family: &str, seed: u64) -> anyhow::Result<Observation> {
    let lang = Language::builtin()?;
    let config = EnvConfig {
        render_enabled: true,
        ..EnvConfig::default()
    };
    let env = Env::new(
        make_task(family, Split::Seen, &lang, 0.0, seed)?,
        config,
        RobotDescription::default_arm()?,
    );
    let mut vec_env = VecEnv::new(vec![env])?;
    let mut obs = vec_env.reset(&[seed])?;
    obs.pop().context("the environment returned no observation")
}
