//! A training step's inputs (the batch and the auxiliary targets), assembled on the host,
//! optionally ahead of time on a background thread.
//!
//! Step `s`'s inputs depend only on the run's seed, `s` and this rank's place in a
//! data-parallel run, so a prefetch thread assembles exactly what the training loop would
//! have: prefetching changes when the work happens, not what it computes (a test compares
//! runs with and without it). On a GPU the thread decodes, augments and pins the next
//! batches while the device runs the current step; on CPU it would compete with libtorch's
//! own threads for the cores, so there it is off by default.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use rand::Rng;

use crate::config::VlaConfig;
use crate::error::{Result, VlaError};
use crate::model::VlaBatch;
use crate::text_tokenizer::TextTokenizer;
use crate::train::data::{sample_rngs, step_rng, Collate, PromptCache, TrainingData};
use crate::train::distributed::shard;
use crate::train::optim::{AuxTargets, TextTargets};
use crate::train::vqa::VqaData;
use crate::train::{CoTraining, TrainConfig};

/// One step's inputs, on the host.
pub struct StepInputs {
    pub step: usize,
    /// Samples in the global batch (every rank's together).
    pub global: usize,
    pub batch: VlaBatch,
    pub targets: AuxTargets,
}

/// Everything assembling a step's inputs reads; shared with the prefetch thread.
pub struct StepSource {
    pub data: Arc<TrainingData>,
    pub vqa: Option<Arc<VqaData>>,
    pub cotrain: Option<CoTraining>,
    pub collate: Collate,
    pub tokenizer: TextTokenizer,
    pub prompts: Arc<PromptCache>,
    pub train: TrainConfig,
    pub model: VlaConfig,
    /// (rank, world size) in a data-parallel run.
    pub rank: Option<(usize, usize)>,
}

impl StepSource {
    /// Step `step`'s inputs. Every rank draws the whole global batch from the step's generator
    /// and keeps its slice; each sample is augmented from its own generator, so the slices
    /// together are exactly the batch one process would build.
    pub fn inputs(&self, step: usize) -> Result<StepInputs> {
        let cfg = &self.train;
        let data = &self.data;
        let train_idx = data.train_indices();
        let mut rng = step_rng(cfg.seed, step);
        let global: Vec<usize> = (0..cfg.batch_size)
            .map(|_| train_idx[rng.random_range(0..train_idx.len())])
            .collect();
        let slice = |n: usize| self.rank.map_or(0..n, |(r, w)| shard(n, r, w));
        let mine = slice(global.len());
        let indices = &global[mine.clone()];
        let mut rngs = sample_rngs(cfg.seed, step, mine);
        let batch = data.batch(
            indices,
            &self.collate,
            &self.tokenizer,
            &self.prompts,
            Some((&cfg.augment, &mut rngs)),
        )?;
        // Auxiliary targets only for a model that has those losses (no per-step work else).
        let model = &self.model;
        let heads = model.vision.grounding_heads;
        let map_weight = cfg.grounding.map_weight;
        let wrist_map_weight = cfg.grounding.wrist_map_weight;
        let targets = AuxTargets {
            locations: (model.action.target_aux_weight > 0.0 && heads > 0)
                .then(|| data.target_locations(indices, heads)),
            pixels: (map_weight > 0.0 && heads > 0)
                .then(|| data.target_pixels(indices, heads, &cfg.grounding.front_camera)),
            map_weight,
            wrist_pixels: (wrist_map_weight > 0.0 && heads > 0)
                .then(|| data.wrist_target_pixels(indices, heads, &cfg.grounding.wrist_camera)),
            wrist_map_weight,
            subgoals: (model.action.subgoal_weight > 0.0)
                .then(|| data.subgoal_labels(indices, heads)),
            text: match (&self.vqa, &self.cotrain) {
                (Some(vqa), Some(c)) => {
                    let n = c.per_step(global.len());
                    let all = vqa.sample(n, &mut rng);
                    let part = slice(n);
                    let examples = &all[part.clone()];
                    // After the robot frames' positions in the step's stream.
                    let b = global.len();
                    let mut rngs = sample_rngs(cfg.seed, step, b + part.start..b + part.end);
                    let augment = Some((&cfg.augment, rngs.as_mut_slice()));
                    Some(TextTargets {
                        batch: vqa.batch(examples, &self.tokenizer, augment),
                        weight: examples.len() as f64 / indices.len() as f64,
                        pixels: (map_weight > 0.0 && heads > 0)
                            .then(|| vqa.pixels(examples, heads)),
                    })
                }
                _ => None,
            },
        };
        Ok(StepInputs {
            step,
            global: global.len(),
            batch,
            targets,
        })
    }
}

/// Steps' inputs, assembled `depth` steps ahead on a background thread.
pub struct Prefetcher {
    rx: Option<Receiver<Result<StepInputs>>>,
    handle: Option<JoinHandle<()>>,
}

impl Prefetcher {
    /// Starts assembling steps `steps` in order, at most `depth` ahead of [`Self::next`].
    pub fn start(source: StepSource, steps: std::ops::Range<usize>, depth: usize) -> Self {
        let (tx, rx) = sync_channel(depth.max(1));
        let handle = std::thread::Builder::new()
            .name("vla-batches".into())
            .spawn(move || {
                for step in steps {
                    let inputs = source.inputs(step);
                    let failed = inputs.is_err();
                    // A closed channel: the loop stopped early (Ctrl-C, --until, an error).
                    if tx.send(inputs).is_err() || failed {
                        break;
                    }
                }
            })
            .ok();
        Prefetcher {
            rx: Some(rx),
            handle,
        }
    }

    /// The inputs of the next step; `step` is checked against the order they were made in.
    pub fn next(&self, step: usize) -> Result<StepInputs> {
        let inputs = self
            .rx
            .as_ref()
            .and_then(|rx| rx.recv().ok())
            .ok_or_else(|| VlaError::Input("the batch thread stopped unexpectedly".into()))??;
        if inputs.step != step {
            return Err(VlaError::Input(format!(
                "the batch thread made step {}'s inputs where step {step}'s were due",
                inputs.step
            )));
        }
        Ok(inputs)
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        // Closing the channel ends the thread at its next send.
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
