//! `vla import-lm`: a llama.cpp GGUF language model as a Hugging Face model directory
//! (f32 safetensors with transformers' names, `config.json`, tokenizer files), the form
//! `vla-model` and transformers load pretrained weights in.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;
use vla_gguf::{GgufError, Import, ImportOptions};

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file (llama architecture; F32/F16/BF16, Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 and k-quants).
    #[arg(long)]
    gguf: PathBuf,
    /// Output directory (created; files of the same names are replaced).
    #[arg(long)]
    out: PathBuf,
    /// Write weights and config only, for files whose tokenizer model is not supported.
    #[arg(long)]
    skip_tokenizer: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    gguf: PathBuf,
    out: PathBuf,
    name: Option<String>,
    gguf_version: u32,
    tensors: usize,
    parameters: u64,
    quant_types: BTreeMap<String, usize>,
    skipped_tensors: Vec<(String, String)>,
    tie_word_embeddings: bool,
    vocab_size: u64,
    files: Vec<String>,
    seconds: f64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let start = Instant::now();
    let options = ImportOptions {
        skip_tokenizer: args.skip_tokenizer,
    };
    let import = Import::prepare(&args.gguf, &options).map_err(|e| match &e {
        GgufError::Unsupported { at, .. } if at.contains("'tokenizer.") => anyhow::anyhow!(
            "{e}\n(--skip-tokenizer imports the weights and config without a tokenizer)"
        ),
        _ => e.into(),
    })?;
    let bar = super::progress(import.model().tensors.len() as u64, "import");
    let result = import.write(&args.out, &mut |t| {
        bar.set_message(t.hf_name.clone());
        bar.inc(1);
    });
    bar.finish_and_clear();
    let written = result?;
    let report = Report {
        gguf: written.gguf,
        out: written.out,
        name: written.name,
        gguf_version: written.gguf_version,
        tensors: written.tensors,
        parameters: written.parameters,
        quant_types: written.quant_types,
        skipped_tensors: written.skipped_tensors,
        tie_word_embeddings: written.tie_word_embeddings,
        vocab_size: written.vocab_size,
        files: written.files,
        seconds: start.elapsed().as_secs_f64(),
    };
    super::print_report(args.json, &report, || {
        let quant: Vec<String> = report
            .quant_types
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        format!(
            "{} → {}: {} tensors ({}), {:.1} M parameters, {} in {:.1} s",
            report.gguf.display(),
            report.out.display(),
            report.tensors,
            quant.join(", "),
            report.parameters as f64 / 1e6,
            report.files.join(", "),
            report.seconds
        )
    })
}
