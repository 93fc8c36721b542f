//! The training loop behind `vla train`: data → batches → [`TrainStep`], with validation,
//! JSON-lines metrics, checkpoints and exact resumption.
//!
//! Run directory layout:
//!
//! ```text
//! RUN/config.json, tokenizer.json, model.safetensors   latest weights (what `--ckpt RUN` loads)
//! RUN/train.json                                        model + training config, data sources
//! RUN/metrics.jsonl                                     one JSON object per log / validation
//! RUN/checkpoints/step_NNNNNNN/                          weights + optimizer.safetensors + state.json
//! ```
//!
//! `state.json` is written last in a checkpoint directory: a checkpoint without it is
//! incomplete and ignored by `--resume`.

pub mod batches;
pub mod data;
pub mod distributed;
pub mod frames;
pub mod optim;
pub mod vqa;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::action_tokenizer::NormStats;
use crate::checkpoint::{load_run, save_run};
use crate::config::{LoraConfig, TextConfig, VlaConfig};
use crate::error::{Result, VlaError};
use crate::features::{FeatureMapping, MappingOverrides};
use crate::model::VlaModel;
use crate::text_tokenizer::{prompt, question_prompt, TextTokenizer};
use crate::train::batches::{Prefetcher, StepSource};
use crate::train::data::{
    AugmentConfig, Collate, DataSummary, GroundingTargets, PromptCache, TrainingData,
};
use crate::train::distributed::DataParallel;
use crate::train::optim::{OptimConfig, PendingStats, StepStats, TrainStep};
use crate::train::vqa::{VqaData, VqaExample};

/// The `[train]` table of a config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub steps: usize,
    pub batch_size: usize,
    pub seed: u64,
    /// Fraction of each dataset's episodes held out for validation.
    pub val_fraction: f64,
    /// Validate every this many steps (and at the end).
    pub val_every: usize,
    /// At most this many validation frames (a fixed, evenly spaced subset).
    pub val_frames: usize,
    pub log_every: usize,
    pub checkpoint_every: usize,
    /// Keep this many most recent checkpoints.
    pub keep_checkpoints: usize,
    pub optim: OptimConfig,
    pub augment: AugmentConfig,
    /// How the data teaches the grounding heads (`vision.grounding_heads`).
    pub grounding: GroundingTargets,
    /// Fine-tune a pretrained LM (`--init-lm`) through low-rank adapters, its weights
    /// frozen (see [`crate::config::LoraConfig`]); `None` trains every weight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraConfig>,
    /// Steps whose batches a background thread assembles ahead (0: on the training thread,
    /// when due). Unset: 2 on a GPU, 0 on CPU (where that thread would take cores from
    /// libtorch's). Either way a step's batch is the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefetch: Option<usize>,
    /// At most this many MiB of decoded frames in memory; beyond it they are memory-mapped
    /// from a file (`VLA_FRAME_CACHE`, else `~/.cache/vla/frames`). Unset: half the memory
    /// available when training starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resident_frames_mb: Option<u64>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            steps: 3000,
            batch_size: 32,
            seed: 0,
            val_fraction: 0.05,
            val_every: 250,
            val_frames: 512,
            log_every: 25,
            checkpoint_every: 500,
            keep_checkpoints: 2,
            optim: OptimConfig::default(),
            augment: AugmentConfig::default(),
            grounding: GroundingTargets::default(),
            lora: None,
            prefetch: None,
            resident_frames_mb: None,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("train.steps", self.steps),
            ("train.batch_size", self.batch_size),
            ("train.val_every", self.val_every),
            ("train.log_every", self.log_every),
            ("train.checkpoint_every", self.checkpoint_every),
            ("train.keep_checkpoints", self.keep_checkpoints),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(VlaError::invalid(field, "must be > 0"));
            }
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return Err(VlaError::invalid(
                "train.val_fraction",
                format!("{} must be in [0, 1)", self.val_fraction),
            ));
        }
        if !(0.0..=1.0).contains(&self.augment.extra_words) {
            return Err(VlaError::invalid(
                "train.augment.extra_words",
                format!("{} must be a share in [0, 1]", self.augment.extra_words),
            ));
        }
        if let Some(lora) = &self.lora {
            lora.validate("train.lora")?;
        }
        for (field, w) in [
            ("train.grounding.map_weight", self.grounding.map_weight),
            (
                "train.grounding.wrist_map_weight",
                self.grounding.wrist_map_weight,
            ),
        ] {
            if !(w.is_finite() && w >= 0.0) {
                return Err(VlaError::invalid(
                    field,
                    format!("{w} must be a finite weight >= 0"),
                ));
            }
        }
        Ok(())
    }
}

