//! `vla vqa collect`: vision-language data for co-training (RT-2's recipe). Random scenes
//! with every colour and object of the vocabulary, held-out ones included, rendered by the
//! simulator; question/answer pairs read off its state; written as Parquet that Hugging
//! Face `datasets` and `vla_datasets::vqa` read.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;
use vla_datasets::vqa::{VqaQuestion, VqaWriter};
use vla_sim::{Env, VecEnv};
use vla_tasks::vqa::{pairs_for_env, scene_seeds, Templates, VqaScene};

use super::{LanguageOptions, SimOptions};

#[derive(clap::Subcommand)]
pub enum What {
    /// Render random scenes and write question/answer pairs about them (colour, object,
    /// pointing, counting, containment, caption) as a Parquet dataset.
    Collect(CollectArgs),
}

#[derive(clap::Args)]
pub struct CollectArgs {
    /// Output directory (must not exist or be empty).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Number of scenes.
    #[arg(long)]
    pub(crate) scenes: usize,
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Questions per scene (fewer when a scene offers fewer).
    #[arg(long, default_value_t = 6)]
    pub(crate) questions_per_scene: usize,
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) sim: SimOptions,
    #[command(flatten)]
    pub(crate) language: LanguageOptions,
}

#[derive(Serialize)]
pub(crate) struct Report {
    pub(crate) out: PathBuf,
    pub(crate) file: PathBuf,
    pub(crate) scenes: usize,
    pub(crate) rows: usize,
    pub(crate) kinds: BTreeMap<String, usize>,
    pub(crate) held_out_rows: usize,
    pub(crate) held_out_share: f64,
    pub(crate) bytes: u64,
    pub(crate) seconds: f64,
}

pub fn run(what: What) -> anyhow::Result<()> {
    match what {
        What::Collect(args) => collect(args),
    }
}

fn collect(args: CollectArgs) -> anyhow::Result<()> {
    let report = collect_dataset(&args)?;
    super::print_report(args.json, &report, || {
        let kinds: Vec<String> = report
            .kinds
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        format!(
            "{}: {} questions about {} scenes ({}), {:.0} % with held-out words, {:.1} MB in {:.0} s",
            report.file.display(),
            report.rows,
            report.scenes,
            kinds.join(", "),
            100.0 * report.held_out_share,
            report.bytes as f64 / 1e6,
            report.seconds
        )
    })
}

/// Writes the dataset `args` ask for (what `vla vqa collect` and `vla demo` run).
pub(crate) fn collect_dataset(args: &CollectArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(args.scenes > 0, "--scenes must be at least 1");
    anyhow::ensure!(
        args.questions_per_scene > 0,
        "--questions-per-scene must be at least 1"
    );
    let started = Instant::now();
    let lang = args.language.language()?;
    let templates = Templates::builtin()?;
    let mut config = args.sim.env_config()?;
    config.render_enabled = true;
    let mut writer = VqaWriter::create(&args.out)?;
    let env = Env::new(
        Box::new(VqaScene::new(lang.clone())),
        config,
        args.sim.robot()?,
    );
    let mut envs = VecEnv::new(vec![env])?;
    tracing::info!(
        scenes = args.scenes,
        seed = args.seed,
        out = %args.out.display(),
        "collecting vision-language data"
    );

    let bar = super::progress(args.scenes as u64, "vqa");
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut held_out_rows = 0;
    for (index, seed) in scene_seeds(args.seed, args.scenes).into_iter().enumerate() {
        let obs = envs.reset_one(0, seed)?;
        let pairs = pairs_for_env(
            &envs.envs[0],
            &lang,
            &templates,
            seed,
            args.questions_per_scene,
        )?;
        let questions: Vec<VqaQuestion> = pairs
            .iter()
            .map(|p| VqaQuestion {
                question: &p.question,
                answer: &p.answer,
                kind: p.kind.as_str(),
                words: &p.words,
                held_out: p.held_out,
            })
            .collect();
        writer.add_scene(&obs.front, &obs.wrist, seed, index, &questions)?;
        for p in &pairs {
            *kinds.entry(p.kind.as_str().to_string()).or_default() += 1;
            held_out_rows += usize::from(p.held_out);
        }
        tracing::debug!(scene = index, seed, questions = pairs.len(), "scene");
        bar.inc(1);
    }
    bar.finish_and_clear();
    let rows = writer.rows();
    let file = writer.finish()?;
    let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let report = Report {
        out: args.out.clone(),
        file,
        scenes: args.scenes,
        rows,
        kinds,
        held_out_rows,
        held_out_share: held_out_rows as f64 / rows.max(1) as f64,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    };
    tracing::info!(
        rows,
        bytes,
        seconds = report.seconds,
        "wrote {}",
        report.file.display()
    );
    Ok(report)
}
