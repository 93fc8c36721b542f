//! Model configuration: one TOML file with a section per component.
//!
//! Field names follow the Hugging Face configs of the matching components (`ViTConfig`,
//! `LlamaConfig`) so that a pretrained checkpoint's `config.json` maps over field by field.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, VlaError};
use crate::features::FeatureMapping;

/// ViT encoder shared by all cameras.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisionConfig {
    /// Native (training) resolution; square images of this side length.
    pub image_size: usize,
    pub patch_size: usize,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_ln_eps")]
    pub layer_norm_eps: f64,
    /// HF ViT has a CLS token (and a position embedding for it); only needed to import such
    /// weights. The VLA only consumes patch tokens, so it is dropped from the output.
    #[serde(default)]
    pub use_cls_token: bool,
    /// Number of cameras (front, wrist): each is encoded separately, tokens concatenated.
    #[serde(default = "default_cameras")]
    pub num_cameras: usize,
    /// Spatial-softmax keypoints per camera, fed to the LM as one extra token holding their
    /// expected (x, y) patch-grid coordinates (0 disables). Not part of OpenVLA: trained from
    /// scratch, attention over patch tokens learns *where* objects are very slowly, while
    /// soft-argmax coordinates make positions linearly readable (Levine et al., 2016).
    #[serde(default)]
    pub num_keypoints: usize,
    /// Early-convolution stem (Xiao et al., 2021, "Early convolutions help transformers see
    /// better"): output channels of 3x3 stride-2 convolutions run before the patch
    /// projection, which then covers `patch_size / 2^len` stem pixels. Empty (the default)
    /// is the plain HF patchify stem. With a stem, keypoints are read from its
    /// finer feature map rather than from the patch grid, so 3-pixel objects localise
    /// to a pixel instead of a 16-pixel patch.
    #[serde(default)]
    pub stem_channels: Vec<usize>,
    /// FiLM (as RT-1's FiLM-EfficientNet): the mean embedding of the prompt scales and shifts
    /// the stem's feature map, so the keypoints and patches can single out the object the
    /// instruction names before the LM sees them. Needs a stem.
    #[serde(default)]
    pub film: bool,
    /// Language-conditioned spatial readouts (see [`crate::model::grounding`]): heads whose
    /// instruction-chosen heat maps over the stem give the (x, y) of what the instruction
    /// names, in every camera, as one extra LM token (0 disables). Needs a stem.
    #[serde(default)]
    pub grounding_heads: usize,
    /// The grounding heat maps at the first stem level's resolution (twice the last's), over
    /// its features and the last level's (scores upsampled): with a 64-pixel image the last
    /// level's cells are ~5 cm of table in the front camera, the first's ~2.5 cm, and a
    /// grasp misses when its aim is ~2 cm off. Needs at least two stem levels.
    #[serde(default)]
    pub grounding_fine: bool,
    /// Each grounding head reads its own phrase of the instruction (attention over the
    /// prompt's tokens, each seen with its neighbours) instead of the mean of its
    /// embeddings, in which "the red can in the green bin" and "the green can in the red
    /// bin" are the same bag of words. Needs `grounding_heads`.
    #[serde(default)]
    pub grounding_phrases: bool,
    /// Per-channel normalisation applied to [0, 1] pixels.
    #[serde(default = "default_mean")]
    pub image_mean: [f32; 3],
    #[serde(default = "default_std")]
    pub image_std: [f32; 3],
}

/// MLP from the ViT width to the LM width (`fc1`, GELU, `fc2`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectorConfig {
    /// Width of the hidden layer (between `fc1` and `fc2`).
    pub hidden_size: usize,
}

/// Llama-style decoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextConfig {
    /// Size of the *text* vocabulary (the BPE target size). Action tokens get the
    /// `action.num_bins` ids after it, so the LM's embedding table has
    /// `vocab_size + num_bins` rows.
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Grouped-query attention; equal to `num_attention_heads` for plain multi-head.
    pub num_key_value_heads: usize,
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// Width of one attention head; `hidden_size / num_attention_heads` when absent (as
    /// `LlamaConfig.head_dim`, which some models set to something else).
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// The LM head is the embedding matrix (`lm_head.weight` is `model.embed_tokens.weight`),
    /// as in SmolLM2 and other small models whose weights are tied.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Low-rank adapters (LoRA) on the LM's linear layers: the pretrained weights are then
    /// frozen, and only the adapters and the rows of the added (action) ids are trained.
    /// Set from `[train.lora]` when training; kept in a run's config so it loads the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraConfig>,
    /// Longest sequence (vision + state + prompt + action tokens) the model accepts.
    pub max_position_embeddings: usize,
    /// The text id that ends a generated sequence (Hugging Face's `eos_token_id`): a
    /// sub-task ends with it (see [`PlanConfig`]). Training sets it from the tokenizer.
    #[serde(default)]
    pub eos_token_id: Option<usize>,
}