/// Reads a config file holding the model tables and an optional `[train]` table.
pub fn load_config_file(path: impl AsRef<Path>) -> Result<(VlaConfig, TrainConfig)> {
    let path = path.as_ref();
    let err = |message: String| VlaError::Config {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let mut table: toml::Table = text
        .parse()
        .map_err(|e| err(format!("invalid TOML: {e}")))?;
    let train = match table.remove("train") {
        Some(t) => t
            .try_into::<TrainConfig>()
            .map_err(|e| err(format!("[train]: {e}")))?,
        None => TrainConfig::default(),
    };
    let model_text = toml::to_string(&table).map_err(|e| err(e.to_string()))?;
    let model = VlaConfig::from_toml_str(&model_text).map_err(|e| err(e.to_string()))?;
    train.validate().map_err(|e| err(e.to_string()))?;
    Ok((model, train))
}

/// Everything `vla train` was asked to do.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub data: Vec<PathBuf>,
    pub out: PathBuf,
    pub model: VlaConfig,
    pub train: TrainConfig,
    pub device: Device,
    pub resume: bool,
    /// Start from this run's weights, tokenizer and statistics (fine-tuning, e.g. a DAgger
    /// round on aggregated data) with a fresh optimiser and schedule. Ignored on resume.
    pub init: Option<PathBuf>,
    /// Start the language model from this pretrained Hugging Face directory (`config.json`,
    /// `model.safetensors`, `tokenizer.json`, e.g. from `vla import-lm`): its config replaces
    /// `[text]`, its tokenizer is the run's, and its embeddings grow by the action ids.
    /// Ignored on resume and with `init`.
    pub init_lm: Option<PathBuf>,
    /// Instructions the text tokenizer is trained on (besides the datasets' own tasks).
    pub corpus: Vec<String>,
    /// Questions and answers the text tokenizer is trained on besides the co-training
    /// data's own (so a run without co-training can share a co-trained run's tokenizer).
    pub questions: Vec<String>,
    /// Co-training on vision-language examples (RT-2), when given.
    pub cotrain: Option<CoTraining>,
    /// Stop after this step with a checkpoint, as Ctrl-C would (a job's share of a longer
    /// run under a scheduler's time limit; `--resume` continues it exactly).
    pub until: Option<usize>,
    /// This process's rank in a data-parallel run; `None` trains alone.
    pub dist: Option<DataParallel>,
    /// What a fresh run's feature mapping takes from the command line instead of inferring
    /// it from the first dataset (see [`crate::features`]). A resumed or fine-tuned run keeps
    /// its own mapping.
    pub mapping: MappingOverrides,
}

/// Co-training: vision-language examples learned beside the robot frames.
#[derive(Clone, Debug)]
pub struct CoTraining {
    /// Where they came from (for `train.json`).
    pub source: PathBuf,
    pub examples: Vec<VqaExample>,
    /// The vision-language share of each batch: a step takes `batch_size` robot frames and
    /// `round(batch_size · ratio / (1 − ratio))` examples, and weighs their answer loss by
    /// their number against the frames', as one mixed batch with each row's own loss would.
    pub ratio: f64,
}

impl CoTraining {
    /// Examples per step beside `batch_size` robot frames.
    pub fn per_step(&self, batch_size: usize) -> usize {
        let r = self.ratio.clamp(0.0, 0.95);
        ((batch_size as f64 * r / (1.0 - r)).round() as usize).max(1)
    }
}

/// Validation metrics on held-out episodes (teacher-forced, as OpenVLA reports them).
#[derive(Clone, Debug, Serialize)]
pub struct ValStats {
    pub step: usize,
    pub loss: f64,
    /// Action-token accuracy.
    pub accuracy: f64,
    /// Mean absolute error of decoded translation/rotation deltas (m and rad).
    pub l1: f64,
    /// Fraction of frames whose gripper command is right.
    pub gripper_accuracy: f64,
    /// Per grounding head (0 grasp, 1 release): mean distance (cm) from the predicted table
    /// position to the point, while the end effector is at least
    /// [`crate::train::data::MIN_TARGET_DISTANCE`] away (`far`) and closer (`near`). The last
    /// centimetres of a grasp are aimed by the near error. Empty without grounding heads.
    pub target_error_far_cm: Vec<f64>,
    pub target_error_near_cm: Vec<f64>,
    /// Fraction of the frames with a known subgoal whose gate picks it (`None` without a
    /// gate).
    pub subgoal_accuracy: Option<f64>,
    /// With a plan: the sub-task tokens' cross-entropy, the fraction of their tokens and of
    /// whole sub-tasks predicted exactly (teacher-forced).
    pub subtask_loss: Option<f64>,
    pub subtask_token_accuracy: Option<f64>,
    pub subtask_accuracy: Option<f64>,
    /// Co-training: exact-match accuracy of greedy answers on the held-out scenes, for
    /// questions in seen words and in words the robot data holds out.
    pub vqa_accuracy_seen: Option<f64>,
    pub vqa_accuracy_held_out: Option<f64>,
    pub frames: usize,
}

