//! `vla generate`: greedy text continuation by a pretrained language model directory
//! (`config.json`, `model.safetensors`, `tokenizer.json`, as `vla import-lm` writes them or
//! `save_pretrained` does) — to see that an imported LM is the real one before a VLA is
//! built on it.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use vla_model::hf::PretrainedLm;
use vla_model::TextTokenizer;

#[derive(clap::Args)]
pub struct Args {
    /// A Hugging Face `LlamaForCausalLM` directory (e.g. the output of `vla import-lm`).
    #[arg(long)]
    lm: PathBuf,
    /// The text to continue, used as it is (no chat template).
    #[arg(long)]
    prompt: String,
    /// At most this many new tokens; generation also stops after the end token.
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    prompt: String,
    prompt_ids: Vec<i64>,
    /// The generated ids (the end token included when it came).
    ids: Vec<i64>,
    /// The continuation alone, special tokens left out.
    continuation: String,
    tokens_per_second: f64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(!args.prompt.is_empty(), "--prompt is empty");
    anyhow::ensure!(
        args.max_new_tokens >= 1,
        "--max-new-tokens must be at least 1"
    );
    let device = super::train::parse_device(&args.device)?;
    let tok_path = args.lm.join("tokenizer.json");
    let tokenizer = TextTokenizer::from_file(&tok_path)?;
    let lm = PretrainedLm::load(&args.lm, device)
        .with_context(|| format!("loading the language model from {}", args.lm.display()))?;
    anyhow::ensure!(
        tokenizer.vocab_size() <= lm.config.vocab_size,
        "{} has {} ids but the model's vocab_size is {}",
        tok_path.display(),
        tokenizer.vocab_size(),
        lm.config.vocab_size
    );
    let prompt_ids = tokenizer.encode(&args.prompt)?;
    let eos = lm
        .config
        .eos_token_id
        .map(|id| id as i64)
        .or(tokenizer.eos_id());
    let start = Instant::now();
    let ids = lm.generate_greedy(&prompt_ids, args.max_new_tokens, eos)?;
    let seconds = start.elapsed().as_secs_f64();
    let report = Report {
        continuation: tokenizer.decode(&ids)?,
        tokens_per_second: ids.len() as f64 / seconds.max(1e-9),
        prompt: args.prompt.clone(),
        prompt_ids,
        ids,
    };
    tracing::info!(
        tokens = report.ids.len(),
        tokens_per_second = format!("{:.1}", report.tokens_per_second),
        "generated"
    );
    super::print_report(args.json, &report, || report.continuation.clone())
}
