//! `vla lora merge`: a LoRA run (adapters over a frozen pretrained LM) as a plain run whose
//! weights hold the merged values, so it loads without the base and runs without the
//! adapters' extra matrix products.

use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;
use vla_model::tch::Device;

#[derive(clap::Subcommand)]
pub enum What {
    /// Fold a LoRA run's adapters into its base weights and write a self-contained run.
    Merge(MergeArgs),
}

#[derive(clap::Args)]
pub struct MergeArgs {
    /// Run directory of a LoRA fine-tune (its config.json names the base LM).
    #[arg(long)]
    ckpt: PathBuf,
    /// Where the merged run goes (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    ckpt: PathBuf,
    out: PathBuf,
    base_lm: Option<PathBuf>,
    parameters: i64,
}

pub fn run(what: What) -> anyhow::Result<()> {
    match what {
        What::Merge(args) => merge(args),
    }
}

fn merge(args: MergeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.out != args.ckpt,
        "--out must differ from --ckpt: the LoRA run is kept as it is"
    );
    let (model, tokenizer) = vla_model::load_run(&args.ckpt, Device::Cpu)
        .with_context(|| format!("loading {}", args.ckpt.display()))?;
    anyhow::ensure!(
        model.config().text.lora.is_some(),
        "{} is not a LoRA run (its config has no text.lora): nothing to merge",
        args.ckpt.display()
    );
    let merged = model.merged()?;
    vla_model::save_run(&args.out, &merged, &tokenizer)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let report = Report {
        base_lm: model.base_lm().map(|b| b.dir.clone()),
        parameters: merged.num_parameters(),
        ckpt: args.ckpt,
        out: args.out,
    };
    super::print_report(args.json, &report, || {
        format!(
            "merged {} into {} ({} parameters)",
            report.ckpt.display(),
            report.out.display(),
            report.parameters
        )
    })
}