/// Sums of distances and counts, per head, for [`ValStats`]' target errors.
#[derive(Default)]
struct TargetErrors {
    far: Vec<(f64, usize)>,
    near: Vec<(f64, usize)>,
}

impl TargetErrors {
    /// Adds the distances of `predicted [B, H, 2]` (metres) to the frames' targets.
    fn add(&mut self, data: &TrainingData, frames: &[usize], predicted: &Tensor) -> Result<()> {
        let heads = predicted.size().get(1).copied().unwrap_or(0).max(0) as usize;
        self.far.resize(heads, (0.0, 0));
        self.near.resize(heads, (0.0, 0));
        let values = Vec::<f32>::try_from(predicted.to_device(Device::Cpu).flatten(0, -1))?;
        for (row, &frame) in values.chunks(heads * 2).zip(frames) {
            for (head, p) in row.chunks(2).enumerate() {
                let Some((t, far)) = data.target_xy(frame, head) else {
                    continue;
                };
                let d = f64::from((p[0] - t[0]).hypot(p[1] - t[1]));
                let side = if far { &mut self.far } else { &mut self.near };
                side[head].0 += d;
                side[head].1 += 1;
            }
        }
        Ok(())
    }

    /// Mean distances in cm (NaN for a head without frames on that side).
    fn means_cm(side: &[(f64, usize)]) -> Vec<f64> {
        side.iter()
            .map(|&(sum, n)| {
                if n == 0 {
                    f64::NAN
                } else {
                    100.0 * sum / n as f64
                }
            })
            .collect()
    }
}

/// What the loop reports while it runs; returning `false` from the callback stops training
/// after a checkpoint (Ctrl-C).
pub enum TrainEvent<'a> {
    Loading {
        done: usize,
        total: usize,
    },
    Started {
        data: &'a DataSummary,
        params: i64,
        start_step: usize,
        total_steps: usize,
    },
    Step {
        stats: &'a StepStats,
        samples_per_s: f64,
    },
    Validated(&'a ValStats),
    Checkpoint {
        step: usize,
        dir: &'a Path,
    },
}

/// Final summary (also printed by `vla train --json`).
#[derive(Clone, Debug, Serialize)]
pub struct TrainSummary {
    pub out: PathBuf,
    pub params: i64,
    pub data: DataSummary,
    pub start_step: usize,
    pub steps: usize,
    pub interrupted: bool,
    pub seconds: f64,
    pub samples_per_s: f64,
    pub final_train_loss: Option<f64>,
    pub final_val: Option<ValStats>,
}

#[derive(Serialize, Deserialize)]
struct CheckpointState {
    step: usize,
}

const CHECKPOINTS: &str = "checkpoints";
const METRICS: &str = "metrics.jsonl";

