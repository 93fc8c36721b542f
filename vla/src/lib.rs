//! Vision-language-action model (RT-2 / OpenVLA style) on libtorch via `tch`, in two rooms
//! as lerobot splits a policy's modelling from its training script:
//!
//! - [`model`]: the network, one component per file — a shared ViT for both cameras
//!   ([`model::vit`]), the MLP projector ([`model::projector`]), the grounding heads
//!   ([`model::grounding`]) and the Llama-style LM ([`model::llama`]) that reads vision,
//!   state and the tokenised prompt ([`text_tokenizer`]), says the next sub-task in words
//!   when it has a plan, and emits 7 action tokens ([`action_tokenizer`]), decoded greedily
//!   with a KV cache and constrained to action ids. Its serde configuration is [`config`].
//! - [`train`]: the loop (validation, checkpoints, exact resumption), the optimiser step
//!   ([`train::optim`]) and the batches ([`train::data`]).
//!
//! [`checkpoint`] saves/loads run directories, [`hf`] reads Hugging Face model directories
//! (`LlamaConfig`/`ViTConfig` and their weights), and [`policy`] turns observations into
//! [`vla_core::Action`]s.
//!
//! Parameter names follow Hugging Face (`vision_backbone.encoder.layer.0.attention.attention.query`,
//! `language_model.model.layers.0.self_attn.q_proj`, …) so importing pretrained weights is a
//! name map ([`checkpoint::import_weights`]).

pub mod action_tokenizer;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod features;
pub mod hf;
pub mod host;
pub mod model;
pub mod policy;
pub mod text_tokenizer;
pub mod train;

pub use action_tokenizer::{ActionStats, ActionTokenizer, NormStats, StateStats};
pub use checkpoint::{load_run, save_run, RunConfig};
pub use config::{ActionDecoding, PlanConfig, VlaConfig};
pub use error::{Result, VlaError};
pub use features::{ActionSpace, FeatureMapping, MappingOverrides};
pub use model::{
    left_pad, right_pad, Generated, SubtaskInput, TextBatch, TextOutput, TrainOutput, VlaBatch,
    VlaModel,
};
pub use policy::{Decision, Policy};
pub use text_tokenizer::{prompt, question_prompt, TextTokenizer};
pub use train::optim::{AuxTargets, OptimConfig, PendingStats, StepStats, TextTargets, TrainStep};

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