/// LoRA (Hu et al., 2021) as PEFT's `LoraConfig`: `W x + (alpha / rank) · B A x` with
/// `A` `[rank, in]` (Kaiming-uniform) and `B` `[out, rank]` (zeros), so a fresh adapter
/// changes nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    /// Which of the LM's projections get adapters (`q_proj`, `k_proj`, `v_proj`, `o_proj`,
    /// `gate_proj`, `up_proj`, `down_proj`).
    #[serde(default = "default_lora_targets")]
    pub targets: Vec<String>,
}

/// The LM projections LoRA can adapt.
pub const LORA_TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

fn default_lora_targets() -> Vec<String> {
    vec!["q_proj".into(), "v_proj".into()]
}

impl LoraConfig {
    /// `alpha / rank`, the factor on `B A x`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank.max(1) as f64
    }

    /// Adapter rank and scale for the projection `name`, when it is a target.
    pub fn for_target(&self, name: &str) -> Option<(usize, f64)> {
        self.targets
            .iter()
            .any(|t| t == name)
            .then(|| (self.rank, self.scale()))
    }

    pub fn validate(&self, field: &str) -> Result<()> {
        if self.rank == 0 {
            return Err(VlaError::invalid(
                format!("{field}.rank"),
                "must be at least 1",
            ));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(VlaError::invalid(
                format!("{field}.alpha"),
                format!("{} must be a positive number", self.alpha),
            ));
        }
        if self.targets.is_empty() {
            return Err(VlaError::invalid(format!("{field}.targets"), "is empty"));
        }
        if let Some(t) = self
            .targets
            .iter()
            .find(|t| !LORA_TARGETS.contains(&t.as_str()))
        {
            return Err(VlaError::invalid(
                format!("{field}.targets"),
                format!("unknown projection `{t}` (one of {LORA_TARGETS:?})"),
            ));
        }
        Ok(())
    }
}

/// Action discretisation and proprioception.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    #[serde(default = "default_action_dim")]
    pub action_dim: usize,
    #[serde(default = "default_bins")]
    pub num_bins: usize,
    /// Index of the binary gripper dimension (encoded with bins 0 / `num_bins - 1` only).
    #[serde(default = "default_gripper_dim")]
    pub gripper_dim: Option<usize>,
    #[serde(default = "default_state_dim")]
    pub state_dim: usize,
    /// Feed the proprioceptive state to the LM as one extra token.
    #[serde(default = "default_true")]
    pub use_proprio: bool,
    /// Which state values that token carries (indices into the state; empty = all). The
    /// end-effector pose lets a behaviour-cloned policy copy its own past motion (it has
    /// drifted from home in the direction it was going) instead of looking at the scene —
    /// the "copycat" shortcut of Wen et al. (2020). Keeping only the gripper opening and the
    /// height leaves the horizontal direction to vision.
    #[serde(default)]
    pub proprio_indices: Vec<usize>,
    /// Weight of an auxiliary training loss (0 = off): from the grounding readouts' front
    /// camera coordinates, regress where the demonstration will grasp (head 0: end-effector
    /// x, y at the first gripper close) and release (head 1: at the first opening after it),
    /// read from the demonstration itself. Dense supervision for "which object (and which
    /// bin) does the instruction mean, and where is it" — the action loss alone teaches that
    /// slowly. Needs `vision.grounding_heads`.
    #[serde(default, alias = "grasp_aux_weight")]
    pub target_aux_weight: f64,
    /// Also give the LM every grounding head's predicted table (x, y) *minus the end
    /// effector's* (x, y) from the state: "where the named object or bin is, relative to the
    /// gripper", the quantity an expert's move is made of. Without it the LM has the targets
    /// but not the gripper's horizontal position (left out of `proprio_indices` against the
    /// copycat shortcut) and must find the gripper in the images. Needs the target loss
    /// (`target_aux_weight > 0`) and proprioception (`use_proprio`).
    #[serde(default)]
    pub relative_targets: bool,
    /// Weight of a learned *subgoal* (0 = off): from the instruction and the proprioception,
    /// a gate over the grounding heads says which one the gripper is heading for now — the
    /// object until it is grasped, then the bin (or base) until the release — trained by
    /// cross-entropy on what the demonstration does next. The relative part of the grounding
    /// token then carries the gated target minus the end effector, one offset instead of one
    /// per head, so "move towards the subgoal" is the same input-output map whether the
    /// gripper is fetching the object or carrying it: `pick`'s many approach frames teach
    /// `place`'s few carry frames. Needs `relative_targets` and two or more grounding heads.
    #[serde(default)]
    pub subgoal_weight: f64,
    /// How a continuous dimension's bin is read from the model's distribution over bins
    /// (greedy decoding; sampling at a temperature draws instead).
    #[serde(default)]
    pub decoding: ActionDecoding,
    /// Actions predicted in one forward pass (parallel decoding, OpenVLA-OFT). 1 (the
    /// default) is the one-action head, its 7 tokens decoded one after the other. K > 1
    /// appends K·`action_dim` learned query positions after the prefix (the
    /// `action_chunk_queries` table), which see the prefix and each other (the prefix never
    /// sees them), and reads the actions of frames t … t+K−1 off them at once: one pass
    /// instead of 7 cached steps, and K steps of control per pass.
    #[serde(default = "default_chunk_size", skip_serializing_if = "is_one")]
    pub chunk_size: usize,
    /// How a policy executes a chunk (with `chunk_size > 1`).
    #[serde(default, skip_serializing_if = "ChunkExecution::is_default")]
    pub chunk_execution: ChunkExecution,
    /// Temporal ensembling's `m`: the chunks that predicted the current step weigh
    /// `exp(-m·i)`, `i = 0` the oldest (as ACT), so a larger `m` trusts the older ones more.
    #[serde(
        default = "default_ensemble_decay",
        skip_serializing_if = "is_default_ensemble_decay"
    )]
    pub ensemble_decay: f64,
}

