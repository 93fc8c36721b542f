//! `vla ask`: a trained model's answer to a question about images, so that what
//! co-training on vision-language data taught it (colours, objects, where things are)
//! can be looked at directly.

use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;
use vla_model::Policy;

#[derive(clap::Args)]
pub struct Args {
    /// Run directory of a trained model.
    #[arg(long)]
    ckpt: PathBuf,
    #[command(flatten)]
    images: super::act::Images,
    /// The question, e.g. "where is the purple can?".
    #[arg(long)]
    question: String,
    /// At most this many answer tokens (the end token included).
    #[arg(long, default_value_t = 24)]
    max_tokens: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    question: String,
    answer: String,
    ckpt: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.question.trim().is_empty(),
        "--question is empty: ask something about the images"
    );
    anyhow::ensure!(args.max_tokens >= 1, "--max-tokens must be at least 1");
    let (front, wrist) = args.images.load()?;
    let policy = Policy::load(&args.ckpt, super::train::parse_device(&args.device)?)
        .with_context(|| format!("loading the model from {}", args.ckpt.display()))?;
    let answer = policy.ask(&front, &wrist, &args.question, args.max_tokens)?;
    let report = Report {
        question: args.question.clone(),
        answer,
        ckpt: args.ckpt.clone(),
    };
    super::print_report(args.json, &report, || report.answer.clone())
}