/// Runs (or resumes) training.
pub fn train(
    opts: &TrainOptions,
    on_event: &mut dyn FnMut(TrainEvent<'_>) -> bool,
) -> Result<TrainSummary> {
    let started = Instant::now();
    let mut train_cfg = opts.train.clone();
    train_cfg.validate()?;
    train_cfg.optim.total_steps = train_cfg.steps;
    let dist = opts.dist.as_ref();
    // Rank 0 alone writes the run directory; every rank computes.
    let main = dist.is_none_or(DataParallel::is_main);
    if let Some(dp) = dist {
        distributed::check_batch(train_cfg.batch_size, dp.world_size())?;
    }
    let resume_from = if opts.resume {
        latest_checkpoint(&opts.out)?
    } else {
        None
    };
    if !opts.resume && latest_checkpoint(&opts.out)?.is_some() {
        return Err(VlaError::Input(format!(
            "{} already holds a training run: pass --resume to continue it, or choose another --out",
            opts.out.display()
        )));
    }
    std::fs::create_dir_all(&opts.out)
        .map_err(|e| VlaError::checkpoint(&opts.out, format!("cannot create: {e}")))?;

    // The features the policy reads: a resumed or fine-tuned run's own, else inferred from
    // the first dataset; every dataset must have them. A fresh run's model config and
    // grounding targets are fitted to them.
    let inherited = match (&resume_from, &opts.init) {
        (Some((_, dir)), _) | (None, Some(dir)) => Some(
            crate::checkpoint::RunConfig::load(dir.join(crate::checkpoint::CONFIG_FILE))?
                .config
                .features,
        ),
        (None, None) => None,
    };
    let infos: Vec<(vla_datasets::DatasetInfo, String)> = opts
        .data
        .iter()
        .map(|d| {
            vla_datasets::DatasetInfo::load(d)
                .map(|i| (i, d.display().to_string()))
                .map_err(|e| VlaError::Input(format!("dataset {}: {e}", d.display())))
        })
        .collect::<Result<_>>()?;
    let mapping = match (inherited, infos.first()) {
        (Some(m), _) => m,
        (None, Some((info, source))) => FeatureMapping::infer(info, source, &opts.mapping)?,
        (None, None) => return Err(VlaError::Input("no dataset given (--data DIR)".into())),
    };
    for (info, source) in &infos {
        mapping.check(info, source)?;
    }
    let mut model_cfg = opts.model.clone();
    for change in mapping.fit_config(&mut model_cfg, &mut train_cfg.grounding) {
        tracing::info!("fitted to the dataset's features: {change}");
    }
    model_cfg.validate()?;
    let budget = train_cfg
        .resident_frames_mb
        .map_or_else(frames::default_budget, |mb| mb << 20);
    let data = Arc::new(TrainingData::load_with_budget(
        &opts.data,
        &mapping,
        model_cfg.vision.image_size as u32,
        train_cfg.val_fraction,
        train_cfg.seed,
        budget,
        &mut |done, total| {
            on_event(TrainEvent::Loading { done, total });
        },
    )?);
    if data.train_indices().is_empty() {
        return Err(VlaError::Input(
            "no training frames after the validation split".into(),
        ));
    }
    let summary = data.summary();

    let (mut model, tokenizer, start_step) = match (&resume_from, &opts.init, &opts.init_lm) {
        (Some((step, dir)), _, _) => {
            let (model, tok) = load_run(dir, opts.device)?;
            tracing::info!(step, dir = %dir.display(), "resuming");
            (model, tok, *step)
        }
        (None, Some(dir), _) => {
            let (model, tok) = load_run(dir, opts.device)?;
            if !model_cfg.trained_as(model.config()) {
                tracing::warn!(
                    init = %dir.display(),
                    "the --init run's model config differs from --config; using the run's"
                );
            }
            tracing::info!(init = %dir.display(), "fine-tuning from");
            (model, tok, 0)
        }
        (None, None, Some(dir)) => {
            let (actions, states) = data.train_actions_and_states();
            let stats = NormStats::from_data(&actions, &states, &model_cfg)?;
            let tok = TextTokenizer::from_file(dir.join(crate::checkpoint::TOKENIZER_FILE))?;
            let mut config = model_cfg.clone();
            let text = crate::hf::llama_config(dir.join(crate::checkpoint::CONFIG_FILE))?.config;
            if text != config.text {
                tracing::info!(
                    lm = %dir.display(),
                    "[text] of --config replaced by the pretrained model's config.json"
                );
            }
            config.text = TextConfig {
                lora: train_cfg.lora.clone(),
                ..text
            };
            if config.text.eos_token_id.is_none() {
                config.text.eos_token_id = tok.eos_id().map(|id| id as usize);
            }
            config.validate()?;
            let mut model = VlaModel::new(config, stats, opts.device, train_cfg.seed as i64)?;
            let report = model.import_language_model(dir)?;
            tracing::info!(
                lm = %dir.display(),
                tensors = report.loaded.len(),
                resized = ?report.resized,
                "language model initialised from pretrained weights"
            );
            (model, tok, 0)
        }
        (None, None, None) => {
            if train_cfg.lora.is_some() {
                return Err(VlaError::invalid(
                    "train.lora",
                    "adapters fine-tune a pretrained language model: give --init-lm DIR",
                ));
            }
            let (actions, states) = data.train_actions_and_states();
            let stats = NormStats::from_data(&actions, &states, &model_cfg)?;
            let mut corpus: Vec<String> = opts.corpus.clone();
            corpus.extend(data.tasks().iter().cloned());
            corpus.extend(data.subtasks().iter().cloned());
            let mut texts: Vec<String> = corpus.iter().map(|c| prompt(c)).collect();
            let examples = opts.cotrain.iter().flat_map(|c| &c.examples);
            let questions = opts
                .questions
                .iter()
                .chain(examples.flat_map(|e| [&e.question, &e.answer]));
            texts.extend(questions.map(|q| question_prompt(q)));
            let tok = TextTokenizer::train(&texts, model_cfg.text.vocab_size)?;
            let mut config = model_cfg.clone();
            if config.text.eos_token_id.is_none() {
                config.text.eos_token_id = tok.eos_id().map(|id| id as usize);
            }
            let model = VlaModel::new(config, stats, opts.device, train_cfg.seed as i64)?;
            (model, tok, 0)
        }
    };
    let mut step_fn = TrainStep::new(&mut model, train_cfg.optim.clone())?;
    if let Some((step, dir)) = &resume_from {
        step_fn.load_state(dir.join("optimizer.safetensors"))?;
        step_fn.set_step(*step);
    }
    if let Some(dp) = dist {
        join_data_parallel(dp, &model, &tokenizer, &mut step_fn, start_step, &opts.out)?;
    }
    let mut metrics = if main {
        write_train_json(opts, model.config(), &train_cfg, &summary)?;
        Some(open_metrics(&opts.out, start_step)?)
    } else {
        None
    };
    let prompts = Arc::new(PromptCache::new(&data, &tokenizer)?);
    let val_subset = evenly_spaced(data.val_indices(), train_cfg.val_frames);
    let vqa = match &opts.cotrain {
        Some(c) => Some(Arc::new(VqaData::from_examples(
            &c.examples,
            model.config().vision.image_size as u32,
            train_cfg.val_fraction.max(0.05),
            train_cfg.seed,
            &tokenizer,
        )?)),
        None => None,
    };
    let vqa_val = vqa
        .as_ref()
        .map(|v| evenly_spaced(v.val_indices(), train_cfg.val_frames.min(256)))
        .unwrap_or_default();

    if !on_event(TrainEvent::Started {
        data: &summary,
        params: model.num_parameters(),
        start_step,
        total_steps: train_cfg.steps,
    }) {
        return Err(VlaError::Input(
            "training cancelled before it started".into(),
        ));
    }

    let source = StepSource {
        data: data.clone(),
        vqa: vqa.clone(),
        cotrain: opts.cotrain.clone(),
        collate: Collate::of(&model),
        tokenizer: tokenizer.clone(),
        prompts: prompts.clone(),
        train: train_cfg.clone(),
        model: model.config().clone(),
        rank: dist.map(|dp| (dp.rank(), dp.world_size())),
    };
    // On a GPU the next batches are assembled while it runs this one; on CPU that thread
    // would take cores from libtorch's.
    let depth = train_cfg.prefetch.unwrap_or(match opts.device {
        Device::Cuda(_) => 2,
        _ => 0,
    });
    let batches = match depth {
        0 => Batches::Inline(Box::new(source)),
        d => Batches::Ahead(Prefetcher::start(source, start_step..train_cfg.steps, d)),
    };
    let mut interrupted = false;
    let mut last_step: Option<PendingStats> = None;
    let mut skipped_steps = 0;
    let mut final_val = None;
    let mut window = Instant::now();
    let mut window_samples = 0usize;
    let loop_start = Instant::now();
    let mut samples = 0usize;
    let mut step = start_step;
    while step < train_cfg.steps {
        let inputs = match &batches {
            Batches::Ahead(p) => p.next(step)?,
            Batches::Inline(source) => source.inputs(step)?,
        };
        if opts.device != Device::Cpu {
            // Checked on the host: the forward pass cannot read ids back from a GPU cheaply.
            model.check_token_ranges(&inputs.batch)?;
        }
        let batch = inputs.batch.to_device(opts.device);
        let targets = inputs.targets.to_device(opts.device);
        let global = inputs.global;
        // The step's statistics stay on the device unless this step is logged: reading them
        // would make the host wait for the GPU every step.
        let pending = step_fn.step_with_targets(&model, &batch, &targets)?;
        step += 1;
        samples += global;
        window_samples += global;
        let mut keep_going = opts.until != Some(step);
        let logged = step % train_cfg.log_every == 0 || step == train_cfg.steps;
        let validated =
            !val_subset.is_empty() && (step % train_cfg.val_every == 0 || step == train_cfg.steps);
        if logged {
            let stats = pending.resolve()?;
            if stats.skipped_steps > skipped_steps {
                tracing::warn!(
                    step,
                    skipped = stats.skipped_steps - skipped_steps,
                    "non-finite loss/gradients: updates skipped since the last log"
                );
                skipped_steps = stats.skipped_steps;
            }
            let sps = window_samples as f64 / window.elapsed().as_secs_f64().max(1e-9);
            window = Instant::now();
            window_samples = 0;
            let mut record = serde_json::json!({
                "kind": "train", "step": step, "loss": stats.loss, "accuracy": stats.accuracy,
                "lr": stats.lr, "grad_norm": stats.grad_norm, "samples_per_s": sps,
                "elapsed_s": started.elapsed().as_secs_f64(),
            });
            if let Some(t) = stats.target_loss {
                record["target_loss"] = t.into();
            }
            if let Some(t) = stats.map_loss {
                record["map_loss"] = t.into();
            }
            if let Some(t) = stats.subgoal_loss {
                record["subgoal_loss"] = t.into();
            }
            if let Some(t) = stats.subtask_loss {
                record["subtask_loss"] = t.into();
            }
            if let Some(t) = stats.subtask_accuracy {
                record["subtask_accuracy"] = t.into();
            }
            if let Some(t) = stats.vqa_loss {
                record["vqa_loss"] = t.into();
            }
            if let Some(t) = stats.vqa_accuracy {
                record["vqa_token_accuracy"] = t.into();
            }
            if let Some(m) = metrics.as_mut() {
                write_metric(m, &record, &opts.out)?;
            }
            keep_going &= on_event(TrainEvent::Step {
                stats: &stats,
                samples_per_s: sps,
            });
        }
        last_step = Some(pending);
        if validated {
            let mut val = validate(
                &data,
                &val_subset,
                &model,
                &tokenizer,
                &prompts,
                &train_cfg,
                dist,
            )?;
            val.step = step;
            if let (Some(vqa), true) = (&vqa, main) {
                let (seen, held) = vqa.accuracy(&model, &tokenizer, &vqa_val)?;
                let rate = |(right, n): (usize, usize)| (n > 0).then(|| right as f64 / n as f64);
                val.vqa_accuracy_seen = rate(seen);
                val.vqa_accuracy_held_out = rate(held);
            }
            if let Some(m) = metrics.as_mut() {
                write_metric(
                    m,
                    &serde_json::json!({
                    "kind": "val", "step": step, "loss": val.loss, "accuracy": val.accuracy,
                    "l1": val.l1, "gripper_accuracy": val.gripper_accuracy,
                    "target_error_far_cm": val.target_error_far_cm,
                    "target_error_near_cm": val.target_error_near_cm,
                    "subgoal_accuracy": val.subgoal_accuracy,
                    "subtask_loss": val.subtask_loss,
                    "subtask_token_accuracy": val.subtask_token_accuracy,
                    "subtask_accuracy": val.subtask_accuracy,
                    "vqa_accuracy_seen": val.vqa_accuracy_seen,
                    "vqa_accuracy_held_out": val.vqa_accuracy_held_out,
                    "elapsed_s": started.elapsed().as_secs_f64(),
                    }),
                    &opts.out,
                )?;
            }
            keep_going &= on_event(TrainEvent::Validated(&val));
            final_val = Some(val);
        }
        // A stop asked for on one rank stops them all at this step (the others would
        // otherwise wait for it in the next collective).
        if let (Some(dp), true) = (dist, logged || validated) {
            keep_going = dp.all(keep_going)?;
        }
        let last = step == train_cfg.steps;
        if main && (!keep_going || last || step % train_cfg.checkpoint_every == 0) {
            let dir = save_checkpoint(&opts.out, step, &model, &tokenizer, &step_fn, &train_cfg)?;
            on_event(TrainEvent::Checkpoint { step, dir: &dir });
        }
        if !keep_going {
            interrupted = true;
            break;
        }
    }
    if main && step == start_step && resume_from.is_none() {
        save_run(&opts.out, &model, &tokenizer)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(TrainSummary {
        out: opts.out.clone(),
        params: model.num_parameters(),
        data: summary,
        start_step,
        steps: step,
        interrupted,
        seconds,
        samples_per_s: samples as f64 / loop_start.elapsed().as_secs_f64().max(1e-9),
        final_train_loss: last_step.map(|p| p.resolve()).transpose()?.map(|s| s.loss),
        final_val,
    })
}

/// Where the loop's step inputs come from.
enum Batches {
    /// Assembled when due, on the training thread.
    Inline(Box<StepSource>),
    /// Assembled ahead on a background thread.
    Ahead(Prefetcher),
}

fn validate(
    data: &TrainingData,
    subset: &[usize],
    model: &VlaModel,
    tokenizer: &TextTokenizer,
    prompts: &PromptCache,
    cfg: &TrainConfig,
    dist: Option<&DataParallel>,
) -> Result<ValStats> {
    // Each rank takes its share of the frames; the sums are added up across ranks.
    let all = subset;
    let subset = &all[dist.map_or(0..all.len(), |dp| dp.shard(all.len()))];
    let tok = model.action_tokenizer();
    let gripper = model.config().action.gripper_dim;
    let (mut loss, mut acc, mut l1, mut grip) = (0.0, 0.0, 0.0, 0.0);
    let mut l1_count = 0usize;
    let mut target_errors = TargetErrors::default();
    let (mut subgoal_right, mut subgoal_known) = (0usize, 0usize);
    let mut subtask: Option<[f64; 3]> = None;
    let heads = model.config().vision.grounding_heads;
    tch::no_grad(|| -> Result<()> {
        for chunk in subset.chunks(cfg.batch_size.max(1)) {
            let batch = data
                .batch(chunk, &Collate::of(model), tokenizer, prompts, None)?
                .to_device(model.device());
            let out = model.forward_train(&batch)?;
            let n = chunk.len() as f64;
            loss += out.loss.double_value(&[]) * n;
            acc += out.accuracy.double_value(&[]) * n;
            if let Some(table) = model.table_targets(&out) {
                target_errors.add(data, chunk, &table)?;
            }
            if let (Some(l), Some((tokens, whole))) = (&out.subtask_loss, &out.subtask_accuracy) {
                let sums = subtask.get_or_insert([0.0; 3]);
                for (sum, t) in sums.iter_mut().zip([l, tokens, whole]) {
                    *sum += t.double_value(&[]) * n;
                }
            }
            if let Some(logits) = &out.subgoal_logits {
                let labels = data.subgoal_labels(chunk, heads);
                let known = labels.ge(0);
                let right = logits
                    .argmax(-1, false)
                    .to_device(Device::Cpu)
                    .eq_tensor(&labels)
                    .logical_and(&known);
                subgoal_known += known.sum(Kind::Int64).int64_value(&[]) as usize;
                subgoal_right += right.sum(Kind::Int64).int64_value(&[]) as usize;
            }
            let predicted: Vec<i64> = Vec::<i64>::try_from(
                out.predicted
                    .to_device(Device::Cpu)
                    .to_kind(Kind::Int64)
                    .flatten(0, 1),
            )?;
            // A chunk's L1 and gripper accuracy are its first action's: frame i's own, the
            // one the one-action head predicts, so the two stay comparable.
            let per_frame = model.config().action.chunk_tokens();
            for (row, &i) in predicted.chunks(per_frame).zip(chunk) {
                let decoded = tok.decode(&row[..tok.action_dim().min(row.len())])?;
                let truth = data.action(i);
                for (d, (p, t)) in decoded.iter().zip(truth).enumerate() {
                    if Some(d) == gripper {
                        grip += ((*p > 0.5) == (*t > 0.5)) as u8 as f64;
                    } else {
                        l1 += (p - t).abs() as f64;
                        l1_count += 1;
                    }
                }
            }
        }
        Ok(())
    })?;
    if let Some(dp) = dist {
        // One flat vector of every sum and count: a single collective.
        let mut v = vec![loss, acc, l1, l1_count as f64, grip];
        v.extend([subgoal_right as f64, subgoal_known as f64]);
        v.push(f64::from(u8::from(subtask.is_some())));
        v.extend(subtask.unwrap_or_default());
        let present = !target_errors.far.is_empty() || !target_errors.near.is_empty();
        v.push(f64::from(u8::from(present)));
        target_errors.far.resize(heads, (0.0, 0));
        target_errors.near.resize(heads, (0.0, 0));
        for &(sum, count) in target_errors.far.iter().chain(&target_errors.near) {
            v.extend([sum, count as f64]);
        }
        dp.sum(&mut v)?;
        [loss, acc, l1] = [v[0], v[1], v[2]];
        l1_count = v[3] as usize;
        grip = v[4];
        subgoal_right = v[5] as usize;
        subgoal_known = v[6] as usize;
        subtask = (v[7] > 0.0).then(|| [v[8], v[9], v[10]]);
        let pairs: Vec<(f64, usize)> = v[12..].chunks(2).map(|p| (p[0], p[1] as usize)).collect();
        let (far, near) = pairs.split_at(heads);
        target_errors = if v[11] > 0.0 {
            TargetErrors {
                far: far.to_vec(),
                near: near.to_vec(),
            }
        } else {
            TargetErrors::default()
        };
    }
    let subset = all;
    let n = subset.len() as f64;
    Ok(ValStats {
        step: 0,
        loss: loss / n,
        accuracy: acc / n,
        l1: l1 / l1_count.max(1) as f64,
        gripper_accuracy: grip / n,
        target_error_far_cm: TargetErrors::means_cm(&target_errors.far),
        target_error_near_cm: TargetErrors::means_cm(&target_errors.near),
        subgoal_accuracy: (subgoal_known > 0).then(|| subgoal_right as f64 / subgoal_known as f64),
        subtask_loss: subtask.map(|s| s[0] / n),
        subtask_token_accuracy: subtask.map(|s| s[1] / n),
        subtask_accuracy: subtask.map(|s| s[2] / n),
        vqa_accuracy_seen: None,
        vqa_accuracy_held_out: None,
        frames: subset.len(),
    })
}

/// Makes every rank start from rank 0's state: the same resume step and tokenizer (checked,
/// since each rank read or trained its own), then rank 0's weights and optimiser moments.
fn join_data_parallel(
    dp: &DataParallel,
    model: &VlaModel,
    tokenizer: &TextTokenizer,
    step_fn: &mut TrainStep,
    start_step: usize,
    out: &Path,
) -> Result<()> {
    let main_step = dp.main_value(start_step as f64)? as usize;
    if main_step != start_step {
        return Err(VlaError::Input(format!(
            "rank {} would start at step {start_step} but rank 0 at step {main_step}: with \
             --resume every rank must see the same {} (a filesystem they share)",
            dp.rank(),
            out.display()
        )));
    }
    let json = tokenizer
        .inner()
        .to_string(false)
        .map_err(|e| VlaError::Input(format!("tokenizer: {e}")))?;
    let digest = <sha2::Sha256 as sha2::Digest>::digest(json.as_bytes());
    // 48 bits of the digest: exact in an f64.
    let mine = digest[..6]
        .iter()
        .fold(0u64, |h, &b| (h << 8) | u64::from(b)) as f64;
    if dp.main_value(mine)? != mine {
        return Err(VlaError::Input(format!(
            "rank {}'s text tokenizer differs from rank 0's: every rank must train on the same \
             --data and --config",
            dp.rank()
        )));
    }
    dp.broadcast_model(model)?;
    step_fn.broadcast_state(dp)?;
    step_fn.set_data_parallel(dp.clone())?;
    tracing::info!(
        rank = dp.rank(),
        world_size = dp.world_size(),
        "data-parallel: weights and optimiser state taken from rank 0"
    );
    Ok(())
}

/// Up to `n` indices spread evenly over `all` (deterministic).
fn evenly_spaced(all: &[usize], n: usize) -> Vec<usize> {
    if all.len() <= n {
        return all.to_vec();
    }
    (0..n).map(|k| all[k * all.len() / n]).collect()
}

fn checkpoint_dir(out: &Path, step: usize) -> PathBuf {
    out.join(CHECKPOINTS).join(format!("step_{step:07}"))
}

/// The newest complete checkpoint (one with `state.json`), if any.
pub fn latest_checkpoint(out: &Path) -> Result<Option<(usize, PathBuf)>> {
    let dir = out.join(CHECKPOINTS);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(VlaError::checkpoint(&dir, format!("cannot list: {e}"))),
    };
    let mut best: Option<(usize, PathBuf)> = None;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(text) = std::fs::read_to_string(path.join("state.json")) else {
            continue;
        };
        let Ok(state) = serde_json::from_str::<CheckpointState>(&text) else {
            tracing::warn!(dir = %path.display(), "ignoring checkpoint with unreadable state.json");
            continue;
        };
        if best.as_ref().is_none_or(|(s, _)| state.step > *s) {
            best = Some((state.step, path));
        }
    }
    Ok(best)
}

