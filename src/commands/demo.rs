//! `vla demo`: the main job. For now: run the experts on every family and split, record
//! rollout GIFs and write `runs/demo/report.md`. (Training and evaluating a policy join it
//! with the model issue.)

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;

use super::expert::{expert_report, Args as ExpertArgs};
use super::{EpisodeOptions, SimOptions};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Episodes per family and split.
    #[arg(long, default_value_t = 20)]
    episodes: usize,
    #[arg(long, default_value_t = 2)]
    envs: usize,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    sim: SimOptions,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut reports = Vec::new();
    for split in ["seen", "unseen"] {
        let expert = ExpertArgs {
            run: EpisodeOptions {
                suite: "all".into(),
                split: split.into(),
                episodes: args.episodes,
                seed: 0,
                envs: args.envs,
                noise: 0.0,
            },
            record: (split == "seen").then(|| args.out.join("gifs")),
            record_episodes: 1,
            json: false,
            sim: args.sim.clone(),
        };
        tracing::info!(
            "experts on the {split} split: {} episodes per family",
            args.episodes
        );
        reports.push(expert_report(&expert)?);
    }
    let mut md = String::from(
        "# Demo report\n\nScripted experts (privileged state), success per family and split.\n\n",
    );
    md += "| family | seen | unseen |\n|---|---|---|\n";
    for family in vla_tasks::FAMILIES {
        let cell = |i: usize| {
            reports[i]
                .per_family
                .get(*family)
                .map(|t| {
                    format!(
                        "{}/{} ({:.0} %)",
                        t.successes,
                        t.episodes,
                        100.0 * t.success_rate
                    )
                })
                .unwrap_or_default()
        };
        let _ = writeln!(md, "| {family} | {} | {} |", cell(0), cell(1));
    }
    md += "\n## Rollouts (front | wrist camera)\n\n";
    for family in vla_tasks::FAMILIES {
        for tag in ["success", "failure"] {
            let name = format!("{family}_000_{tag}.gif");
            if args.out.join("gifs").join(&name).exists() {
                let _ = writeln!(md, "![{family} {tag}](gifs/{name})");
            }
        }
    }
    let path = args.out.join("report.md");
    std::fs::write(&path, &md).with_context(|| format!("cannot write {}", path.display()))?;
    let json = serde_json::json!({ "report": path, "seen": reports[0], "unseen": reports[1] });
    super::print_report(args.json, &json, || {
        format!("{md}\nwritten to {}", path.display())
    })
}
