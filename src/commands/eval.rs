//! `vla eval`: closed-loop success of a trained policy on the task suite, in the same JSON
//! shape as `vla expert` (with 95 % Wilson intervals), plus GIFs of the first successes and
//! failures per family under `RUN/eval/`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use vla_core::{Action, Observation};
use vla_model::Policy;
use vla_sim::record::GifRecorder;
use vla_sim::Env;
use vla_tasks::runner::{episode_specs, run as run_episodes, Agent, Event, RunSetup, SuiteReport};
use vla_tasks::{Language, TaskError};

use super::train::parse_device;
use super::{EpisodeOptions, SimOptions};

#[derive(clap::Args)]
pub struct Args {
    /// Run directory written by `vla train`.
    #[arg(long)]
    pub ckpt: PathBuf,
    #[command(flatten)]
    pub run: EpisodeOptions,
    /// GIFs of the first successes and of the first failures to keep per family.
    #[arg(long, default_value_t = 2)]
    pub gifs: usize,
    /// Where GIFs and the report go (default: RUN/eval).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// libtorch intra-op threads.
    #[arg(long)]
    pub threads: Option<i32>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sim: SimOptions,
}

/// The trained policy as an episode-runner agent: one batched forward pass for every
/// environment that needs an action this step.
pub struct PolicyAgent<'a> {
    pub policy: &'a Policy,
}

impl Agent for PolicyAgent<'_> {
    fn act(
        &mut self,
        _envs: &mut [Env],
        _active: &[usize],
        observations: &[&Observation],
    ) -> Result<Vec<Action>, TaskError> {
        let items: Vec<(&Observation, &str)> = observations
            .iter()
            .map(|o| (*o, o.instruction.as_str()))
            .collect();
        self.policy
            .act_batch(&items)
            .map_err(|e| TaskError::Agent(format!("policy: {e}")))
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let report = evaluate(&args)?;
    super::print_report(args.json, &report, || super::expert::human(&report))
}

/// Runs the evaluation and writes `OUT/{suite}_{split}.json` and the GIFs.
pub fn evaluate(args: &Args) -> anyhow::Result<SuiteReport> {
    let (families, split) = args.run.validate()?;
    super::train::set_threads(args.threads)?;
    let policy = Policy::load(&args.ckpt, parse_device(&args.device)?)
        .with_context(|| format!("loading the policy from {}", args.ckpt.display()))?;
    let out_dir = args.out.clone().unwrap_or_else(|| args.ckpt.join("eval"));
    let gif_dir = out_dir.join(split.as_str());
    std::fs::create_dir_all(&gif_dir)
        .with_context(|| format!("cannot create {}", gif_dir.display()))?;
    let mut config = args.sim.env_config()?;
    config.render_enabled = true;
    let robot = args.sim.robot()?;
    let lang = Language::builtin()?;
    let specs = episode_specs(&families, split, args.run.episodes, args.run.seed);
    let mut bar = super::SuccessBar::new(specs.len() as u64, &format!("eval {}", split.as_str()));
    let slots = args.run.envs.max(1);
    let mut recorders: Vec<Option<GifRecorder>> = (0..slots).map(|_| None).collect();
    // (successes saved, failures saved) per family.
    let mut saved: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let wanted = args.gifs;
    let mut io_error: Option<anyhow::Error> = None;
    let outcomes = run_episodes(
        &specs,
        &RunSetup {
            envs: slots,
            config: &config,
            robot: &robot,
            language: &lang,
            noise: 0.0,
        },
        &mut PolicyAgent { policy: &policy },
        &mut |event| {
            match event {
                Event::Reset {
                    slot,
                    spec,
                    observation,
                    ..
                } => {
                    let (s, f) = saved.get(&spec.family).copied().unwrap_or((0, 0));
                    recorders[slot] = (s < wanted || f < wanted).then(|| {
                        let mut r = GifRecorder::new();
                        r.push(observation);
                        r
                    });
                }
                Event::Step { slot, result, .. } => {
                    if let Some(r) = recorders[slot].as_mut() {
                        r.push(&result.observation);
                    }
                }
                Event::Done { slot, outcome } => {
                    bar.finished(outcome.success);
                    if let Some(r) = recorders[slot].take() {
                        let count = saved.entry(outcome.spec.family.clone()).or_default();
                        let (n, tag) = if outcome.success {
                            (&mut count.0, "success")
                        } else {
                            (&mut count.1, "failure")
                        };
                        if *n < wanted {
                            *n += 1;
                            let path = gif_dir.join(format!(
                                "{}_{tag}_{:03}.gif",
                                outcome.spec.family, outcome.spec.index
                            ));
                            match r.save(&path, 10.0) {
                                Ok(()) => tracing::info!("recorded {}", path.display()),
                                Err(e) => io_error = Some(e.into()),
                            }
                        }
                    }
                }
            }
            true
        },
    )?;
    bar.bar.finish_and_clear();
    if let Some(e) = io_error {
        return Err(e);
    }
    let report = SuiteReport::from_outcomes(&args.run.suite, split, &outcomes);
    let path = out_dir.join(format!("{}_{}.json", args.run.suite, split.as_str()));
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(report)
}