/// Executing the K actions a chunked model predicts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChunkExecution {
    /// Decode once, execute the K actions, decode again (OpenVLA-OFT): K times fewer
    /// forward passes, but blind between them.
    #[default]
    OpenLoop,
    /// Decode every step and execute the weighted mean of what the last K chunks predicted
    /// for this step (ACT's temporal ensembling; the binary gripper by weighted majority):
    /// smoother, and every step sees a fresh observation, at one pass per step.
    Ensemble,
}

impl ChunkExecution {
    fn is_default(&self) -> bool {
        *self == ChunkExecution::default()
    }
}

/// Reading one action dimension's bin off its predicted distribution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionDecoding {
    /// The most likely bin, as RT-2 and OpenVLA decode.
    #[default]
    Argmax,
    /// The bin nearest the distribution's mean: what a histogram trained on Gaussian soft
    /// labels (HL-Gauss, Farebrother et al. 2024) predicts. Where the model hesitates between
    /// "stay" and "move 2.4 cm", the argmax takes the sharper spike (often "stay": every
    /// close, lift and release frame has no sideways motion); the mean moves part-way. The
    /// binary gripper dimension is always read by argmax.
    Expectation,
}

/// Whole-model configuration (`configs/*.toml`, and `config` inside a run's `config.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VlaConfig {
    pub vision: VisionConfig,
    pub projector: ProjectorConfig,
    pub text: TextConfig,
    pub action: ActionConfig,
    #[serde(default)]
    pub plan: PlanConfig,
    /// The dataset features the policy reads and writes (lerobot's `input_features` /
    /// `output_features`): the simulator's unless trained on another robot's data, when
    /// [`FeatureMapping::fit_config`] sets it with the sizes above.
    #[serde(default)]
    pub features: FeatureMapping,
}

/// High-level inference in the same network (π0.5, Hi Robot): before its action tokens the
/// LM decodes the next sub-task as text tokens with the same head and vocabulary, ending in
/// `text.eos_token_id`, and the actions follow both the prompt and that sub-task:
///
/// ```text
/// [vision][keypoints][state][pad… BOS prompt…][sub-task… EOS pad…][grounding][a0 … a6]
/// ```
///
/// The grounding heads read the sub-task instead of the prompt, so the thing to fetch next is
/// named in words the heads can find even when the instruction ("sort the objects by colour")
/// names none. The sub-task tokens are trained by cross-entropy like the actions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    /// Weight of the sub-task tokens' cross-entropy; 0 = no sub-task (the actions follow the
    /// prompt directly, and the grounding heads read the prompt).
    #[serde(default)]
    pub weight: f64,
    /// Longest sub-task decoded, end token included.
    #[serde(default = "default_plan_tokens")]
    pub max_tokens: usize,
}

impl Default for PlanConfig {
    fn default() -> Self {
        PlanConfig {
            weight: 0.0,
            max_tokens: default_plan_tokens(),
        }
    }
}

impl PlanConfig {
    pub fn enabled(&self) -> bool {
        self.weight > 0.0
    }
}