fn save_checkpoint(
    out: &Path,
    step: usize,
    model: &VlaModel,
    tokenizer: &TextTokenizer,
    step_fn: &TrainStep,
    cfg: &TrainConfig,
) -> Result<PathBuf> {
    let dir = checkpoint_dir(out, step);
    save_run(&dir, model, tokenizer)?;
    step_fn.save_state(dir.join("optimizer.safetensors"))?;
    let state = serde_json::to_string(&CheckpointState { step })
        .map_err(|e| VlaError::checkpoint(&dir, e))?;
    let state_path = dir.join("state.json");
    std::fs::write(&state_path, state).map_err(|e| VlaError::checkpoint(&state_path, e))?;
    // The latest weights also live at the top of the run, where `--ckpt RUN` finds them.
    save_run(out, model, tokenizer)?;
    // Prune old checkpoints (keep the newest `keep_checkpoints`).
    if let Ok(entries) = std::fs::read_dir(out.join(CHECKPOINTS)) {
        let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        dirs.sort();
        let excess = dirs.len().saturating_sub(cfg.keep_checkpoints);
        for old in dirs.into_iter().take(excess) {
            if old != dir {
                let _ = std::fs::remove_dir_all(&old);
            }
        }
    }
    Ok(dir)
}

fn write_train_json(
    opts: &TrainOptions,
    model: &VlaConfig,
    cfg: &TrainConfig,
    data: &DataSummary,
) -> Result<()> {
    let path = opts.out.join("train.json");
    let value = serde_json::json!({
        "model": model,
        "train": cfg,
        "data": data,
        "cotrain": opts.cotrain.as_ref().map(|c| serde_json::json!({
            "source": c.source, "examples": c.examples.len(), "ratio": c.ratio,
            "per_step": c.per_step(cfg.batch_size),
        })),
        "device": format!("{:?}", opts.device),
    });
    let text = serde_json::to_string_pretty(&value).map_err(|e| VlaError::checkpoint(&path, e))?;
    std::fs::write(&path, text).map_err(|e| VlaError::checkpoint(&path, e))
}

/// Opens `metrics.jsonl` for appending; on resume, drops lines past the resumed step (they
/// came from work after the checkpoint that is being redone).
fn open_metrics(out: &Path, start_step: usize) -> Result<std::fs::File> {
    let path = out.join(METRICS);
    let kept: String = match std::fs::read_to_string(&path) {
        Ok(text) => text
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                    .is_some_and(|s| (s as usize) <= start_step)
            })
            .map(|l| format!("{l}\n"))
            .collect(),
        Err(_) => String::new(),
    };
    std::fs::write(&path, kept).map_err(|e| VlaError::checkpoint(&path, e))?;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|e| VlaError::checkpoint(&path, e))
}

fn write_metric(file: &mut std::fs::File, value: &serde_json::Value, out: &Path) -> Result<()> {
    writeln!(file, "{value}").map_err(|e| VlaError::checkpoint(out.join(METRICS), e))
}

/// Reads `metrics.jsonl` back (for plots and reports).
pub fn read_metrics(out: &Path) -> Result<Vec<serde_json::Value>> {
    let path = out.join(METRICS);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| VlaError::checkpoint(&path, format!("cannot read: {e}")))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}
