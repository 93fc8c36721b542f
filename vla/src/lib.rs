//! Vision-language-action model (RT-2 / OpenVLA style) on libtorch via `tch`.
//!
//! Two camera images go through a shared ViT ([`vit`]); patch tokens (plus a learned
//! per-camera embedding) are projected ([`projector`]) into a Llama-style LM ([`llama`]),
//! followed by a proprioception token and the tokenised instruction prompt
//! ([`text_tokenizer`]). The LM then emits 7 action tokens, one per action dimension
//! ([`action_tokenizer`]), decoded greedily with a KV cache and constrained to action ids
//! ([`model`]). [`checkpoint`] saves/loads run directories, [`policy`] turns observations into
//! [`vla_core::Action`]s, and [`train`] holds the optimisation step, [`data`] turns datasets into batches and
//! [`trainer`] runs the training loop with validation, checkpoints and resumption.
//!
//! Parameter names follow Hugging Face (`vision_backbone.encoder.layer.0.attention.attention.query`,
//! `language_model.model.layers.0.self_attn.q_proj`, …) so importing pretrained weights is a
//! name map ([`checkpoint::import_weights`]).

pub mod action_tokenizer;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod grounding;
pub mod layers;
pub mod llama;
pub mod model;
pub mod policy;
pub mod projector;
pub mod text_tokenizer;
pub mod train;
pub mod trainer;
pub mod vit;

pub use action_tokenizer::{ActionStats, ActionTokenizer, NormStats, StateStats};
pub use checkpoint::{load_run, save_run, RunConfig};
pub use config::{ActionDecoding, PlanConfig, VlaConfig};
pub use error::{Result, VlaError};
pub use model::{left_pad, right_pad, Generated, SubtaskInput, TrainOutput, VlaBatch, VlaModel};
pub use policy::{Decision, Policy};
pub use text_tokenizer::{prompt, TextTokenizer};
pub use train::{AuxTargets, OptimConfig, StepStats, TrainStep};

/// Re-exported so downstream crates use the same `tch` (devices, tensors) as this crate.
pub use tch;

/// Tests run in parallel on a shared 2-core machine: libtorch's default of one intra-op
/// thread per core makes small ops crawl (threads spin at barriers while a core is taken),
/// so unit tests use one thread each.
#[cfg(test)]
pub(crate) fn test_setup() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| tch::set_num_threads(1));
}
