//! `vla expert`: scripted expert success per family, with a reproducible digest.

use std::path::PathBuf;

use vla_sim::record::GifRecorder;
use vla_tasks::runner::{
    episode_specs, run as run_episodes, Event, ExpertAgent, RunSetup, SuiteReport, Tally,
};

use super::{EpisodeOptions, SimOptions};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub run: EpisodeOptions,
    /// Record the first episodes of each family as GIFs into this directory (renders cameras).
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// How many episodes per family to record.
    #[arg(long, default_value_t = 1)]
    pub record_episodes: usize,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sim: SimOptions,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let report = expert_report(&args)?;
    super::print_report(args.json, &report, || human(&report))
}

pub fn human(report: &SuiteReport) -> String {
    let mut s = format!(
        "{} / {}: {}/{} = {:.1} %\n",
        report.suite,
        report.split.as_str(),
        report.successes,
        report.episodes,
        100.0 * report.success_rate
    );
    // "  12/40   30.0 %": successes, episodes and rate of a tally.
    let count = |t: &Tally| {
        format!(
            "{:4}/{:<4} {:5.1} %",
            t.successes,
            t.episodes,
            100.0 * t.success_rate
        )
    };
    for (f, t) in &report.per_family {
        s += &format!("  {f:6} {}", count(t));
        if t.reversals > 0 {
            s += &format!(
                "  ({:.0} % of steps undo the last)",
                100.0 * t.reversal_share
            );
        }
        if t.has_partial_progress() {
            let counts: Vec<String> = t
                .progress_counts
                .iter()
                .map(|(p, n)| format!("{p}×{n}"))
                .collect();
            s += &format!(
                "  (progress {:.0} %: {})",
                100.0 * t.mean_progress,
                counts.join(" ")
            );
        }
        s += "\n";
        // The unseen split: success per kind of what the instruction held out.
        for (kind, k) in &t.by_held_out {
            s += &format!("    held-out {kind:8} {}\n", count(k));
        }
    }
    s + &format!("digest {}", report.digest)
}

pub fn expert_report(args: &Args) -> anyhow::Result<SuiteReport> {
    let (families, split) = args.run.validate()?;
    let mut config = args.sim.env_config()?;
    config.render_enabled = args.record.is_some();
    let robot = args.sim.robot()?;
    let lang = args.run.language.language()?;
    let specs = episode_specs(&families, split, args.run.episodes, args.run.seed);
    let mut bar = super::SuccessBar::new(specs.len() as u64, "expert");
    let mut recorders: Vec<Option<(GifRecorder, String)>> =
        (0..args.run.envs.max(1)).map(|_| None).collect();
    let record_dir = args.record.clone();
    let record_n = args.record_episodes;
    let mut io_error: Option<anyhow::Error> = None;
    let outcomes = run_episodes(
        &specs,
        &RunSetup {
            envs: args.run.envs,
            config: &config,
            robot: &robot,
            language: &lang,
            noise: args.run.expert_noise(),
        },
        &mut ExpertAgent,
        &mut |event| {
            match event {
                Event::Reset {
                    slot,
                    spec,
                    observation,
                    ..
                } => {
                    if record_dir.is_some() && spec.index / families.len() < record_n {
                        let mut r = GifRecorder::new();
                        r.push(observation);
                        recorders[slot] = Some((
                            r,
                            format!("{}_{:03}", spec.family, spec.index / families.len()),
                        ));
                    }
                }
                Event::Step { slot, result, .. } => {
                    if let Some((r, _)) = recorders[slot].as_mut() {
                        r.push(&result.observation);
                    }
                }
                Event::Done { slot, outcome } => {
                    bar.finished(outcome.success);
                    if let (Some((r, name)), Some(dir)) =
                        (recorders[slot].take(), record_dir.as_ref())
                    {
                        let tag = if outcome.success {
                            "success"
                        } else {
                            "failure"
                        };
                        let path = dir.join(format!("{name}_{tag}.gif"));
                        if let Err(e) = r.save(&path, 10.0) {
                            io_error = Some(e.into());
                        } else {
                            tracing::info!("recorded {}", path.display());
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
    Ok(SuiteReport::from_outcomes(
        &args.run.suite,
        split,
        &outcomes,
    ))
}
