//! `vla render`: one camera image of a task's first frame.

use std::path::PathBuf;

use anyhow::Context;
use vla_sim::{Env, VecEnv};
use vla_tasks::{make_task, parse_suite, Language, Split};

use super::SimOptions;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    suite: String,
    #[arg(long, default_value = "seen")]
    split: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// `front` or `wrist`.
    #[arg(long, default_value = "front")]
    camera: String,
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    sim: SimOptions,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let families = parse_suite(&args.suite)?;
    anyhow::ensure!(
        families.len() == 1,
        "--suite must name one family for render, not {:?}",
        args.suite
    );
    let split: Split = args.split.parse()?;
    anyhow::ensure!(
        args.camera == "front" || args.camera == "wrist",
        "unknown camera {:?}; expected front or wrist",
        args.camera
    );
    let lang = Language::builtin()?;
    let task = make_task(families[0], split, &lang, 0.0, 0)?;
    let mut config = args.sim.env_config()?;
    config.render_enabled = true;
    let env = Env::new(task, config, args.sim.robot()?);
    let mut vec_env = VecEnv::new(vec![env])?;
    let obs = vec_env.reset_one(0, args.seed)?;
    let image = if args.camera == "front" {
        &obs.front
    } else {
        &obs.wrist
    };
    image
        .save(&args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let report = serde_json::json!({
        "out": args.out, "camera": args.camera, "width": image.width(), "height": image.height(),
        "instruction": obs.instruction, "suite": families[0], "split": split.as_str(), "seed": args.seed,
    });
    super::print_report(args.json, &report, || {
        format!(
            "{} ({}) -> {}",
            obs.instruction,
            args.camera,
            args.out.display()
        )
    })
}