fn default_plan_tokens() -> usize {
    24
}

fn default_channels() -> usize {
    3
}
/// `ViTConfig.layer_norm_eps`'s default, so a config that leaves it out means what it means
/// to `transformers` (the shipped configs set it explicitly).
fn default_ln_eps() -> f64 {
    1e-12
}
fn default_cameras() -> usize {
    2
}
fn default_mean() -> [f32; 3] {
    [0.5; 3]
}
fn default_std() -> [f32; 3] {
    [0.5; 3]
}
/// `LlamaConfig.rms_norm_eps`'s default (see `default_ln_eps`).
fn default_rms_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_action_dim() -> usize {
    vla_core::action::ACTION_DIM
}
fn default_bins() -> usize {
    256
}
fn default_gripper_dim() -> Option<usize> {
    Some(6)
}
fn default_state_dim() -> usize {
    vla_core::observation::STATE_DIM
}
fn default_true() -> bool {
    true
}
fn default_chunk_size() -> usize {
    1
}
fn is_one(v: &usize) -> bool {
    *v == 1
}
fn default_ensemble_decay() -> f64 {
    0.01
}
fn is_default_ensemble_decay(v: &f64) -> bool {
    *v == default_ensemble_decay()
}

impl TextConfig {
    /// Width of one attention head (`head_dim`, or the hidden size split over the heads).
    pub fn attention_head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }
}

impl ActionConfig {
    /// Action tokens one forward pass predicts: `chunk_size · action_dim`.
    pub fn chunk_tokens(&self) -> usize {
        self.chunk_size * self.action_dim
    }

    /// Number of state values the proprioception token carries.
    pub fn proprio_width(&self) -> usize {
        if self.proprio_indices.is_empty() {
            self.state_dim
        } else {
            self.proprio_indices.len()
        }
    }
}

impl VlaConfig {
    /// Whether a run trained with `trained` was trained from this (file) config: equal once
    /// what training fills in where the file leaves it out (the tokenizer's end id) is
    /// taken from the run. A demo that reruns on a cached run then reuses it.
    pub fn trained_as(&self, trained: &VlaConfig) -> bool {
        let mut file = self.clone();
        if file.text.eos_token_id.is_none() {
            file.text.eos_token_id = trained.text.eos_token_id;
        }
        &file == trained
    }

    /// Reads and validates a TOML config; errors name the file and the offending field.
    /// A `[train]` table (see [`crate::train::load_config_file`]) is ignored here.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self> {
        crate::train::load_config_file(path).map(|(model, _)| model)
    }

    /// Parses a TOML string (no file: errors carry the field only).
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let config: VlaConfig = toml::from_str(text).map_err(|e| VlaError::Config {
            path: "<string>".into(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| VlaError::invalid("<all>", e.to_string()))
    }

    /// Number of LM vocabulary rows: text tokens followed by the action bins.
    pub fn lm_vocab_size(&self) -> usize {
        self.text.vocab_size + self.action.num_bins
    }

    /// First action token id (action bin `b` is token `action_token_offset() + b`).
    pub fn action_token_offset(&self) -> usize {
        self.text.vocab_size
    }

    /// Patch tokens per camera at the native resolution.
    pub fn patches_per_camera(&self) -> usize {
        let g = self.vision.image_size / self.vision.patch_size;
        g * g
    }

    /// Tokens in front of the prompt: all cameras' patches plus the optional keypoint and
    /// state tokens.
    pub fn num_prefix_tokens(&self) -> usize {
        self.vision.num_cameras * self.patches_per_camera()
            + usize::from(self.vision.num_keypoints > 0)
            + usize::from(self.vision.grounding_heads > 0)
            + usize::from(self.action.use_proprio)
    }

    /// Checks cross-field constraints the type system cannot express.
    pub fn validate(&self) -> Result<()> {
        let v = &self.vision;
        let t = &self.text;
        let a = &self.action;
        let positive = [
            ("vision.image_size", v.image_size),
            ("vision.patch_size", v.patch_size),
            ("vision.num_channels", v.num_channels),
            ("vision.hidden_size", v.hidden_size),
            ("vision.num_hidden_layers", v.num_hidden_layers),
            ("vision.num_attention_heads", v.num_attention_heads),
            ("vision.intermediate_size", v.intermediate_size),
            ("vision.num_cameras", v.num_cameras),
            ("projector.hidden_size", self.projector.hidden_size),
            ("text.vocab_size", t.vocab_size),
            ("text.hidden_size", t.hidden_size),
            ("text.intermediate_size", t.intermediate_size),
            ("text.num_hidden_layers", t.num_hidden_layers),
            ("text.num_attention_heads", t.num_attention_heads),
            ("text.num_key_value_heads", t.num_key_value_heads),
            ("text.max_position_embeddings", t.max_position_embeddings),
            ("action.action_dim", a.action_dim),
            ("action.state_dim", a.state_dim),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(VlaError::invalid(field, "must be > 0"));
            }
        }
        if !v.image_size.is_multiple_of(v.patch_size) {
            return Err(VlaError::invalid(
                "vision.image_size",
                format!(
                    "{} is not a multiple of vision.patch_size {}",
                    v.image_size, v.patch_size
                ),
            ));
        }
        let stem_stride = 1usize << v.stem_channels.len().min(16);
        if v.stem_channels.len() > 8
            || v.stem_channels.contains(&0)
            || !v.patch_size.is_multiple_of(stem_stride)
        {
            return Err(VlaError::invalid(
                "vision.stem_channels",
                format!(
                    "{:?}: need at most 8 non-zero widths whose total stride {stem_stride} divides vision.patch_size {}",
                    v.stem_channels, v.patch_size
                ),
            ));
        }
        if !(a.target_aux_weight.is_finite() && a.target_aux_weight >= 0.0) {
            return Err(VlaError::invalid(
                "action.target_aux_weight",
                format!("{} must be a finite weight >= 0", a.target_aux_weight),
            ));
        }
        if a.target_aux_weight > 0.0 && v.grounding_heads == 0 {
            return Err(VlaError::invalid(
                "action.target_aux_weight",
                "the target loss reads the grounding readouts: set vision.grounding_heads too",
            ));
        }
        if a.relative_targets
            && (a.target_aux_weight <= 0.0
                || !a.use_proprio
                || a.state_dim < vla_core::StateLayout::EE_POSITION.end)
        {
            return Err(VlaError::invalid(
                "action.relative_targets",
                format!(
                    "reads the target head's table positions and the end effector's (x, y) from the state: set action.target_aux_weight > 0, action.use_proprio and action.state_dim >= {}",
                    vla_core::StateLayout::EE_POSITION.end
                ),
            ));
        }
        if !(a.subgoal_weight.is_finite() && a.subgoal_weight >= 0.0)
            || (a.subgoal_weight > 0.0 && (!a.relative_targets || v.grounding_heads < 2))
        {
            return Err(VlaError::invalid(
                "action.subgoal_weight",
                format!(
                    "{}: a finite weight >= 0; the subgoal gates the relative targets of two or more heads: set action.relative_targets and vision.grounding_heads >= 2",
                    a.subgoal_weight
                ),
            ));
        }
        if v.grounding_heads > 8 || (v.grounding_heads > 0 && v.stem_channels.is_empty()) {
            return Err(VlaError::invalid(
                "vision.grounding_heads",
                format!(
                    "{}: at most 8 heads, and they read the conv stem: set vision.stem_channels too",
                    v.grounding_heads
                ),
            ));
        }
        if v.grounding_phrases && v.grounding_heads == 0 {
            return Err(VlaError::invalid(
                "vision.grounding_phrases",
                "phrases are what the grounding heads read: set vision.grounding_heads too",
            ));
        }
        if v.grounding_fine && (v.grounding_heads == 0 || v.stem_channels.len() < 2) {
            return Err(VlaError::invalid(
                "vision.grounding_fine",
                "fine heat maps read the first of two or more stem levels: set vision.grounding_heads and at least two vision.stem_channels",
            ));
        }
        if let Some(&i) = a.proprio_indices.iter().find(|&&i| i >= a.state_dim) {
            return Err(VlaError::invalid(
                "action.proprio_indices",
                format!(
                    "index {i} is outside the state (action.state_dim = {})",
                    a.state_dim
                ),
            ));
        }
        let plan = &self.plan;
        if !(plan.weight.is_finite() && plan.weight >= 0.0) {
            return Err(VlaError::invalid(
                "plan.weight",
                format!("{} must be a finite number >= 0", plan.weight),
            ));
        }
        if plan.enabled() && plan.max_tokens == 0 {
            return Err(VlaError::invalid(
                "plan.max_tokens",
                "must be >= 1 with a plan",
            ));
        }
        // FiLM conditions the vision encoder on the text before the sub-task exists.
        if plan.enabled() && v.film {
            return Err(VlaError::invalid(
                "vision.film",
                "cannot be combined with plan.weight > 0 (FiLM reads the text before the sub-task is decoded)",
            ));
        }
        if v.film && v.stem_channels.is_empty() {
            return Err(VlaError::invalid(
                "vision.film",
                "FiLM modulates the conv stem: set vision.stem_channels too",
            ));
        }
        if !v.hidden_size.is_multiple_of(v.num_attention_heads) {
            return Err(VlaError::invalid(
                "vision.hidden_size",
                format!(
                    "{} is not divisible by vision.num_attention_heads {}",
                    v.hidden_size, v.num_attention_heads
                ),
            ));
        }
        if let Some(lora) = &t.lora {
            lora.validate("text.lora")?;
        }
        match t.head_dim {
            None if !t.hidden_size.is_multiple_of(t.num_attention_heads)
                || !(t.hidden_size / t.num_attention_heads).is_multiple_of(2) =>
            {
                return Err(VlaError::invalid(
                    "text.hidden_size",
                    format!(
                        "{} must be divisible by text.num_attention_heads {} with an even head size (rotary embeddings), or set text.head_dim",
                        t.hidden_size, t.num_attention_heads
                    ),
                ));
            }
            Some(hd) if hd == 0 || !hd.is_multiple_of(2) => {
                return Err(VlaError::invalid(
                    "text.head_dim",
                    format!("{hd} must be even and positive (rotary embeddings)"),
                ));
            }
            _ => {}
        }
        if !t.num_attention_heads.is_multiple_of(t.num_key_value_heads) {
            return Err(VlaError::invalid(
                "text.num_key_value_heads",
                format!(
                    "{} does not divide text.num_attention_heads {}",
                    t.num_key_value_heads, t.num_attention_heads
                ),
            ));
        }
        let f = &self.features;
        for (field, theirs, ours) in [
            ("vision.num_cameras", f.cameras.len(), v.num_cameras),
            ("action.state_dim", f.state_dim(), a.state_dim),
            ("action.action_dim", f.action_dim(), a.action_dim),
        ] {
            if theirs != ours {
                return Err(VlaError::invalid(
                    field,
                    format!("{ours} disagrees with [features], which has {theirs}"),
                ));
            }
        }
        if f.gripper_dim != a.gripper_dim {
            return Err(VlaError::invalid(
                "action.gripper_dim",
                format!(
                    "{:?} disagrees with [features].gripper_dim {:?}",
                    a.gripper_dim, f.gripper_dim
                ),
            ));
        }
        if a.num_bins < 2 {
            return Err(VlaError::invalid("action.num_bins", "must be >= 2"));
        }
        if let Some(g) = a.gripper_dim {
            if g >= a.action_dim {
                return Err(VlaError::invalid(
                    "action.gripper_dim",
                    format!("{g} is out of range for action.action_dim {}", a.action_dim),
                ));
            }
        }
        for (i, s) in v.image_std.iter().enumerate() {
            if *s <= 0.0 {
                return Err(VlaError::invalid(
                    format!("vision.image_std[{i}]"),
                    "must be > 0",
                ));
            }
        }
        if a.chunk_size == 0 {
            return Err(VlaError::invalid(
                "action.chunk_size",
                "must be >= 1 (1: one action per forward pass)",
            ));
        }
        if !(a.ensemble_decay.is_finite() && a.ensemble_decay >= 0.0) {
            return Err(VlaError::invalid(
                "action.ensemble_decay",
                format!("{} must be a finite number >= 0", a.ensemble_decay),
            ));
        }
        let min_len = self.num_prefix_tokens() + a.chunk_tokens() + 2;
        if t.max_position_embeddings < min_len {
            return Err(VlaError::invalid(
                "text.max_position_embeddings",
                format!(
                    "{} is too small: vision/state prefix and actions alone need {min_len}",
                    t.max_position_embeddings
                ),
            ));
        }
        Ok(())
    }

    /// A very small config for unit tests (fast on CPU, not useful for control).
    pub fn test_tiny() -> Self {
        VlaConfig {
            vision: VisionConfig {
                image_size: 16,
                patch_size: 8,
                num_channels: 3,
                hidden_size: 16,
                num_hidden_layers: 1,
                num_attention_heads: 2,
                intermediate_size: 32,
                layer_norm_eps: 1e-6,
                use_cls_token: false,
                num_cameras: 2,
                num_keypoints: 4,
                stem_channels: vec![8],
                film: true,
                grounding_heads: 2,
                grounding_fine: false,
                grounding_phrases: false,
                image_mean: default_mean(),
                image_std: default_std(),
            },
            projector: ProjectorConfig { hidden_size: 32 },
            text: TextConfig {
                vocab_size: 300,
                hidden_size: 32,
                intermediate_size: 64,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                num_key_value_heads: 2,
                rms_norm_eps: 1e-5,
                rope_theta: 10_000.0,
                head_dim: None,
                tie_word_embeddings: false,
                lora: None,
                max_position_embeddings: 128,
                eos_token_id: None,
            },
            action: ActionConfig {
                action_dim: 7,
                num_bins: 256,
                gripper_dim: Some(6),
                state_dim: 13,
                use_proprio: true,
                proprio_indices: vec![6, 9],
                target_aux_weight: 0.5,
                relative_targets: true,
                subgoal_weight: 0.0,
                decoding: ActionDecoding::Argmax,
                chunk_size: 1,
                chunk_execution: ChunkExecution::OpenLoop,
                ensemble_decay: 0.01,
            },
            plan: PlanConfig::default(),
            features: FeatureMapping::default(),
        }
    }

    /// [`Self::test_tiny`] that decodes a sub-task before its actions (`plan`), with phrase
    /// pooling (the grounding heads read the sub-task), no FiLM, and `eos` ending sub-tasks.
    pub fn test_tiny_plan(eos: usize) -> Self {
        let mut cfg = Self::test_tiny();
        cfg.vision.film = false;
        cfg.vision.grounding_phrases = true;
        cfg.text.eos_token_id = Some(eos);
        cfg.plan = PlanConfig {
            weight: 1.0,
            max_tokens: 8,
        };
        cfg
    }

    /// [`Self::test_tiny`] predicting chunks of `k` actions in one pass.
    pub fn test_tiny_chunk(k: usize) -> Self {
        let mut cfg = Self::test_tiny();
        cfg.action.chunk_size = k;
        cfg
    }

    /// [`Self::test_tiny`] with two stem levels (half and a quarter of the image) and the
    /// grounding heat maps on the first (`vision.grounding_fine`).
    pub fn test_tiny_fine_grounding() -> Self {
        let mut cfg = Self::test_tiny();
        cfg.vision.stem_channels = vec![4, 8];
        cfg.vision.grounding_fine = true;
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run whose only difference is the end id training filled in was trained from the
    /// file; any other difference, or an end id the file sets otherwise, means it was not.
    #[test]
    fn a_run_is_trained_as_its_file_says_once_training_fills_the_end_id() {
        let mut file = VlaConfig::test_tiny();
        file.text.eos_token_id = None;
        let mut trained = file.clone();
        trained.text.eos_token_id = Some(2);
        assert!(file.trained_as(&trained));
        let mut other = trained.clone();
        other.text.hidden_size *= 2;
        assert!(!file.trained_as(&other));
        file.text.eos_token_id = Some(3);
        assert!(!file.trained_as(&trained));
    }

    #[test]
    fn shipped_configs_parse_and_validate() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        for name in [
            "tiny.toml",
            "tiny_plan.toml",
            "base.toml",
            "tiny_chunk.toml",
            "tiny_cotrain.toml",
        ] {
            let cfg = VlaConfig::from_toml_file(dir.join(name))?;
            assert_eq!(cfg.action.action_dim, 7);
        }
        // tiny_chunk.toml is tiny.toml with chunks and nothing else.
        let tiny = VlaConfig::from_toml_file(dir.join("tiny.toml"))?;
        let chunk = VlaConfig::from_toml_file(dir.join("tiny_chunk.toml"))?;
        assert_eq!(tiny.action.chunk_size, 1);
        assert_eq!(chunk.action.chunk_size, 4);
        let mut same = chunk.clone();
        same.action.chunk_size = 1;
        same.action.chunk_execution = ChunkExecution::OpenLoop;
        assert_eq!(same, tiny);
        let train = |name: &str| -> std::result::Result<String, Box<dyn std::error::Error>> {
            let (_, t) = crate::train::load_config_file(dir.join(name))?;
            Ok(serde_json::to_string(&t)?)
        };
        assert_eq!(train("tiny.toml")?, train("tiny_chunk.toml")?);
        // tiny_cotrain.toml is tiny.toml with made-up instruction words and nothing else.
        let (cotrain, mut words) = crate::train::load_config_file(dir.join("tiny_cotrain.toml"))?;
        assert_eq!(cotrain, tiny);
        assert_eq!(words.augment.extra_words, 0.5);
        words.augment.extra_words = 0.0;
        assert_eq!(serde_json::to_string(&words)?, train("tiny.toml")?);
        Ok(())
    }

    #[test]
    fn one_action_configs_read_and_write_as_before_chunks() {
        // A config without the chunk fields is the one-action head, and writes none back,
        // so the `config.json` of existing runs loads and reads unchanged.
        let cfg = VlaConfig::test_tiny();
        let text = cfg.to_toml_string().expect("toml");
        for field in ["chunk_size", "chunk_execution", "ensemble_decay"] {
            assert!(!text.contains(field), "{field} in\n{text}");
        }
        let back = VlaConfig::from_toml_str(&text).expect("parses");
        assert_eq!(back.action.chunk_size, 1);
        assert_eq!(back.action.chunk_execution, ChunkExecution::OpenLoop);
        assert_eq!(back.action.ensemble_decay, 0.01);
        let mut chunked = VlaConfig::test_tiny_chunk(4);
        chunked.action.chunk_execution = ChunkExecution::Ensemble;
        let text = chunked.to_toml_string().expect("toml");
        assert!(text.contains("chunk_execution = \"ensemble\""), "{text}");
        assert_eq!(VlaConfig::from_toml_str(&text).expect("parses"), chunked);
    }

    #[test]
    fn errors_name_file_and_field() {
        let dir = std::env::temp_dir().join(format!("vla-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("broken.toml");
        let mut text = VlaConfig::test_tiny().to_toml_string().unwrap();
        text = text.replace("intermediate_size = 64\n", "");
        std::fs::write(&path, &text).unwrap();
        let err = VlaConfig::from_toml_file(&path).unwrap_err().to_string();
        assert!(err.contains("broken.toml"), "{err}");
        assert!(err.contains("intermediate_size"), "{err}");

        let mut bad = VlaConfig::test_tiny();
        bad.vision.patch_size = 5;
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("vision.image_size"), "{err}");

        // A stem whose stride does not divide the patch (8 / 2^4) is refused by name.
        let mut bad = VlaConfig::test_tiny();
        bad.vision.stem_channels = vec![8, 8, 8, 8];
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("vision.stem_channels"), "{err}");
        bad.vision.stem_channels = vec![0];
        assert!(bad.validate().is_err());

        // Grounding reads the stem; the target loss reads the grounding.
        let mut bad = VlaConfig::test_tiny();
        bad.vision.stem_channels.clear();
        bad.vision.film = false;
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("vision.grounding_heads"), "{err}");
        let refused_naming = |bad: VlaConfig, why: &str, field: &str| {
            let err = bad.validate().expect_err(why).to_string();
            assert!(err.contains(field), "{err}");
        };
        // Phrases are read by grounding heads.
        let mut bad = VlaConfig::test_tiny();
        bad.vision.grounding_heads = 0;
        bad.action.target_aux_weight = 0.0;
        bad.action.relative_targets = false;
        bad.action.subgoal_weight = 0.0;
        bad.vision.grounding_phrases = true;
        refused_naming(
            bad,
            "no heads to read the phrases",
            "vision.grounding_phrases",
        );
        // Fine heat maps need a first stem level finer than the last.
        let mut bad = VlaConfig::test_tiny();
        bad.vision.grounding_fine = true;
        refused_naming(
            bad,
            "one stem level has no finer level",
            "vision.grounding_fine",
        );
        VlaConfig::test_tiny_fine_grounding()
            .validate()
            .expect("two stem levels take fine maps");
        let mut bad = VlaConfig::test_tiny();
        bad.action.proprio_indices = vec![6, 13];
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("action.proprio_indices"), "{err}");
        let mut bad = VlaConfig::test_tiny();
        bad.vision.grounding_heads = 0;
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("action.target_aux_weight"), "{err}");
        // Relative targets subtract the end effector's position from the target head's.
        for unset in [
            |c: &mut VlaConfig| c.action.target_aux_weight = 0.0,
            |c: &mut VlaConfig| c.action.use_proprio = false,
        ] {
            let mut bad = VlaConfig::test_tiny();
            unset(&mut bad);
            let err = bad.validate().unwrap_err().to_string();
            assert!(err.contains("action.relative_targets"), "{err}");
        }
        let mut bad = VlaConfig::test_tiny();
        bad.action.subgoal_weight = 0.5;
        bad.action.relative_targets = false;
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("action.subgoal_weight"), "{err}");
        // Chunks: at least one action, a decay that is a number, and room for the slots.
        let mut bad = VlaConfig::test_tiny();
        bad.action.chunk_size = 0;
        refused_naming(bad, "no action per pass", "action.chunk_size");
        let mut bad = VlaConfig::test_tiny_chunk(4);
        bad.action.ensemble_decay = -0.1;
        refused_naming(bad, "a negative decay", "action.ensemble_decay");
        let mut bad = VlaConfig::test_tiny_chunk(16);
        bad.text.max_position_embeddings = 100;
        refused_naming(bad, "112 slots", "text.max_position_embeddings");
        VlaConfig::test_tiny_chunk(4)
            .validate()
            .expect("a chunk fits the test config");
        std::fs::remove_dir_all(&dir).ok();
    }
}
