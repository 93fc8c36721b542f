//! The VLA: ViT → projector → Llama, emitting discretised actions as tokens.
//!
//! Sequence fed to the LM, per sample:
//!
//! ```text
//! [front patches][wrist patches][keypoints][grounding][state] [pad… BOS prompt…] [a0 … a5]
//!  └─ C·N vision tokens ──────┘ └── 1 ──┘ └─── 1 ───┘ └ 1 ┘   └ left-padded L ┘   └ teacher-forced ┘
//! ```
//!
//! The keypoint token (optional, `vision.num_keypoints`) carries the spatial soft-argmax
//! coordinates of learned keypoint logits for every camera — per pixel of the conv stem's
//! feature map when the ViT has one (`vision.stem_channels`), per patch otherwise; it is what
//! lets a from-scratch model learn object positions in minutes (see
//! [`crate::config::VisionConfig`]). The grounding token (optional, `vision.grounding_heads`)
//! carries the coordinates of what the instruction names (see [`crate::model::grounding`]).
//!
//! The hidden state at the last prompt token predicts `a0`, the one at `a_i` predicts
//! `a_{i+1}`. Prompts are left-padded so every sample's actions sit at the same positions;
//! the padding is masked and skipped by the rotary positions (see [`crate::model::llama`]).
//!
//! With `action.chunk_size` K > 1 (parallel decoding, OpenVLA-OFT) the action tokens are
//! not fed back: K·action_dim learned queries (`action_chunk_queries`) follow the prefix,
//! attend to it and to each other in both directions (the prefix stays causal and never
//! sees them), and the hidden state at query `j` predicts token `j` of the actions of frames
//! t … t+K−1, all in one pass (training and generation alike).
//!
//! Parameter names (HF-style, so importing pretrained weights is a name map):
//! `vision_backbone.*` (HF `ViTModel`), `camera_embeddings.weight`, `projector.fc{1,2}`,
//! `keypoint_head`, `keypoint_projector.fc{1,2}`, `film_generator`, `grounding.*`,
//! `proprio_projector.fc{1,2}`, `action_chunk_queries` (chunked models only),
//! `language_model.model.*` / `language_model.lm_head` (HF `LlamaForCausalLM`).

pub mod grounding;
pub mod layers;
pub mod llama;
pub mod lora;
pub mod projector;
pub mod vit;

use rand_chacha::ChaCha8Rng;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::action_tokenizer::{ActionTokenizer, NormStats};
use crate::checkpoint::{import_weights, ImportReport};
use crate::config::{ActionDecoding, VlaConfig};
use crate::error::{Result, VlaError};
use crate::model::grounding::Grounding;
use crate::model::layers::{normal_init, Linear, DECAY_GROUP, NO_DECAY_GROUP};
use crate::model::llama::Llama;
use crate::model::projector::MlpProjector;
use crate::model::vit::VitModel;

/// One training (or evaluation) batch; all tensors share the batch size `B`.
#[derive(Debug)]
pub struct VlaBatch {
    /// `[B, num_cameras, 3, H, W]`, u8 (0–255) or float in `[0, 1]`; camera 0 front, 1 wrist.
    pub images: Tensor,
    /// `[B, state_dim]` raw proprioception (the model normalises it); `None` without proprio.
    pub state: Option<Tensor>,
    /// `[B, L]` i64 prompt ids (BOS + prompt), **left**-padded.
    pub prompt_ids: Tensor,
    /// `[B, L]` bool/int, 1 where `prompt_ids` is a real token.
    pub prompt_mask: Tensor,
    /// `[B, action_dim]` i64 action token ids (see [`ActionTokenizer::encode`]); for a
    /// chunked model (`action.chunk_size` K > 1) `[B, K·action_dim]`, the actions of frames
    /// t, t+1, …, t+K−1 one after the other.
    pub action_tokens: Tensor,
    /// Chunked models: `[B, K]` bool, true for the slots past the episode's end (LeRobot's
    /// `action_is_pad`), whose tokens are filler and carry no loss. `None`: every slot is a
    /// real frame. The one-action head ignores it (its frame always exists).
    pub action_is_pad: Option<Tensor>,
    /// The sub-task each frame's actions follow, for a model with a plan (see
    /// [`crate::config::PlanConfig`]): `[B, S]` i64 ids, **right**-padded, without the end
    /// token, and their `[B, S]` validity.
    pub subtask: Option<(Tensor, Tensor)>,
}

impl VlaBatch {
    /// The batch on `device`; copies to a GPU do not block (see [`crate::host::upload`]).
    pub fn to_device(&self, device: Device) -> VlaBatch {
        let up = |t: &Tensor| crate::host::upload(t, device);
        VlaBatch {
            images: up(&self.images),
            state: self.state.as_ref().map(up),
            prompt_ids: up(&self.prompt_ids),
            prompt_mask: up(&self.prompt_mask),
            action_tokens: up(&self.action_tokens),
            action_is_pad: self.action_is_pad.as_ref().map(up),
            subtask: self.subtask.as_ref().map(|(ids, mask)| (up(ids), up(mask))),
        }
    }

    pub fn batch_size(&self) -> i64 {
        self.action_tokens.size().first().copied().unwrap_or(0)
    }
}

/// Vision-language examples (co-training, RT-2): images, a question as the prompt and its
/// answer as text tokens, which the model learns by the same cross-entropy over the text
/// vocabulary as a sub-task, with no action loss.
#[derive(Debug)]
pub struct TextBatch {
    /// `[B, num_cameras, 3, H, W]`, as in [`VlaBatch::images`].
    pub images: Tensor,
    /// `[B, state_dim]` raw state; `None` reads the data's mean state (a scene without a
    /// robot state, as a vision-language scene is).
    pub state: Option<Tensor>,
    /// `[B, L]` question ids (BOS + question), **left**-padded, and their validity.
    pub prompt_ids: Tensor,
    pub prompt_mask: Tensor,
    /// `[B, S]` answer ids without the end token, **right**-padded, and their validity.
    pub answer_ids: Tensor,
    pub answer_mask: Tensor,
}

impl TextBatch {
    pub fn to_device(&self, device: Device) -> TextBatch {
        TextBatch {
            images: crate::host::upload(&self.images, device),
            state: self.state.as_ref().map(|s| crate::host::upload(s, device)),
            prompt_ids: crate::host::upload(&self.prompt_ids, device),
            prompt_mask: crate::host::upload(&self.prompt_mask, device),
            answer_ids: crate::host::upload(&self.answer_ids, device),
            answer_mask: crate::host::upload(&self.answer_mask, device),
        }
    }
}

/// What [`VlaModel::forward_text`] returns.
#[derive(Debug)]
pub struct TextOutput {
    /// Mean cross-entropy over the answer tokens and their end token (differentiable).
    pub loss: Tensor,
    /// Fraction of answer tokens (end token included) and of whole answers predicted
    /// exactly, teacher-forced (scalar f32 tensors).
    pub token_accuracy: Tensor,
    pub accuracy: Tensor,
    /// The grounding heat maps the question's phrases gave (a model without a plan, with
    /// grounding heads), for a pointing question's map loss.
    pub grounding_log_maps: Option<Tensor>,
}

/// Right-pads variable-length sequences into `([B, L] ids, [B, L] bool mask)`.
pub fn right_pad(rows: &[Vec<i64>], pad_id: i64) -> (Tensor, Tensor) {
    pad(rows, pad_id, false)
}

/// Left-pads variable-length prompts into `([B, L] ids, [B, L] bool mask)`.
pub fn left_pad(prompts: &[Vec<i64>], pad_id: i64) -> (Tensor, Tensor) {
    pad(prompts, pad_id, true)
}

fn pad(rows: &[Vec<i64>], pad_id: i64, left: bool) -> (Tensor, Tensor) {
    let len = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len() * len);
    let mut mask = Vec::with_capacity(rows.len() * len);
    for r in rows {
        let pad = len - r.len();
        let (before, after) = if left { (pad, 0) } else { (0, pad) };
        ids.extend(
            std::iter::repeat_n(pad_id, before)
                .chain(r.iter().copied())
                .chain(std::iter::repeat_n(pad_id, after)),
        );
        mask.extend(
            std::iter::repeat_n(false, before)
                .chain(std::iter::repeat_n(true, r.len()))
                .chain(std::iter::repeat_n(false, after)),
        );
    }
    let shape = [rows.len() as i64, len as i64];
    (
        Tensor::from_slice(&ids).view(shape),
        Tensor::from_slice(&mask).view(shape),
    )
}

/// What a training forward pass returns.
#[derive(Debug)]
pub struct TrainOutput {
    /// Mean cross-entropy over the action tokens (scalar, differentiable); of a chunk,
    /// over the tokens of its real (unpadded) slots.
    pub loss: Tensor,
    /// `[B, action_dim, num_bins]` f32 logits over the action vocabulary (`[B,
    /// K·action_dim, num_bins]` for a chunk).
    pub action_logits: Tensor,
    /// `[B, action_dim]` (`[B, K·action_dim]`) constrained greedy predictions (token ids).
    pub predicted: Tensor,
    /// Fraction of action tokens predicted exactly (scalar f32 tensor); of a chunk, of
    /// its real slots' tokens.
    pub accuracy: Tensor,
    /// `[B*C, H, 2]` grounding readout coordinates, when the model has grounding heads.
    pub grounding: Option<Tensor>,
    /// `[B*C, H, h, w]` the grounding heat maps (log-probabilities), likewise.
    pub grounding_log_maps: Option<Tensor>,
    /// `[B, H + 1]` logits of the subgoal gate (`action.subgoal_weight > 0`; the last is
    /// "hold").
    pub subgoal_logits: Option<Tensor>,
    /// Mean cross-entropy over the sub-task tokens and their end token (unweighted; with a
    /// plan).
    pub subtask_loss: Option<Tensor>,
    /// Fraction of sub-task tokens (end token included) predicted exactly, and of sub-tasks
    /// predicted whole (scalar f32 tensors; with a plan).
    pub subtask_accuracy: Option<(Tensor, Tensor)>,
}

/// What the grounding heads computed in one forward pass.
#[derive(Debug)]
pub struct GroundingReadout {
    /// `[B*C, H, 2]` soft-argmax coordinates.
    pub coords: Tensor,
    /// `[B*C, H, h, w]` heat maps (log-probabilities).
    pub log_maps: Tensor,
    /// `[B, H + 1]` subgoal gate logits (the last is "hold"), when the model has the gate.
    pub subgoal_logits: Option<Tensor>,
}

/// The LM input in front of the actions.
struct Prefix {
    /// Embeddings `[B, P, D]` and their validity `[B, P]`.
    embeds: Tensor,
    mask: Tensor,
    /// The grounding readout, when the model has grounding heads.
    grounding: Option<GroundingReadout>,
    /// Position of the first prompt token (left padding included) in `embeds`.
    text_start: i64,
}

/// What the vision side made of a batch's images and state.
struct Observed {
    /// The vision tokens: projected patches `[B, C*N, D]`, then the keypoint token.
    tokens: Vec<Tensor>,
    /// The conv stem's feature maps, finest first (`[B*C, Cs, h, w]` each).
    stem_levels: Vec<Tensor>,
    /// The normalised state `[B, state_dim]` and the proprioception token's share of it.
    normalised_state: Option<Tensor>,
    proprio: Option<Tensor>,
}

/// How the sub-task segment of a model with a plan is produced at inference.
#[derive(Debug)]
pub enum SubtaskInput<'a> {
    /// Decoded greedily by the model itself.
    Decode,
    /// Given: `[B, S]` ids right-padded without the end token, and their validity (what a
    /// test or an operator imposes; see [`VlaBatch::subtask`]).
    Forced(&'a Tensor, &'a Tensor),
}

/// What one batched generation produced.
#[derive(Debug)]
pub struct Generated {
    /// `[B, action_dim]` action token ids (`[B, K·action_dim]`, K actions, for a chunk).
    pub actions: Tensor,
    /// Each row's sub-task ids, end token excluded (empty without a plan).
    pub subtasks: Vec<Vec<i64>>,
    /// What the grounding heads computed (`None` without heads).
    pub grounding: Option<GroundingReadout>,
}

/// The vision-language-action model.
#[derive(Debug)]
pub struct VlaModel {
    config: VlaConfig,
    vs: VarStore,
    vision: VitModel,
    /// `camera_embeddings.weight` `[num_cameras, vision_width]`: tells the LM which camera a
    /// patch came from (both share the ViT and its position embeddings).
    camera_embeddings: Tensor,
    projector: MlpProjector,
    /// `keypoint_head` (stem or ViT width → K logits per location) and `keypoint_projector`
    /// (2·K·cameras coordinates → LM width), when `vision.num_keypoints > 0`.
    keypoints: Option<(Linear, MlpProjector)>,
    /// `film_generator`: pooled prompt embedding → per-channel (scale, shift) of the stem
    /// features, when `vision.film`. Zero-initialised, so training starts unconditioned.
    film: Option<Linear>,
    /// `grounding.*`: instruction-conditioned heat maps over the stem (`vision.grounding_heads`).
    grounding: Option<Grounding>,
    proprio_projector: Option<MlpProjector>,
    /// `action.proprio_indices` as an index tensor on the model's device (`None` = all).
    proprio_index: Option<Tensor>,
    lm: Llama,
    /// `action_chunk_queries.weight` `[K·action_dim, D]`: the inputs of the action slots of a
    /// chunked model (`action.chunk_size` K > 1; `None` for the one-action head, which feeds
    /// back its own tokens instead).
    action_queries: Option<Tensor>,
    action_tokenizer: ActionTokenizer,
    norm_stats: NormStats,
    state_mean: Tensor,
    state_std: Tensor,
    image_mean: Tensor,
    image_std: Tensor,
    /// `[action_dim, num_bins]` f32: 0 for bins generation may emit at each step, -inf else.
    allowed_bias: Tensor,
    compute_kind: Kind,
    base_lm: Option<crate::hf::BaseLm>,
}

/// Expected patch-grid coordinates under a softmax over patches: `logits [N, gh*gw, K]` →
/// `[N, K, 2]` (x, y) in `[-1, 1]`, computed in f32.
pub(crate) fn spatial_soft_argmax(logits: &Tensor, gh: i64, gw: i64) -> Tensor {
    let device = logits.device();
    let opts = (Kind::Float, device);
    let attn = logits.to_kind(Kind::Float).softmax(1, Kind::Float); // [N, P, K]
    let xs = Tensor::linspace(-1.0, 1.0, gw, opts)
        .unsqueeze(0)
        .expand([gh, gw], false)
        .reshape([1, gh * gw, 1]);
    let ys = Tensor::linspace(-1.0, 1.0, gh, opts)
        .unsqueeze(1)
        .expand([gh, gw], false)
        .reshape([1, gh * gw, 1]);
    let x = (&attn * xs).sum_dim_intlist(1i64, false, Kind::Float);
    let y = (&attn * ys).sum_dim_intlist(1i64, false, Kind::Float);
    Tensor::stack(&[x, y], 2)
}

/// Each row's valid ids of right-padded `ids [B, S]` / `valid [B, S]`.
fn valid_rows(ids: &Tensor, valid: &Tensor) -> Result<Vec<Vec<i64>>> {
    let rows: Vec<i64> = Vec::try_from(ids.to_device(Device::Cpu).flatten(0, -1))?;
    let keep: Vec<bool> = Vec::try_from(valid.to_device(Device::Cpu).flatten(0, -1))?;
    let b = ids.size().first().copied().unwrap_or(0).max(0) as usize;
    let s = ids.size().get(1).copied().unwrap_or(0).max(0) as usize;
    if s == 0 {
        return Ok(vec![Vec::new(); b]);
    }
    Ok(rows
        .chunks(s)
        .zip(keep.chunks(s))
        .map(|(r, k)| {
            r.iter()
                .zip(k)
                .filter(|(_, k)| **k)
                .map(|(t, _)| *t)
                .collect()
        })
        .collect())
}

fn check_device(device: Device) -> Result<()> {
    if let Device::Cuda(i) = device {
        if !tch::Cuda::is_available() {
            return Err(VlaError::Device(format!(
                "CUDA device {i} requested but CUDA is not available (no GPU, or libtorch without torch_cuda linked)"
            )));
        }
        let n = tch::Cuda::device_count();
        if i as i64 >= n {
            return Err(VlaError::Device(format!(
                "CUDA device {i} requested, {n} present"
            )));
        }
    }
    Ok(())
}

/// Serialises seeded initialisation (see [`VlaModel::new`]).
static INIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `draw` while no model is being initialised: tests that draw random inputs from
/// libtorch's global generator use it, so seeded initialisations in other tests running at
/// the same time stay reproducible.
#[cfg(test)]
pub(crate) fn rng_locked<T>(draw: impl FnOnce() -> T) -> T {
    let _guard = INIT_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    draw()
}

impl VlaModel {
    /// Builds a freshly initialised model. Initialisation happens on the CPU after
    /// `tch::manual_seed(seed)`, then moves to `device`, so a seed gives the same weights on
    /// every device.
    pub fn new(
        config: VlaConfig,
        norm_stats: NormStats,
        device: Device,
        seed: i64,
    ) -> Result<Self> {
        config.validate()?;
        norm_stats.validate(&config)?;
        check_device(device)?;
        // libtorch's generator is process-global: hold a lock from seeding until every weight
        // is drawn, so models built concurrently (threads, parallel tests) stay reproducible.
        let _init_guard = INIT_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tch::manual_seed(seed);
        let mut vs = VarStore::new(Device::Cpu);
        let root = vs.root();
        let v = &config.vision;
        let t = &config.text;
        let vision = VitModel::new(&root.sub("vision_backbone"), v);
        let camera_embeddings = root.sub("camera_embeddings").set_group(NO_DECAY_GROUP).var(
            "weight",
            &[v.num_cameras as i64, v.hidden_size as i64],
            normal_init(),
        );
        let projector = MlpProjector::new(
            &root.sub("projector"),
            v.hidden_size,
            config.projector.hidden_size,
            t.hidden_size,
        );
        let keypoints = (v.num_keypoints > 0).then(|| {
            let coords = 2 * v.num_keypoints * v.num_cameras;
            (
                Linear::new(
                    &root.sub("keypoint_head"),
                    // Read from the conv stem's finer map when there is one.
                    v.stem_channels.last().copied().unwrap_or(v.hidden_size),
                    v.num_keypoints,
                    true,
                ),
                MlpProjector::new(
                    &root.sub("keypoint_projector"),
                    coords,
                    t.hidden_size,
                    t.hidden_size,
                ),
            )
        });
        let film = v.film.then(|| {
            let channels = v.stem_channels.last().copied().unwrap_or(0) as i64;
            let p = root.sub("film_generator");
            Linear {
                weight: p
                    .set_group(DECAY_GROUP)
                    .zeros("weight", &[2 * channels, t.hidden_size as i64]),
                bias: Some(p.set_group(NO_DECAY_GROUP).zeros("bias", &[2 * channels])),
                lora: None,
            }
        });
        let grounding = Grounding::new(&root.sub("grounding"), &config);
        let proprio_projector = config.action.use_proprio.then(|| {
            MlpProjector::new(
                &root.sub("proprio_projector"),
                config.action.proprio_width(),
                t.hidden_size,
                t.hidden_size,
            )
        });
        let lm = Llama::new(
            &root.sub("language_model"),
            t,
            config.lm_vocab_size(),
            device,
        );
        // Drawn last, so every other weight is what the one-action model of the same seed
        // gets; outside `language_model`, so LoRA never freezes it.
        let chunk = config.action.chunk_tokens() as i64;
        let action_queries = (config.action.chunk_size > 1).then(|| {
            root.sub("action_chunk_queries")
                .set_group(NO_DECAY_GROUP)
                .var("weight", &[chunk, t.hidden_size as i64], normal_init())
        });
        vs.set_device(device);

        let action_tokenizer = ActionTokenizer::new(&config, norm_stats.action.clone())?;
        let f32s = |v: &[f32]| Tensor::from_slice(v).to_device(device);
        let allowed: Vec<f32> = (0..config.action.action_dim)
            .flat_map(|d| {
                let ok = action_tokenizer.allowed_bins(d);
                (0..config.action.num_bins).map(move |b| {
                    if ok.contains(&b) {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
            })
            .collect();
        let allowed_bias = Tensor::from_slice(&allowed)
            .view([
                config.action.action_dim as i64,
                config.action.num_bins as i64,
            ])
            .to_device(device);
        let keep = &config.action.proprio_indices;
        let proprio_index = (!keep.is_empty()).then(|| {
            let idx: Vec<i64> = keep.iter().map(|&i| i as i64).collect();
            Tensor::from_slice(&idx).to_device(device)
        });
        let model = VlaModel {
            proprio_index,
            state_mean: f32s(&norm_stats.state.mean),
            state_std: f32s(&norm_stats.state.std),
            image_mean: f32s(&v.image_mean).view([1, 3, 1, 1]),
            image_std: f32s(&v.image_std).view([1, 3, 1, 1]),
            allowed_bias,
            config,
            vs,
            vision,
            camera_embeddings,
            projector,
            keypoints,
            film,
            grounding,
            proprio_projector,
            lm,
            action_queries,
            action_tokenizer,
            norm_stats,
            compute_kind: Kind::Float,
            base_lm: None,
        };
        tracing::debug!(
            parameters = model.num_parameters(),
            ?device,
            "initialised VLA model"
        );
        Ok(model)
    }

    pub fn config(&self) -> &VlaConfig {
        &self.config
    }

    pub fn norm_stats(&self) -> &NormStats {
        &self.norm_stats
    }

    pub fn action_tokenizer(&self) -> &ActionTokenizer {
        &self.action_tokenizer
    }

    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    pub fn var_store_mut(&mut self) -> &mut VarStore {
        &mut self.vs
    }

    /// Loads a pretrained `LlamaForCausalLM` directory into `language_model.*` (see
    /// [`crate::hf`]); the embeddings (and an untied head) grow by the action ids, started
    /// at the mean of the pretrained rows. Every LM parameter must come from the file; the
    /// rest of the VLA keeps its initialisation.
    pub fn import_language_model(&mut self, dir: &std::path::Path) -> Result<ImportReport> {
        self.import_base(crate::hf::BaseLm::of(dir)?)
    }

    /// [`Self::import_language_model`] of a base whose hash is already known.
    pub(crate) fn import_base(&mut self, base: crate::hf::BaseLm) -> Result<ImportReport> {
        let weights = base.dir.join(crate::checkpoint::WEIGHTS_FILE);
        let grow = [
            "language_model.model.embed_tokens.weight",
            "language_model.lm_head.weight",
        ];
        let report = import_weights(
            &weights,
            &self.vs,
            |n| Some(format!("language_model.{n}")),
            &grow,
        )?;
        let missing: Vec<&String> = report
            .missing
            .iter()
            .filter(|n| n.starts_with("language_model."))
            // What LoRA adds is ours to train, not the base's to hold.
            .filter(|n| !(n.contains(".lora_") || n.ends_with(".trainable_tokens_delta")))
            .collect();
        if !missing.is_empty() {
            return Err(VlaError::checkpoint(
                &weights,
                format!(
                    "{} language-model parameters are not in the file (another architecture?), e.g. {:?}",
                    missing.len(),
                    &missing[..missing.len().min(5)]
                ),
            ));
        }
        if !report.unused.is_empty() {
            tracing::info!(file = %weights.display(), tensors = ?report.unused, "tensors not used");
        }
        self.lm.init_trainable_rows()?;
        self.base_lm = Some(base);
        Ok(report)
    }

    /// The same network without LoRA: adapters folded into their weights and the trained
    /// rows of the added ids into the embeddings (and head), as `vla lora merge` writes it.
    /// A model without adapters comes back as a copy.
    pub fn merged(&self) -> Result<VlaModel> {
        let mut config = self.config.clone();
        let scale = config.text.lora.take().map_or(0.0, |l| l.scale());
        let merged = VlaModel::new(config, self.norm_stats.clone(), self.device(), 0)?;
        let report = lora::merge_into(
            &self.vs,
            &merged.vs,
            scale,
            self.config.text.vocab_size as i64,
        )?;
        tracing::info!(?report, "merged LoRA adapters");
        Ok(merged)
    }

    /// The pretrained LM this model was started from (see [`Self::import_language_model`]).
    pub fn base_lm(&self) -> Option<&crate::hf::BaseLm> {
        self.base_lm.as_ref()
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    pub fn num_parameters(&self) -> i64 {
        self.vs
            .trainable_variables()
            .iter()
            .map(Tensor::numel)
            .sum::<usize>() as i64
    }

    /// Activations dtype. `Kind::BFloat16` gives mixed precision: weights stay f32 (the
    /// optimizer's master copy) and are cast on use; norms, softmax statistics and the loss
    /// stay f32. Intended for CUDA.
    pub fn set_compute_kind(&mut self, kind: Kind) -> Result<()> {
        match kind {
            Kind::Float | Kind::BFloat16 | Kind::Half => {
                self.compute_kind = kind;
                Ok(())
            }
            other => Err(VlaError::Input(format!(
                "unsupported compute kind {other:?}"
            ))),
        }
    }

    pub fn compute_kind(&self) -> Kind {
        self.compute_kind
    }

    /// Encodes continuous actions `[B][action_dim]` into a `[B, action_dim]` token tensor.
    pub fn encode_actions<A: AsRef<[f32]>>(&self, actions: &[A]) -> Result<Tensor> {
        let mut ids = Vec::with_capacity(actions.len() * self.config.action.action_dim);
        for a in actions {
            ids.extend(self.action_tokenizer.encode(a.as_ref())?);
        }
        Ok(Tensor::from_slice(&ids)
            .view([actions.len() as i64, self.config.action.action_dim as i64])
            .to_device(self.device()))
    }

    /// `[B, C, 3, H, W]` u8/float images → normalised `[B*C, 3, H, W]` in compute kind.
    fn preprocess_images(&self, images: &Tensor) -> Result<Tensor> {
        let size = images.size();
        let c = self.config.vision.num_cameras as i64;
        let ps = self.config.vision.patch_size as i64;
        if size.len() != 5 || size[1] != c || size[2] != 3 {
            return Err(VlaError::Input(format!(
                "images have shape {size:?}, expected [B, {c}, 3, H, W]"
            )));
        }
        if size[3] % ps != 0 || size[4] % ps != 0 {
            return Err(VlaError::Input(format!(
                "image size {}x{} is not a multiple of the patch size {ps}",
                size[3], size[4]
            )));
        }
        let x = images.to_device(self.device());
        let x = match x.kind() {
            Kind::Uint8 => x.to_kind(Kind::Float) / 255.0,
            Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16 => x.to_kind(Kind::Float),
            other => return Err(VlaError::Input(format!("images of kind {other:?}"))),
        };
        let x = x.view([size[0] * c, 3, size[3], size[4]]);
        Ok(((x - &self.image_mean) / &self.image_std).to_kind(self.compute_kind))
    }

    /// Checked text ids `[B, T]` → their embeddings `[B, T, D]` and validity `[B, T]`.
    fn embed_text(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        b: i64,
        what: &str,
    ) -> Result<(Tensor, Tensor)> {
        let device = self.device();
        let size = ids.size();
        if size.len() != 2 || size[0] != b || mask.size() != size {
            return Err(VlaError::Input(format!(
                "{what} ids {:?} / mask {:?} do not match batch size {b}",
                size,
                mask.size()
            )));
        }
        // Checked where they are on the host (free there); ids already on a GPU were checked
        // before they went (see `check_token_ranges`), since reading them back would stall it.
        if ids.device() == Device::Cpu {
            self.check_text_ids(ids, what)?;
        }
        let ids = ids.to_device(device).to_kind(Kind::Int64);
        Ok((
            self.lm.embed(&ids, self.compute_kind),
            mask.to_device(device).to_kind(Kind::Bool),
        ))
    }

    /// Masked mean of text embeddings `[B, T, D]`, standardised: what FiLM and the grounding
    /// queries read. Embeddings start at N(0, 0.02); unnormalised, the mean is ~0.01 per
    /// element and the layers reading it learn ~100x slower than everything else.
    fn pool_text(&self, text: &Tensor, valid: &Tensor) -> Tensor {
        let w = valid.to_kind(Kind::Float).unsqueeze(-1);
        let sum = (text.to_kind(Kind::Float) * &w).sum_dim_intlist(1i64, false, Kind::Float);
        let mean = sum / w.sum_dim_intlist(1i64, false, Kind::Float).clamp_min(1.0);
        let d = mean.size().last().copied().unwrap_or(1);
        mean.layer_norm([d], None::<Tensor>, None::<Tensor>, 1e-5, false)
            .to_kind(self.compute_kind)
    }

    /// The vision side: patch and keypoint tokens, the stem's maps and the normalised state;
    /// `film` is the pooled text that modulates the stem (with `vision.film`).
    fn observe(
        &self,
        images: &Tensor,
        state: Option<&Tensor>,
        film: Option<&Tensor>,
    ) -> Result<Observed> {
        let b = images.size().first().copied().unwrap_or(0);
        if b == 0 {
            return Err(VlaError::Input("empty batch".into()));
        }
        let device = self.device();
        let pixels = self.preprocess_images(images)?;
        let c = self.config.vision.num_cameras as i64;
        let film = self.film.as_ref().zip(film).map(|(generator, pooled)| {
            // (scale, shift) per stem channel, the same for every camera of a sample.
            let gb = generator.forward(pooled); // [B, 2C']
            let ch = gb.size()[1] / 2;
            let per_image = |t: Tensor| {
                t.unsqueeze(1)
                    .expand([b, c, ch], false)
                    .reshape([b * c, ch, 1, 1])
            };
            (
                per_image(gb.narrow(1, 0, ch)),
                per_image(gb.narrow(1, ch, ch)),
            )
        });
        let (patches, stem_levels) = self.vision.forward_modulated(&pixels, |f| match &film {
            Some((scale, shift)) => f * (scale + 1.0) + shift,
            None => f,
        }); // [B*C, N, Dv]
        let (_, n, dv) = patches.size3()?;
        let cams = self
            .camera_embeddings
            .to_kind(self.compute_kind)
            .view([1, c, 1, dv]);
        let vision = (patches.view([b, c, n, dv]) + cams).view([b, c * n, dv]);
        let mut tokens = vec![self.projector.forward(&vision)];
        if let Some((head, proj)) = &self.keypoints {
            let coords = match stem_levels.last() {
                Some(f) => {
                    let (n, ch, fh, fw) = f.size4()?;
                    let per_pixel = f.view([n, ch, fh * fw]).transpose(1, 2);
                    spatial_soft_argmax(&head.forward(&per_pixel), fh, fw)
                }
                None => {
                    let (gh, gw) = (
                        images.size()[3] / self.config.vision.patch_size as i64,
                        images.size()[4] / self.config.vision.patch_size as i64,
                    );
                    spatial_soft_argmax(&head.forward(&patches), gh, gw)
                }
            }; // [B*C, K, 2]
            let flat = coords.reshape([b, -1]).to_kind(self.compute_kind);
            tokens.push(proj.forward(&flat).unsqueeze(1));
        }
        // The normalised state: the proprioception token's input and the end effector's
        // (x, y) that relative grounding targets are measured from.
        let normalised_state = match &self.proprio_projector {
            Some(_) => {
                let sd = self.config.action.state_dim as i64;
                let state = state.ok_or_else(|| {
                    VlaError::Input("this model uses proprioception but no state was given".into())
                })?;
                if state.size() != [b, sd] {
                    return Err(VlaError::Input(format!(
                        "state has shape {:?}, expected [{b}, {sd}]",
                        state.size()
                    )));
                }
                Some(
                    (state.to_device(device).to_kind(Kind::Float) - &self.state_mean)
                        / &self.state_std,
                )
            }
            None => None,
        };
        let proprio = normalised_state
            .as_ref()
            .map(|s| match &self.proprio_index {
                Some(idx) => s.index_select(1, idx),
                None => s.shallow_clone(),
            });
        Ok(Observed {
            tokens,
            stem_levels,
            normalised_state,
            proprio,
        })
    }

    /// The proprioception token `[B, 1, D]` (`None` without proprioception).
    fn proprio_token(&self, obs: &Observed) -> Option<Tensor> {
        let (proj, s) = self.proprio_projector.as_ref().zip(obs.proprio.as_ref())?;
        Some(proj.forward(&s.to_kind(self.compute_kind)).unsqueeze(1))
    }

    /// The grounding token `[B, 1, D]` and readout for the text the heads read (`text
    /// [B, T, D]`, `valid [B, T]`); `None` without grounding heads.
    fn ground(
        &self,
        obs: &Observed,
        text: &Tensor,
        valid: &Tensor,
    ) -> Option<(Tensor, GroundingReadout)> {
        let g = self.grounding.as_ref()?;
        let last = obs.stem_levels.last()?;
        let pooled = self.pool_text(text, valid);
        let queries = g.queries(&pooled, text, valid);
        let (coords, log_maps) = match obs.stem_levels.first() {
            Some(fine) if self.config.vision.grounding_fine => g.locate(&queries, fine, &[last]),
            _ => g.locate(&queries, last, &[]),
        };
        // Only relative targets read it, and only they require a state that has it.
        let ee_xy = obs
            .normalised_state
            .as_ref()
            .filter(|_| self.config.action.relative_targets)
            .map(|s| s.narrow(1, vla_core::StateLayout::EE_POSITION.start as i64, 2));
        let subgoal_logits = obs
            .proprio
            .as_ref()
            .and_then(|p| g.subgoal_logits(&pooled, p));
        let token = g.token(
            &coords,
            ee_xy.as_ref(),
            subgoal_logits.as_ref(),
            self.compute_kind,
        );
        Some((
            token,
            GroundingReadout {
                coords,
                log_maps,
                subgoal_logits,
            },
        ))
    }

    /// The LM input in front of the actions (see the module docs for the order): without a
    /// plan the grounding heads read the prompt and their token precedes it; with a plan
    /// they read the given sub-task, whose tokens and end token follow the prompt, and their
    /// token follows the sub-task.
    fn embed_prefix(
        &self,
        images: &Tensor,
        state: Option<&Tensor>,
        prompt_ids: &Tensor,
        prompt_mask: &Tensor,
        subtask: Option<(&Tensor, &Tensor)>,
    ) -> Result<Prefix> {
        let b = images.size().first().copied().unwrap_or(0);
        if b == 0 {
            return Err(VlaError::Input("empty batch".into()));
        }
        let device = self.device();
        let (text, prompt_valid) = self.embed_text(prompt_ids, prompt_mask, b, "prompt")?;
        let film = self
            .film
            .is_some()
            .then(|| self.pool_text(&text, &prompt_valid));
        let obs = self.observe(images, state, film.as_ref())?;
        let proprio = self.proprio_token(&obs);
        let mut parts: Vec<Tensor> = obs.tokens.iter().map(Tensor::shallow_clone).collect();
        let mut tail_mask = Vec::new();
        let grounding = if self.config.plan.enabled() {
            let (ids, mask) = subtask.ok_or_else(|| {
                VlaError::Input(
                    "this model decodes a sub-task before its actions: the batch needs the sub-task tokens"
                        .into(),
                )
            })?;
            let (sub, sub_valid) = self.embed_text(ids, mask, b, "sub-task")?;
            let grounded = self.ground(&obs, &sub, &sub_valid);
            parts.extend(proprio);
            let text_start = parts.iter().map(|t| t.size()[1]).sum::<i64>();
            parts.push(text);
            parts.push(sub);
            parts.push(self.eos_embedding(b)?);
            tail_mask.push(sub_valid);
            tail_mask.push(Tensor::ones([b, 1], (Kind::Bool, device)));
            if let Some((token, _)) = &grounded {
                parts.push(token.shallow_clone());
                tail_mask.push(Tensor::ones([b, 1], (Kind::Bool, device)));
            }
            (grounded.map(|(_, r)| r), text_start)
        } else {
            let grounded = self.ground(&obs, &text, &prompt_valid);
            if let Some((token, _)) = &grounded {
                parts.push(token.shallow_clone());
            }
            parts.extend(proprio);
            let text_start = parts.iter().map(|t| t.size()[1]).sum::<i64>();
            parts.push(text);
            (grounded.map(|(_, r)| r), text_start)
        };
        let (grounding, text_start) = grounding;
        let embeds = Tensor::cat(&parts, 1);
        let mut masks = vec![
            Tensor::ones([b, text_start], (Kind::Bool, device)),
            prompt_valid,
        ];
        masks.extend(tail_mask);
        Ok(Prefix {
            embeds,
            mask: Tensor::cat(&masks, 1),
            grounding,
            text_start,
        })
    }

    /// The id that ends a sub-task (`text.eos_token_id`), which a plan needs.
    fn eos_id(&self) -> Result<i64> {
        self.config
            .text
            .eos_token_id
            .map(|id| id as i64)
            .ok_or_else(|| {
                VlaError::invalid(
                    "text.eos_token_id",
                    "a model that says text (a sub-task, an answer) needs the id that ends it",
                )
            })
    }

    /// The end token's embedding for every row, `[B, 1, D]`.
    fn eos_embedding(&self, b: i64) -> Result<Tensor> {
        let eos = self.eos_id()?;
        let ids = Tensor::full([b, 1], eos, (Kind::Int64, self.device()));
        Ok(self.lm.embed(&ids, self.compute_kind))
    }

    fn check_action_tokens(&self, tokens: &Tensor, b: i64) -> Result<Tensor> {
        let a = self.config.action.chunk_tokens() as i64;
        if tokens.size() != [b, a] {
            return Err(VlaError::Input(format!(
                "action tokens have shape {:?}, expected [{b}, {a}]",
                tokens.size()
            )));
        }
        if b == 0 {
            return Err(VlaError::Input("empty batch".into()));
        }
        // As for text ids: checked on the host, never read back from a GPU.
        if tokens.device() == Device::Cpu {
            self.check_action_range(tokens)?;
        }
        Ok(tokens.to_device(self.device()).to_kind(Kind::Int64))
    }

    /// Checks, on the host, that a batch's token ids are in range: every id in the text
    /// vocabulary, every action token an action bin. The forward passes check CPU inputs
    /// themselves; a caller that moves batches to a GPU first (the training loop) calls this
    /// on the host copy, so that the GPU never has to report back.
    pub fn check_token_ranges(&self, batch: &VlaBatch) -> Result<()> {
        self.check_text_ids(&batch.prompt_ids, "prompt")?;
        if let Some((ids, _)) = &batch.subtask {
            self.check_text_ids(ids, "sub-task")?;
        }
        self.check_action_range(&batch.action_tokens)
    }

    fn check_text_ids(&self, ids: &Tensor, what: &str) -> Result<()> {
        if ids.numel() == 0 {
            return Ok(());
        }
        let (lo, hi) = (ids.min().int64_value(&[]), ids.max().int64_value(&[]));
        let v = self.config.text.vocab_size as i64;
        if lo < 0 || hi >= v {
            return Err(VlaError::Input(format!(
                "{what} ids span {lo}..={hi}, outside the text vocabulary 0..{v}"
            )));
        }
        Ok(())
    }

    fn check_action_range(&self, tokens: &Tensor) -> Result<()> {
        if tokens.numel() == 0 {
            return Ok(());
        }
        let off = self.action_tokenizer.token_offset();
        let end = off + self.config.action.num_bins as i64;
        let (lo, hi) = (tokens.min().int64_value(&[]), tokens.max().int64_value(&[]));
        if lo < off || hi >= end {
            return Err(VlaError::Input(format!(
                "action tokens span {lo}..={hi}, outside the action range {off}..{end}"
            )));
        }
        Ok(())
    }

    /// The auxiliary target loss (weighted, see `ActionConfig::target_aux_weight`): squared
    /// error of every grounding head's predicted table (x, y), normalised like the
    /// end-effector state, against `targets [B, H, 2]` (raw metres) where `mask [B, H]` is
    /// set. `None` when the model has no grounding heads or the weight is 0.
    pub fn target_loss(
        &self,
        out: &TrainOutput,
        targets: &Tensor,
        mask: &Tensor,
    ) -> Option<Tensor> {
        let weight = self.config.action.target_aux_weight;
        let (grounding, coords) = self.grounding.as_ref().zip(out.grounding.as_ref())?;
        if weight <= 0.0 {
            return None;
        }
        let device = self.device();
        let (mean, std) = self.ee_xy_statistics();
        let target = (targets.to_device(device).to_kind(Kind::Float) - mean) / std;
        let predicted = grounding.predict_targets(coords);
        let m = mask.to_device(device).to_kind(Kind::Float);
        let per_head = (predicted - target)
            .square()
            .sum_dim_intlist(-1, false, Kind::Float);
        let loss = (per_head * &m).sum(Kind::Float) / m.sum(Kind::Float).clamp_min(1.0);
        Some(loss * weight)
    }

    /// The subgoal gate's cross-entropy (weighted, see `ActionConfig::subgoal_weight`)
    /// against `labels [B]`: each frame's class (a head, or `H` for "hold", as
    /// [`crate::train::data::Subgoal::class`] gives them); frames with any other label (-1: none
    /// known) do not count. `None` without a gate.
    pub fn subgoal_loss(&self, out: &TrainOutput, labels: &Tensor) -> Option<Tensor> {
        let logits = out.subgoal_logits.as_ref()?;
        let weight = self.config.action.subgoal_weight;
        let classes = logits.size().last().copied().unwrap_or(1);
        let labels = labels.to_device(self.device()).to_kind(Kind::Int64);
        let known = labels
            .ge(0)
            .logical_and(&labels.lt(classes))
            .to_kind(Kind::Float);
        let nll = -logits
            .log_softmax(-1, Kind::Float)
            .gather(1, &labels.clamp(0, classes - 1).unsqueeze(1), false)
            .squeeze_dim(1);
        let loss = (nll * &known).sum(Kind::Float) / known.sum(Kind::Float).clamp_min(1.0);
        Some(loss * weight)
    }

    /// Every grounding head's predicted table (x, y) in metres `[B, H, 2]` (the target head's
    /// reading of the front camera, un-normalised): what the auxiliary loss trains, for
    /// reporting how far it lands from the grasp and release points. `None` without heads.
    pub fn table_targets(&self, out: &TrainOutput) -> Option<Tensor> {
        self.table_targets_from(out.grounding.as_ref()?)
    }

    /// [`Self::table_targets`] from the grounding heads' coordinates `[B*C, H, 2]` (as
    /// [`Self::sample_action_tokens_with_grounding`] returns them).
    pub fn table_targets_from(&self, coords: &Tensor) -> Option<Tensor> {
        let grounding = self.grounding.as_ref()?;
        // Table positions exist where the heads were taught them, in the end effector's units.
        if self.config.action.target_aux_weight <= 0.0
            || self.config.action.state_dim < vla_core::StateLayout::EE_POSITION.end
        {
            return None;
        }
        let (mean, std) = self.ee_xy_statistics();
        Some(grounding.predict_targets(coords) * std + mean)
    }

    /// Mean and standard deviation `[2]` of the end effector's (x, y) in the state: the
    /// units the grounding heads' table positions are predicted in.
    fn ee_xy_statistics(&self) -> (Tensor, Tensor) {
        let xy = vla_core::StateLayout::EE_POSITION.start as i64;
        (
            self.state_mean.narrow(0, xy, 2),
            self.state_std.narrow(0, xy, 2),
        )
    }

    /// The heat-map loss of the grounding heads in one camera (0 front, 1 wrist; see
    /// [`Grounding::map_loss`]), times `weight`; `None` without grounding heads or with a
    /// zero weight.
    pub fn target_map_loss(
        &self,
        log_maps: Option<&Tensor>,
        (pixels, mask): (&Tensor, &Tensor),
        camera: usize,
        weight: f64,
    ) -> Option<Tensor> {
        let (grounding, maps) = self.grounding.as_ref().zip(log_maps)?;
        (weight > 0.0).then(|| grounding.map_loss(maps, pixels, mask, camera) * weight)
    }

    /// Action-vocabulary logits for hidden states `[B, T, D]` → `[B, T, num_bins]`.
    fn action_logits(&self, hidden: &Tensor) -> Tensor {
        self.lm.logits_range(
            hidden,
            self.action_tokenizer.token_offset(),
            self.config.action.num_bins as i64,
        )
    }

    /// Masks (to -inf) the bins not allowed at action steps `first_step..` of
    /// `logits [B, S, bins]` (step `i` is dimension `i mod action_dim`: a chunk's steps run
    /// over several actions).
    fn constrain(&self, logits: &Tensor, first_step: i64) -> Tensor {
        let s = logits.size()[1];
        let a = self.config.action.action_dim as i64;
        let bias = if first_step + s <= a {
            self.allowed_bias.narrow(0, first_step, s)
        } else {
            let dims =
                Tensor::arange_start(first_step, first_step + s, (Kind::Int64, self.device()))
                    .remainder(a);
            self.allowed_bias.index_select(0, &dims)
        };
        logits + bias.unsqueeze(0)
    }

    /// The bins `[B, S]` that greedy decoding reads off action logits `[B, S, bins]` whose
    /// first position is action dimension `first_step` (see [`ActionDecoding`]).
    fn decode_bins(&self, logits: &Tensor, first_step: i64) -> Tensor {
        let constrained = self.constrain(logits, first_step);
        let greedy = constrained.argmax(-1, false);
        if self.config.action.decoding == ActionDecoding::Argmax {
            return greedy;
        }
        let (s, bins) = (logits.size()[1], self.config.action.num_bins as i64);
        let device = logits.device();
        let p = constrained.to_kind(Kind::Float).softmax(-1, Kind::Float);
        let mean = (p * Tensor::arange(bins, (Kind::Float, device)))
            .sum_dim_intlist(-1, false, Kind::Float)
            .round()
            .to_kind(Kind::Int64)
            .clamp(0, bins - 1);
        let a = self.config.action.action_dim;
        let gripper: Vec<bool> = (first_step..first_step + s)
            .map(|d| self.config.action.gripper_dim == Some(d as usize % a))
            .collect();
        let is_gripper = Tensor::from_slice(&gripper).to_device(device).unsqueeze(0);
        greedy.where_self(&is_gripper, &mean)
    }

    /// Teacher-forced forward pass: loss and accuracy on the action tokens, and with a plan
    /// on the sub-task tokens.
    ///
    /// The action loss is the cross-entropy over the action vocabulary (text-token logits are
    /// masked, as in constrained decoding); the sub-task loss is over the text vocabulary.
    pub fn forward_train(&self, batch: &VlaBatch) -> Result<TrainOutput> {
        let b = batch.images.size().first().copied().unwrap_or(0);
        let targets = self.check_action_tokens(&batch.action_tokens, b)?;
        let weights = self.action_token_weights(batch.action_is_pad.as_ref(), b)?;
        let subtask = batch.subtask.as_ref().map(|(ids, mask)| (ids, mask));
        let prefix = self.embed_prefix(
            &batch.images,
            batch.state.as_ref(),
            &batch.prompt_ids,
            &batch.prompt_mask,
            subtask,
        )?;
        let a = self.config.action.action_dim as i64;
        let p = prefix.embeds.size()[1];
        let mut cache = self.lm.new_cache();
        let (hidden, logits) = match &self.action_queries {
            None => {
                let inputs = self
                    .lm
                    .embed(&targets.narrow(1, 0, a - 1), self.compute_kind);
                let x = Tensor::cat(&[&prefix.embeds, &inputs], 1);
                let mask = Tensor::cat(
                    &[
                        &prefix.mask,
                        &Tensor::ones([b, a - 1], (Kind::Bool, self.device())),
                    ],
                    1,
                );
                let hidden = self.lm.forward(&x, &mask, &mut cache)?;
                let logits = self.action_logits(&hidden.narrow(1, p - 1, a)); // [B, A, bins]
                (hidden, logits)
            }
            Some(queries) => {
                let (x, mask, n) = self.append_queries(queries, &prefix.embeds, &prefix.mask);
                let hidden = self.lm.forward_with_tail(&x, &mask, &mut cache, n)?;
                let logits = self.action_logits(&hidden.narrow(1, p, n)); // [B, K·A, bins]
                (hidden, logits)
            }
        };
        let bins = self.config.action.num_bins as i64;
        let target_bins = &targets - self.action_tokenizer.token_offset();
        let predicted_bins = self.decode_bins(&logits.detach(), 0);
        let hits = predicted_bins.eq_tensor(&target_bins).to_kind(Kind::Float);
        let (loss, accuracy) = match &weights {
            None => (
                logits
                    .view([-1, bins])
                    .cross_entropy_for_logits(&target_bins.view([-1])),
                hits.mean(Kind::Float),
            ),
            Some(w) => {
                let nll = -logits
                    .log_softmax(-1, Kind::Float)
                    .gather(2, &target_bins.unsqueeze(-1), false)
                    .squeeze_dim(-1);
                let count = w.sum(Kind::Float).clamp_min(1.0);
                (
                    (nll * w).sum(Kind::Float) / &count,
                    (hits * w).sum(Kind::Float) / &count,
                )
            }
        };
        let (subtask_loss, subtask_accuracy) = match subtask.filter(|_| self.config.plan.enabled())
        {
            Some((ids, mask)) => {
                let prompt_len = batch.prompt_ids.size()[1];
                let (loss, acc) =
                    self.subtask_loss(&hidden, prefix.text_start + prompt_len - 1, ids, mask)?;
                (Some(loss), Some(acc))
            }
            None => (None, None),
        };
        let (grounding, grounding_log_maps, subgoal_logits) = match prefix.grounding {
            Some(r) => (Some(r.coords), Some(r.log_maps), r.subgoal_logits),
            None => (None, None, None),
        };
        Ok(TrainOutput {
            grounding_log_maps,
            grounding,
            subgoal_logits,
            loss,
            action_logits: logits,
            predicted: predicted_bins + self.action_tokenizer.token_offset(),
            accuracy,
            subtask_loss,
            subtask_accuracy,
        })
    }

    /// `embeds [B, P, D]` / `mask [B, P]` followed by the chunk's action query positions
    /// (always valid: they are inputs, not frames), and how many there are.
    fn append_queries(
        &self,
        queries: &Tensor,
        embeds: &Tensor,
        mask: &Tensor,
    ) -> (Tensor, Tensor, i64) {
        let (q, ones) = self.query_inputs(queries, embeds.size()[0]);
        let n = ones.size()[1];
        (
            Tensor::cat(&[embeds.shallow_clone(), q], 1),
            Tensor::cat(&[mask.to_kind(Kind::Bool), ones], 1),
            n,
        )
    }

    /// The chunk's query embeddings for `b` rows, `[b, K·A, D]`, and their validity.
    fn query_inputs(&self, queries: &Tensor, b: i64) -> (Tensor, Tensor) {
        let n = queries.size()[0];
        let q = queries
            .to_kind(self.compute_kind)
            .unsqueeze(0)
            .expand([b, n, -1], false);
        (q, Tensor::ones([b, n], (Kind::Bool, self.device())))
    }

    /// Weights `[B, K·action_dim]` (f32) of a chunk's action tokens in the loss: 1 in the
    /// slots of real frames, 0 in those past the episode's end (`pad [B, K]`, true where
    /// padded; `None`: all real). `None` for the one-action head, whose loss stays the
    /// plain mean (its one slot is always a real frame).
    pub(crate) fn action_token_weights(
        &self,
        pad: Option<&Tensor>,
        b: i64,
    ) -> Result<Option<Tensor>> {
        if self.action_queries.is_none() {
            return Ok(None);
        }
        let (k, a) = (
            self.config.action.chunk_size as i64,
            self.config.action.action_dim as i64,
        );
        let device = self.device();
        let real = match pad {
            None => Tensor::ones([b, k], (Kind::Float, device)),
            Some(p) if p.size() == [b, k] => p
                .to_device(device)
                .to_kind(Kind::Bool)
                .logical_not()
                .to_kind(Kind::Float),
            Some(p) => {
                return Err(VlaError::Input(format!(
                    "action_is_pad has shape {:?}, expected [{b}, {k}] (action.chunk_size)",
                    p.size()
                )))
            }
        };
        Ok(Some(
            real.unsqueeze(-1)
                .expand([b, k, a], false)
                .reshape([b, k * a]),
        ))
    }

    /// Cross-entropy of the sub-task tokens and their end token over the text vocabulary:
    /// the hidden state at `first` (the last prompt token) predicts the first sub-task token,
    /// each sub-task token the next, the last one the end token. `ids`/`mask` `[B, S]` are
    /// right-padded; returns the loss and (token, whole sub-task) accuracy.
    fn subtask_loss(
        &self,
        hidden: &Tensor,
        first: i64,
        ids: &Tensor,
        mask: &Tensor,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        let device = self.device();
        let eos = self.eos_id()?;
        let (b, s) = ids.size2()?;
        let ids = ids.to_device(device).to_kind(Kind::Int64);
        let mask = mask.to_device(device).to_kind(Kind::Bool);
        // Position j's label: token j of the sub-task, the end token right after its last,
        // nothing in the padding beyond.
        let lengths = mask
            .to_kind(Kind::Int64)
            .sum_dim_intlist(1i64, true, Kind::Int64); // [B, 1]
        let column = Tensor::arange(s + 1, (Kind::Int64, device)).unsqueeze(0); // [1, S+1]
        let at_end = column.eq_tensor(&lengths);
        let padded = Tensor::cat(&[ids, Tensor::zeros([b, 1], (Kind::Int64, device))], 1);
        let labels = padded.where_self(
            &at_end.logical_not(),
            &Tensor::full([b, s + 1], eos, (Kind::Int64, device)),
        );
        let valid = Tensor::cat(&[mask, Tensor::zeros([b, 1], (Kind::Bool, device))], 1)
            .logical_or(&at_end);
        let vocab = self.config.text.vocab_size as i64;
        let logits = self
            .lm
            .logits_range(&hidden.narrow(1, first, s + 1), 0, vocab); // [B, S+1, V]
        let w = valid.to_kind(Kind::Float);
        let nll = -logits
            .log_softmax(-1, Kind::Float)
            .gather(2, &labels.unsqueeze(-1), false)
            .squeeze_dim(-1);
        let count = w.sum(Kind::Float).clamp_min(1.0);
        let loss = (nll * &w).sum(Kind::Float) / &count;
        let hit = logits.detach().argmax(-1, false).eq_tensor(&labels);
        let token_acc = (hit.to_kind(Kind::Float) * &w).sum(Kind::Float) / &count;
        let right = hit.logical_or(&valid.logical_not());
        let whole = right
            .all_dim(1, false)
            .to_kind(Kind::Float)
            .mean(Kind::Float);
        Ok((loss, (token_acc, whole)))
    }

    /// Greedy, constrained generation of the action tokens (after the sub-task, which a model
    /// with a plan decodes first): one prefill over the prefix, then one cached decoding step
    /// per token. Returns `[B, action_dim]` ids; a chunked model's K actions, `[B,
    /// K·action_dim]`, come out of one pass instead.
    pub fn generate_action_tokens(
        &self,
        images: &Tensor,
        state: Option<&Tensor>,
        prompt_ids: &Tensor,
        prompt_mask: &Tensor,
    ) -> Result<Tensor> {
        self.sample_action_tokens(images, state, prompt_ids, prompt_mask, None)
    }

    /// [`Self::generate_action_tokens`], each action token drawn from the constrained softmax
    /// at `temperature` with noise from `rng` (`None`, or a temperature of 0, is greedy). The
    /// draw is the Gumbel-max trick on noise from our own generator, not libtorch's global
    /// one, so a seed repeats a run whatever else uses libtorch's generator meanwhile.
    /// The gripper token is sampled too: on one demo policy, keeping it greedy gave 15/50
    /// `pick` at temperature 1 against 23/50 sampling it (greedy: 17/50).
    pub fn sample_action_tokens(
        &self,
        images: &Tensor,
        state: Option<&Tensor>,
        prompt_ids: &Tensor,
        prompt_mask: &Tensor,
        sampling: Option<(f64, &mut ChaCha8Rng)>,
    ) -> Result<Tensor> {
        self.generate(
            images,
            state,
            prompt_ids,
            prompt_mask,
            SubtaskInput::Decode,
            sampling,
        )
        .map(|g| g.actions)
    }

    /// The whole generation: with a plan, the sub-task (decoded greedily, or `subtask` given)
    /// and its end token, then the grounding token, then the action tokens (sampled when
    /// `sampling` is given); without, the action tokens after the prompt. Also returns what
    /// the grounding heads computed in the same pass: what `vla eval --trace` turns into
    /// table positions ([`Self::table_targets_from`]) and the subgoal.
    pub fn generate(
        &self,
        images: &Tensor,
        state: Option<&Tensor>,
        prompt_ids: &Tensor,
        prompt_mask: &Tensor,
        subtask: SubtaskInput<'_>,
        mut sampling: Option<(f64, &mut ChaCha8Rng)>,
    ) -> Result<Generated> {
        if let Some(queries) = &self.action_queries {
            return tch::no_grad(|| {
                self.generate_chunk(
                    queries,
                    images,
                    state,
                    prompt_ids,
                    prompt_mask,
                    subtask,
                    sampling,
                )
            });
        }
        tch::no_grad(|| {
            let mut cache = self.lm.new_cache();
            let (mut last, subtasks, grounding) = if self.config.plan.enabled() {
                self.plan(images, state, prompt_ids, prompt_mask, subtask, &mut cache)?
            } else {
                let prefix = self.embed_prefix(images, state, prompt_ids, prompt_mask, None)?;
                let p = prefix.embeds.size()[1];
                let b = prefix.embeds.size()[0];
                let last = self
                    .lm
                    .forward(&prefix.embeds, &prefix.mask, &mut cache)?
                    .narrow(1, p - 1, 1);
                (last, vec![Vec::new(); b as usize], prefix.grounding)
            };
            let b = last.size()[0];
            let a = self.config.action.action_dim as i64;
            let ones = Tensor::ones([b, 1], (Kind::Bool, self.device()));
            let mut tokens = Vec::with_capacity(a as usize);
            for step in 0..a {
                let raw = self.action_logits(&last);
                let bins = match sampling.as_mut() {
                    Some((t, rng)) if *t > 0.0 => {
                        let logits = self.constrain(&raw, step);
                        let noise = gumbel_noise(&logits.size(), rng).to_device(logits.device());
                        (logits.to_kind(Kind::Float) / *t + noise).argmax(-1, false)
                    }
                    _ => self.decode_bins(&raw, step),
                };
                let tok = bins + self.action_tokenizer.token_offset(); // [B, 1]
                if step + 1 < a {
                    let e = self.lm.embed(&tok, self.compute_kind);
                    last = self.lm.forward(&e, &ones, &mut cache)?;
                }
                tokens.push(tok);
            }
            Ok(Generated {
                actions: Tensor::cat(&tokens, 1),
                subtasks,
                grounding,
            })
        })
    }

    /// [`Self::generate`] of a chunked model: the prefix (with a plan, after its sub-task)
    /// and the K·action_dim query positions in one pass with a bidirectional tail, every
    /// slot's token read off its own hidden state (greedily, or each drawn by the
    /// Gumbel-max trick at `sampling`'s temperature).
    #[allow(clippy::too_many_arguments)]
    fn generate_chunk(
        &self,
        queries: &Tensor,
        images: &Tensor,
        state: Option<&Tensor>,
        prompt_ids: &Tensor,
        prompt_mask: &Tensor,
        subtask: SubtaskInput<'_>,
        sampling: Option<(f64, &mut ChaCha8Rng)>,
    ) -> Result<Generated> {
        let mut cache = self.lm.new_cache();
        let (hidden, subtasks, grounding) = if self.config.plan.enabled() {
            let (last, subtasks, grounding) =
                self.plan(images, state, prompt_ids, prompt_mask, subtask, &mut cache)?;
            let (q, ones) = self.query_inputs(queries, last.size()[0]);
            let n = ones.size()[1];
            let hidden = self.lm.forward_with_tail(&q, &ones, &mut cache, n)?;
            (hidden, subtasks, grounding)
        } else {
            let prefix = self.embed_prefix(images, state, prompt_ids, prompt_mask, None)?;
            let (b, p) = (prefix.embeds.size()[0], prefix.embeds.size()[1]);
            let (x, mask, n) = self.append_queries(queries, &prefix.embeds, &prefix.mask);
            let hidden = self
                .lm
                .forward_with_tail(&x, &mask, &mut cache, n)?
                .narrow(1, p, n);
            (hidden, vec![Vec::new(); b as usize], prefix.grounding)
        };
        let raw = self.action_logits(&hidden); // [B, K·A, bins]
        let bins = match sampling {
            Some((t, rng)) if t > 0.0 => {
                let logits = self.constrain(&raw, 0);
                let noise = gumbel_noise(&logits.size(), rng).to_device(logits.device());
                (logits.to_kind(Kind::Float) / t + noise).argmax(-1, false)
            }
            _ => self.decode_bins(&raw, 0),
        };
        Ok(Generated {
            actions: bins + self.action_tokenizer.token_offset(),
            subtasks,
            grounding,
        })
    }

    /// What a model with a plan reads before its sub-task: the vision tokens, the state and
    /// the prompt (`[B, P, D]` and validity `[B, P]`), and the observation the grounding
    /// heads read after the sub-task.
    fn plan_head(
        &self,
        images: &Tensor,
        state: Option<&Tensor>,
        prompt_ids: &Tensor,
        prompt_mask: &Tensor,
    ) -> Result<(Observed, Tensor, Tensor)> {
        let b = images.size().first().copied().unwrap_or(0);
        let (text, prompt_valid) = self.embed_text(prompt_ids, prompt_mask, b, "prompt")?;
        let obs = self.observe(images, state, None)?;
        let mut head: Vec<Tensor> = obs.tokens.iter().map(Tensor::shallow_clone).collect();
        head.extend(self.proprio_token(&obs));
        let n = head.iter().map(|t| t.size()[1]).sum::<i64>();
        head.push(text);
        let mask = Tensor::cat(
            &[
                Tensor::ones([b, n], (Kind::Bool, self.device())),
                prompt_valid,
            ],
            1,
        );
        Ok((obs, Tensor::cat(&head, 1), mask))
    }

    /// The LM input in front of a text answer, where a sub-task would start: for a model
    /// with a plan its [`Self::plan_head`]; without, the whole prefix (whose grounding token
    /// reads the question, so an answer about where a named thing is can use it).
    fn text_prefix(
        &self,
        images: &Tensor,
        state: Option<&Tensor>,
        prompt_ids: &Tensor,
        prompt_mask: &Tensor,
    ) -> Result<(Tensor, Tensor, Option<GroundingReadout>)> {
        let b = images.size().first().copied().unwrap_or(0);
        let neutral = match (state, &self.proprio_projector) {
            (None, Some(_)) => Some(self.state_mean.unsqueeze(0).expand([b, -1], false)),
            _ => None,
        };
        let state = state.or(neutral.as_ref());
        if self.config.plan.enabled() {
            let (_, embeds, mask) = self.plan_head(images, state, prompt_ids, prompt_mask)?;
            Ok((embeds, mask, None))
        } else {
            let prefix = self.embed_prefix(images, state, prompt_ids, prompt_mask, None)?;
            Ok((prefix.embeds, prefix.mask, prefix.grounding))
        }
    }

    /// Teacher-forced answers of vision-language examples: the cross-entropy of the answer
    /// tokens and their end token over the text vocabulary (no action is involved).
    pub fn forward_text(&self, batch: &TextBatch) -> Result<TextOutput> {
        let b = batch.images.size().first().copied().unwrap_or(0);
        let (embeds, mask, grounding) = self.text_prefix(
            &batch.images,
            batch.state.as_ref(),
            &batch.prompt_ids,
            &batch.prompt_mask,
        )?;
        let (answer, answer_valid) =
            self.embed_text(&batch.answer_ids, &batch.answer_mask, b, "answer")?;
        let p = embeds.size()[1];
        let x = Tensor::cat(&[embeds, answer], 1);
        let mask = Tensor::cat(&[mask, answer_valid], 1);
        let hidden = self.lm.forward(&x, &mask, &mut self.lm.new_cache())?;
        let (loss, (token_accuracy, accuracy)) =
            self.subtask_loss(&hidden, p - 1, &batch.answer_ids, &batch.answer_mask)?;
        Ok(TextOutput {
            loss,
            token_accuracy,
            accuracy,
            grounding_log_maps: grounding.map(|g| g.log_maps),
        })
    }

    /// Greedy answers to questions about images (`vla ask`): each row's answer ids, end
    /// token excluded, at most `max_tokens` tokens with it. `state` as in [`TextBatch`].
    pub fn answer(
        &self,
        images: &Tensor,
        state: Option<&Tensor>,
        prompt_ids: &Tensor,
        prompt_mask: &Tensor,
        max_tokens: usize,
    ) -> Result<Vec<Vec<i64>>> {
        tch::no_grad(|| {
            let mut cache = self.lm.new_cache();
            let (embeds, mask, _) = self.text_prefix(images, state, prompt_ids, prompt_mask)?;
            let p = embeds.size()[1];
            let mut last = self
                .lm
                .forward(&embeds, &mask, &mut cache)?
                .narrow(1, p - 1, 1);
            let (ids, valid) = self.decode_text(&mut last, &mut cache, max_tokens)?;
            valid_rows(&ids, &valid)
        })
    }

    /// The high-level step of a model with a plan: runs the vision side, the state and the
    /// prompt through the LM, then the sub-task (greedy text tokens until each row's end
    /// token, or `subtask` as given), the end token and the grounding token (whose heads
    /// read the sub-task) into `cache`. Returns the last hidden state `[B, 1, D]`, each row's
    /// sub-task ids and the grounding readout.
    #[allow(clippy::type_complexity)]
    fn plan(
        &self,
        images: &Tensor,
        state: Option<&Tensor>,
        prompt_ids: &Tensor,
        prompt_mask: &Tensor,
        subtask: SubtaskInput<'_>,
        cache: &mut crate::model::llama::KvCache,
    ) -> Result<(Tensor, Vec<Vec<i64>>, Option<GroundingReadout>)> {
        let b = images.size().first().copied().unwrap_or(0);
        let device = self.device();
        let (obs, embeds, mask) = self.plan_head(images, state, prompt_ids, prompt_mask)?;
        let p = embeds.size()[1];
        let mut last = self.lm.forward(&embeds, &mask, cache)?.narrow(1, p - 1, 1);
        let (ids, valid) = match subtask {
            SubtaskInput::Forced(ids, valid) => {
                let (e, v) = self.embed_text(ids, valid, b, "sub-task")?;
                if e.size()[1] > 0 {
                    let _ = self.lm.forward(&e, &v, cache)?;
                }
                (ids.to_device(device).to_kind(Kind::Int64), v)
            }
            SubtaskInput::Decode => {
                self.decode_text(&mut last, cache, self.config.plan.max_tokens)?
            }
        };
        let subtasks = valid_rows(&ids, &valid)?;
        let ones = Tensor::ones([b, 1], (Kind::Bool, device));
        last = self.lm.forward(&self.eos_embedding(b)?, &ones, cache)?;
        let (sub, sub_valid) = self.embed_text(&ids, &valid, b, "sub-task")?;
        let grounding = self.ground(&obs, &sub, &sub_valid);
        let grounding = match grounding {
            Some((token, readout)) => {
                last = self.lm.forward(&token, &ones, cache)?;
                Some(readout)
            }
            None => None,
        };
        Ok((last, subtasks, grounding))
    }

    /// Greedy decoding of text (a sub-task, an answer) over the text vocabulary from `last`
    /// (the last prompt token's hidden state), feeding each token into `cache`, for at most
    /// `max_tokens` tokens counting the end token. A row that ends (its end token is the most
    /// likely) takes masked padding while the others go on, so every row's tokens sit where
    /// teacher forcing puts them (right-padded); the end token itself is fed by the caller.
    /// Returns `[B, S]` ids and validity.
    fn decode_text(
        &self,
        last: &mut Tensor,
        cache: &mut crate::model::llama::KvCache,
        max_tokens: usize,
    ) -> Result<(Tensor, Tensor)> {
        let device = self.device();
        let b = last.size()[0];
        let eos = self.eos_id()?;
        let vocab = self.config.text.vocab_size as i64;
        let mut alive = Tensor::ones([b, 1], (Kind::Bool, device));
        let (mut ids, mut valid) = (Vec::new(), Vec::new());
        for _ in 1..max_tokens {
            let tok = self.lm.logits_range(last, 0, vocab).argmax(-1, false); // [B, 1]
            alive = alive.logical_and(&tok.ne(eos));
            if alive.any().int64_value(&[]) == 0 {
                break;
            }
            let e = self.lm.embed(&tok, self.compute_kind);
            *last = self.lm.forward(&e, &alive, cache)?;
            ids.push(tok);
            valid.push(alive.shallow_clone());
        }
        if ids.is_empty() {
            return Ok((
                Tensor::zeros([b, 0], (Kind::Int64, device)),
                Tensor::zeros([b, 0], (Kind::Bool, device)),
            ));
        }
        Ok((Tensor::cat(&ids, 1), Tensor::cat(&valid, 1)))
    }

    /// What the grounding heads look at: `[B, C, H, h, w]` heat maps over the stem (f32,
    /// each map sums to 1) and `[B, C, H, 2]` their soft-argmax (x, y) in `[-1, 1]`; `None`
    /// for a model without grounding heads. For inspection (`vla act --grounding-png`).
    pub fn grounding_maps(
        &self,
        images: &Tensor,
        state: Option<&Tensor>,
        prompt_ids: &Tensor,
        prompt_mask: &Tensor,
    ) -> Result<Option<(Tensor, Tensor)>> {
        let c = self.config.vision.num_cameras as i64;
        let heads = self.config.vision.grounding_heads as i64;
        tch::no_grad(|| {
            let generated = self.generate(
                images,
                state,
                prompt_ids,
                prompt_mask,
                SubtaskInput::Decode,
                None,
            )?;
            Ok(generated.grounding.map(|r| {
                let s = r.log_maps.size();
                let b = s[0] / c;
                (
                    r.log_maps.exp().view([b, c, heads, s[2], s[3]]),
                    r.coords.to_kind(Kind::Float).view([b, c, heads, 2]),
                )
            }))
        })
    }

    /// [`Self::generate_action_tokens`] decoded to continuous actions: one row per sample,
    /// its action (a chunk's K actions one after the other).
    pub fn generate_actions(
        &self,
        images: &Tensor,
        state: Option<&Tensor>,
        prompt_ids: &Tensor,
        prompt_mask: &Tensor,
    ) -> Result<Vec<Vec<f32>>> {
        let tokens = self
            .generate_action_tokens(images, state, prompt_ids, prompt_mask)?
            .to_device(Device::Cpu);
        let a = self.config.action.action_dim;
        let flat: Vec<i64> = Vec::<i64>::try_from(tokens.flatten(0, 1))?;
        flat.chunks(self.config.action.chunk_tokens())
            .map(|row| {
                let actions = row
                    .chunks(a)
                    .map(|t| self.action_tokenizer.decode(t))
                    .collect::<Result<Vec<_>>>()?;
                Ok(actions.concat())
            })
            .collect()
    }
}

/// Standard Gumbel noise of `shape` (f32, CPU): `argmax(logits + noise)` is a draw from
/// `softmax(logits)`; masked (-inf) logits stay out.
fn gumbel_noise(shape: &[i64], rng: &mut ChaCha8Rng) -> Tensor {
    use rand::Rng;
    let n: i64 = shape.iter().product();
    // Uniform in the open interval (0, 1): 24 random bits, offset half a step.
    let values: Vec<f32> = (0..n)
        .map(|_| {
            let u = ((rng.random::<u32>() >> 8) as f32 + 0.5) / (1u32 << 24) as f32;
            -(-u.ln()).ln()
        })
        .collect();
    Tensor::from_slice(&values).view(shape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    pub(crate) fn tiny_model(seed: i64) -> VlaModel {
        crate::test_setup();
        let cfg = VlaConfig::test_tiny();
        let stats = NormStats::unit(&cfg);
        VlaModel::new(cfg, stats, Device::Cpu, seed).unwrap()
    }

    pub(crate) fn batch(model: &VlaModel, b: i64) -> VlaBatch {
        let cfg = model.config();
        let s = cfg.vision.image_size as i64;
        let prompts: Vec<Vec<i64>> = (0..b).map(|i| (1..(4 + i)).collect()).collect();
        let (prompt_ids, prompt_mask) = left_pad(&prompts, 0);
        let actions: Vec<[f32; 7]> = (0..b)
            .map(|i| [0.1 * i as f32, -0.2, 0.3, 0.0, 0.5, -0.5, (i % 2) as f32])
            .collect();
        VlaBatch {
            images: crate::model::rng_locked(|| {
                Tensor::randint(256, [b, 2, 3, s, s], (Kind::Uint8, Device::Cpu))
            }),
            state: Some(crate::model::rng_locked(|| {
                Tensor::randn([b, 13], (Kind::Float, Device::Cpu))
            })),
            prompt_ids,
            prompt_mask,
            action_tokens: model.encode_actions(&actions).unwrap(),
            action_is_pad: None,
            subtask: None,
        }
    }

    #[test]
    fn shapes_and_parameter_names() {
        let model = tiny_model(0);
        let b = batch(&model, 3);
        let out = model.forward_train(&b).unwrap();
        assert_eq!(out.action_logits.size(), vec![3, 7, 256]);
        assert_eq!(out.predicted.size(), vec![3, 7]);
        assert!(out.loss.double_value(&[]).is_finite());
        let names = model.var_store().variables();
        for n in [
            "vision_backbone.embeddings.position_embeddings",
            "vision_backbone.encoder.layer.0.layernorm_before.weight",
            "camera_embeddings.weight",
            "projector.fc1.weight",
            "keypoint_head.weight",
            "keypoint_projector.fc1.weight",
            "grounding.query.weight",
            "grounding.projector.fc2.weight",
            "grounding.target_head.fc1.bias",
            "proprio_projector.fc2.bias",
            "language_model.model.embed_tokens.weight",
            "language_model.model.layers.1.self_attn.k_proj.weight",
            "language_model.model.layers.0.mlp.gate_proj.weight",
            "language_model.model.norm.weight",
            "language_model.lm_head.weight",
        ] {
            assert!(names.contains_key(n), "missing {n}");
        }
        let toks = model
            .generate_action_tokens(&b.images, b.state.as_ref(), &b.prompt_ids, &b.prompt_mask)
            .unwrap();
        assert_eq!(toks.size(), vec![3, 7]);
        assert_constrained(&Vec::try_from(toks.flatten(0, 1)).expect("i64 tokens"));
    }

    /// Rows of 7 token ids: the gripper step is one of its two bins, the rest action tokens.
    fn assert_constrained(tokens: &[i64]) {
        for (i, t) in tokens.iter().enumerate() {
            assert!((300..556).contains(t), "{t}");
            if i % 7 == 6 {
                assert!(*t == 300 || *t == 555, "gripper token {t}");
            }
        }
    }

    #[test]
    fn generation_matches_teacher_forced_argmax_and_batching() {
        let model = tiny_model(3);
        let b = batch(&model, 3);
        let toks = model
            .generate_action_tokens(&b.images, b.state.as_ref(), &b.prompt_ids, &b.prompt_mask)
            .unwrap();
        // Feeding the generated tokens back as targets, teacher forcing must predict them.
        let tf = VlaBatch {
            action_tokens: toks.shallow_clone(),
            ..batch_clone(&b)
        };
        let out = tch::no_grad(|| model.forward_train(&tf)).unwrap();
        assert!(out.predicted.equal(&toks), "{} vs {}", out.predicted, toks);
        // One-by-one generation (no padding) equals batched, left-padded generation.
        for i in 0..3 {
            let len = b.prompt_mask.get(i).sum(Kind::Int64).int64_value(&[]);
            let l = b.prompt_ids.size()[1];
            let ids = b.prompt_ids.narrow(0, i, 1).narrow(1, l - len, len);
            let mask = Tensor::ones([1, len], (Kind::Bool, Device::Cpu));
            let state = b.state.as_ref().map(|s| s.narrow(0, i, 1));
            let single = model
                .generate_action_tokens(&b.images.narrow(0, i, 1), state.as_ref(), &ids, &mask)
                .unwrap();
            assert!(single.equal(&toks.narrow(0, i, 1)));
        }
    }

    fn batch_clone(b: &VlaBatch) -> VlaBatch {
        VlaBatch {
            images: b.images.shallow_clone(),
            state: b.state.as_ref().map(Tensor::shallow_clone),
            prompt_ids: b.prompt_ids.shallow_clone(),
            prompt_mask: b.prompt_mask.shallow_clone(),
            action_tokens: b.action_tokens.shallow_clone(),
            action_is_pad: b.action_is_pad.as_ref().map(Tensor::shallow_clone),
            subtask: b
                .subtask
                .as_ref()
                .map(|(i, m)| (i.shallow_clone(), m.shallow_clone())),
        }
    }

    #[test]
    fn bf16_compute_keeps_f32_master_weights_and_trains() {
        let mut model = tiny_model(2);
        model.set_compute_kind(Kind::BFloat16).unwrap();
        let b = batch(&model, 2);
        let out = model.forward_train(&b).unwrap();
        assert!(out.loss.double_value(&[]).is_finite());
        out.loss.backward();
        let w = &model.var_store().variables()["language_model.model.layers.0.mlp.up_proj.weight"];
        assert_eq!(w.kind(), Kind::Float);
        assert!(w.grad().defined() && w.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
        // The same weights, copied rather than re-seeded: other tests draw from libtorch's
        // global generator meanwhile, so a second `tiny_model(2)` may differ.
        let mut f32_model = tiny_model(2);
        f32_model
            .var_store_mut()
            .copy(model.var_store())
            .expect("same architecture");
        let f32_loss = f32_model.forward_train(&b).unwrap().loss.double_value(&[]);
        let diff = (out.loss.double_value(&[]) - f32_loss).abs();
        assert!(
            diff < 0.05 * f32_loss.abs().max(1.0),
            "bf16 loss differs by {diff}"
        );
    }

    #[test]
    fn spatial_soft_argmax_finds_the_peak() {
        // 3x4 grid, keypoint 0 peaks at row 2 / column 3 (bottom right), keypoint 1 uniform.
        let logits = Tensor::zeros([1, 12, 2], (Kind::Float, Device::Cpu));
        let _ = logits.get(0).get(2 * 4 + 3).get(0).fill_(50.0);
        let c = spatial_soft_argmax(&logits, 3, 4);
        let v: Vec<f32> = Vec::try_from(c.flatten(0, 2)).unwrap();
        assert!(
            (v[0] - 1.0).abs() < 1e-4 && (v[1] - 1.0).abs() < 1e-4,
            "{v:?}"
        );
        assert!(v[2].abs() < 1e-6 && v[3].abs() < 1e-6, "{v:?}");
    }

    #[test]
    fn same_seed_same_init() {
        let a = tiny_model(7);
        let b = tiny_model(7);
        let c = tiny_model(8);
        let (va, vb, vc) = (
            a.var_store().variables(),
            b.var_store().variables(),
            c.var_store().variables(),
        );
        let w = "language_model.model.layers.0.self_attn.q_proj.weight";
        assert!(va[w].equal(&vb[w]));
        assert!(!va[w].equal(&vc[w]));
    }

    #[test]
    fn target_loss_is_masked_and_reaches_the_query_and_the_stem() {
        crate::test_setup();
        let model = tiny_model(3);
        let b = batch(&model, 2);
        let out = model.forward_train(&b).unwrap();
        let coords = out.grounding.as_ref().unwrap();
        assert_eq!(coords.size(), [2 * 2, 2, 2]); // [B*C, H, 2]
        assert!(coords.abs().max().double_value(&[]) <= 1.0);
        let xy = Tensor::from_slice(&[0.4f32, 0.1, 0.3, 0.2, 0.5, -0.2, 0.6, 0.0]).view([2, 2, 2]);
        let none = Tensor::zeros([2, 2], (Kind::Float, Device::Cpu));
        let masked = model.target_loss(&out, &xy, &none).unwrap();
        assert_eq!(masked.double_value(&[]), 0.0);
        let all = Tensor::ones([2, 2], (Kind::Float, Device::Cpu));
        let loss = model.target_loss(&out, &xy, &all).unwrap();
        assert!(loss.double_value(&[]) > 0.0);
        loss.backward();
        let vars = model.var_store().variables();
        for name in [
            "vision_backbone.embeddings.patch_embeddings.stem.0.weight",
            "grounding.query.weight",
            "language_model.model.embed_tokens.weight",
        ] {
            assert!(
                vars[name].grad().abs().sum(Kind::Float).double_value(&[]) > 0.0,
                "{name}"
            );
        }
        // Without grounding heads there is no readout and no loss.
        let mut cfg = VlaConfig::test_tiny();
        cfg.vision.grounding_heads = 0;
        cfg.action.target_aux_weight = 0.0;
        cfg.action.relative_targets = false;
        let plain = VlaModel::new(cfg, model.norm_stats().clone(), Device::Cpu, 3).unwrap();
        let out = plain.forward_train(&batch(&plain, 2)).unwrap();
        assert!(out.grounding.is_none());
        assert!(plain.target_loss(&out, &xy, &all).is_none());
    }

    #[test]
    fn fine_grounding_maps_have_the_first_stem_levels_resolution_and_train_it() {
        crate::test_setup();
        // Patch 8 after a stride-4 stem; the first level is half the image, the last a quarter.
        let cfg = VlaConfig::test_tiny_fine_grounding();
        let s = cfg.vision.image_size as i64;
        let stats = NormStats::unit(&cfg);
        let model = VlaModel::new(cfg, stats, Device::Cpu, 6).expect("valid test config");
        let b = batch(&model, 2);
        let (maps, coords) = model
            .grounding_maps(&b.images, b.state.as_ref(), &b.prompt_ids, &b.prompt_mask)
            .expect("forward")
            .expect("the model has grounding heads");
        assert_eq!(maps.size(), [2, 2, 2, s / 2, s / 2]); // [B, C, H, h, w]
        assert_eq!(coords.size(), [2, 2, 2, 2]);
        // The queries read both levels' channels and learn from the target loss.
        let out = model.forward_train(&b).expect("forward");
        let xy = Tensor::from_slice(&[0.4f32, 0.1, 0.3, 0.2, 0.5, -0.2, 0.6, 0.0]).view([2, 2, 2]);
        let all = Tensor::ones([2, 2], (Kind::Float, Device::Cpu));
        let loss = model.target_loss(&out, &xy, &all).expect("grounding heads");
        loss.backward();
        let vars = model.var_store().variables();
        let query = &vars["grounding.query.weight"];
        assert_eq!(
            query.size()[0],
            2 * (4 + 8),
            "queries span both levels' channels"
        );
        assert!(query.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }

    #[test]
    fn expectation_decoding_reads_the_mean_bin_and_the_gripper_by_argmax() {
        crate::test_setup();
        let mut cfg = VlaConfig::test_tiny();
        let stats = NormStats::unit(&cfg);
        let argmax = VlaModel::new(cfg.clone(), stats.clone(), Device::Cpu, 0).expect("model");
        cfg.action.decoding = ActionDecoding::Expectation;
        let mean = VlaModel::new(cfg, stats, Device::Cpu, 0).expect("model");
        // Dimension 0: "stay" (bin 128) at 0.6 against "move" (bin 20) at 0.4. Gripper
        // (dimension 6): open (bin 0) at 0.7, closed (bin 255) at 0.3.
        let mut values = vec![-1e9f32; 7 * 256];
        values[128] = 0.6f32.ln();
        values[20] = 0.4f32.ln();
        values[6 * 256] = 0.7f32.ln();
        values[6 * 256 + 255] = 0.3f32.ln();
        let logits = Tensor::from_slice(&values).view([1, 7, 256]);
        let read = |m: &VlaModel| {
            Vec::<i64>::try_from(m.decode_bins(&logits, 0).flatten(0, 1)).expect("i64 bins")
        };
        let (a, e) = (read(&argmax), read(&mean));
        assert_eq!((a[0], a[6]), (128, 0), "argmax takes the sharper spike");
        assert_eq!(e[0], 85, "0.6 * 128 + 0.4 * 20 = 84.8 rounds to bin 85");
        assert_eq!(e[6], 0, "the gripper is never read between its two bins");
        // Decoding from the last dimension alone still knows it is the gripper's.
        let last = Vec::<i64>::try_from(mean.decode_bins(&logits.narrow(1, 6, 1), 6).flatten(0, 1))
            .expect("i64 bins");
        assert_eq!(last, vec![0]);
    }

    #[test]
    fn gumbel_max_draws_follow_the_softmax_and_never_a_masked_bin() {
        let p = [0.2f32, 0.3, 0.5];
        let logits =
            Tensor::from_slice(&[p[0].ln(), p[1].ln(), p[2].ln(), f32::NEG_INFINITY]).view([1, 4]);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let n = 20_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            let drawn = (&logits + gumbel_noise(&[1, 4], &mut rng)).argmax(-1, false);
            counts[drawn.int64_value(&[0]) as usize] += 1;
        }
        assert_eq!(counts[3], 0, "the masked bin is never drawn");
        for (c, want) in counts.iter().zip(p) {
            let got = *c as f32 / n as f32;
            assert!(
                (got - want).abs() < 0.015,
                "frequency {got}, softmax {want}"
            );
        }
    }

    #[test]
    fn sampling_is_seeded_stays_constrained_and_cools_to_greedy() {
        let model = tiny_model(4);
        let b = batch(&model, 4);
        let run = |t: f64, seed: u64| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let toks = model
                .sample_action_tokens(
                    &b.images,
                    b.state.as_ref(),
                    &b.prompt_ids,
                    &b.prompt_mask,
                    Some((t, &mut rng)),
                )
                .expect("sampling");
            Vec::<i64>::try_from(toks.flatten(0, 1)).expect("i64 tokens")
        };
        let greedy = run(0.0, 0);
        assert_eq!(run(1e-4, 1), greedy, "a cold sample is the argmax");
        let hot = run(100.0, 2);
        assert_eq!(run(100.0, 2), hot, "the same seed draws the same tokens");
        assert_ne!(hot, greedy, "a hot sample leaves the argmax");
        assert_constrained(&hot);
    }

    #[test]
    fn relative_targets_make_the_grippers_horizontal_position_an_input() {
        // The end effector's x is not among the proprioception token's values ([6, 9]): only
        // the relative grounding targets can carry it to the action logits.
        let logits_with_ee_x = |relative: bool, x: f32| {
            let mut cfg = VlaConfig::test_tiny();
            cfg.action.relative_targets = relative;
            let stats = NormStats::unit(&cfg);
            let model = VlaModel::new(cfg, stats, Device::Cpu, 5).expect("valid test config");
            tch::manual_seed(11);
            let b = batch(&model, 2);
            let state = b.state.as_ref().expect("the test batch has a state").copy();
            let _ = state
                .narrow(1, vla_core::StateLayout::EE_POSITION.start as i64, 1)
                .fill_(f64::from(x));
            let b = VlaBatch {
                state: Some(state),
                ..batch_clone(&b)
            };
            model.forward_train(&b).expect("forward").action_logits
        };
        let moved = |relative: bool| {
            (logits_with_ee_x(relative, 0.3) - logits_with_ee_x(relative, 0.6))
                .abs()
                .max()
                .double_value(&[])
        };
        assert_eq!(
            moved(false),
            0.0,
            "without relative targets x must not matter"
        );
        assert!(
            moved(true) > 1e-6,
            "with relative targets x must reach the logits"
        );
    }

    #[test]
    fn the_subgoal_gate_learns_from_its_labels_and_picks_the_offset_the_lm_reads() {
        crate::test_setup();
        let mut cfg = VlaConfig::test_tiny();
        cfg.action.subgoal_weight = 0.5;
        let model = VlaModel::new(
            cfg,
            NormStats::unit(&VlaConfig::test_tiny()),
            Device::Cpu,
            4,
        )
        .expect("valid test config");
        let b = batch(&model, 2);
        let out = model.forward_train(&b).expect("forward");
        let logits = out.subgoal_logits.as_ref().expect("the gate's logits");
        // [B, H + 1]: the heads and "hold".
        assert_eq!(logits.size(), [2, 3]);
        // -1 (none known) and a class the gate does not have are no labels.
        let unknown = Tensor::from_slice(&[-1i64, 7]);
        let masked = model.subgoal_loss(&out, &unknown).expect("a gate");
        assert_eq!(masked.double_value(&[]), 0.0);
        let loss = model
            .subgoal_loss(&out, &Tensor::from_slice(&[1i64, 2]))
            .expect("a gate");
        assert!(loss.double_value(&[]) > 0.0);
        loss.backward();
        let vars = model.var_store().variables();
        let grad = vars["grounding.subgoal.fc1.weight"].grad();
        assert!(grad.abs().sum(Kind::Float).double_value(&[]) > 0.0);
        // The token carries the gated head's offset: forcing the gate onto one head or the
        // other (or "hold") changes it.
        let g = model.grounding.as_ref().expect("grounding heads");
        let coords = out.grounding.as_ref().expect("coordinates").detach();
        let ee = Tensor::zeros([2, 2], (Kind::Float, Device::Cpu));
        let token = |head: i64| {
            let gate = Tensor::full([2, 3], -30.0, (Kind::Float, Device::Cpu));
            let _ = gate.narrow(1, head, 1).fill_(30.0);
            g.token(&coords, Some(&ee), Some(&gate), Kind::Float)
        };
        for (a, b) in [(0, 1), (0, 2), (1, 2)] {
            let apart = (token(a) - token(b)).abs().max().double_value(&[]);
            assert!(apart > 1e-6, "the gate must choose: {a} vs {b}");
        }
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let model = tiny_model(0);
        let b = batch(&model, 2);
        let bad = VlaBatch {
            images: Tensor::zeros([2, 1, 3, 16, 16], (Kind::Uint8, Device::Cpu)),
            ..batch_clone(&b)
        };
        assert!(model.forward_train(&bad).is_err());
        let bad = VlaBatch {
            prompt_ids: b.prompt_ids.full_like(10_000),
            ..batch_clone(&b)
        };
        assert!(model.forward_train(&bad).is_err());
        let bad = VlaBatch {
            action_tokens: b.action_tokens.zeros_like(),
            ..batch_clone(&b)
        };
        assert!(model.forward_train(&bad).is_err());
        let bad = VlaBatch {
            state: None,
            ..batch_clone(&b)
        };
        assert!(model.forward_train(&bad).is_err());
        let empty = Tensor::zeros([0, 2, 3, 16, 16], (Kind::Uint8, Device::Cpu));
        let (ids, mask) = left_pad(&[], 0);
        assert!(model
            .generate_action_tokens(&empty, None, &ids, &mask)
            .is_err());
    }

    /// A model with a plan whose sub-tasks end with id 2.
    fn plan_model(seed: i64) -> VlaModel {
        crate::test_setup();
        let cfg = VlaConfig::test_tiny_plan(2);
        let stats = NormStats::unit(&cfg);
        VlaModel::new(cfg, stats, Device::Cpu, seed).unwrap()
    }

    /// Greedy generation for `b`'s prompts and states on `images`.
    fn generate(
        model: &VlaModel,
        b: &VlaBatch,
        images: &Tensor,
        subtask: SubtaskInput,
    ) -> Generated {
        model
            .generate(
                images,
                b.state.as_ref(),
                &b.prompt_ids,
                &b.prompt_mask,
                subtask,
                None,
            )
            .unwrap()
    }

    #[test]
    fn decoded_subtask_precedes_the_actions_as_teacher_forcing_places_it() {
        let model = plan_model(4);
        let b = batch(&model, 3);
        let generated = generate(&model, &b, &b.images, SubtaskInput::Decode);
        assert_eq!(generated.subtasks.len(), 3);
        for s in &generated.subtasks {
            assert!(s.len() < 8, "at most max_tokens - 1 sub-task tokens: {s:?}");
            assert!(s.iter().all(|&t| (0..300).contains(&t) && t != 2), "{s:?}");
        }
        // Teacher forcing the decoded sub-tasks (right-padded, as the data builds them) and
        // the generated actions must predict exactly what generation produced: the sub-task
        // tokens and their end token first, then the actions after them.
        let (ids, mask) = right_pad(&generated.subtasks, 0);
        let tf = VlaBatch {
            action_tokens: generated.actions.shallow_clone(),
            subtask: Some((ids, mask)),
            ..batch_clone(&b)
        };
        let out = tch::no_grad(|| model.forward_train(&tf)).unwrap();
        assert!(out.predicted.equal(&generated.actions));
        // Every decoded token is predicted again; the end-token label misses only where
        // decoding was cut at `max_tokens` (an untrained model seldom says it).
        let cut = |s: &Vec<i64>| s.len() == 7;
        let labels: usize = generated.subtasks.iter().map(|s| s.len() + 1).sum();
        let misses = generated.subtasks.iter().filter(|s| cut(s)).count();
        let (tokens, whole) = out.subtask_accuracy.expect("a plan reports its accuracy");
        let expected = (labels - misses) as f64 / labels as f64;
        assert!(
            (tokens.double_value(&[]) - expected).abs() < 1e-6,
            "{tokens} vs {expected}"
        );
        let ended = generated.subtasks.iter().filter(|s| !cut(s)).count();
        assert!((whole.double_value(&[]) - ended as f64 / 3.0).abs() < 1e-6);
        // Forcing the decoded sub-tasks gives the same actions as decoding them.
        let (ids, mask) = right_pad(&generated.subtasks, 0);
        let forced = generate(&model, &b, &b.images, SubtaskInput::Forced(&ids, &mask));
        assert!(forced.actions.equal(&generated.actions));
        assert_eq!(forced.subtasks, generated.subtasks);
    }

    #[test]
    fn a_forced_different_subtask_changes_the_action() {
        let model = plan_model(5);
        let b = batch(&model, 2);
        let act = |rows: &[Vec<i64>]| {
            let (ids, mask) = right_pad(rows, 0);
            generate(&model, &b, &b.images, SubtaskInput::Forced(&ids, &mask)).actions
        };
        let a = act(&[vec![10, 11, 12], vec![10, 11, 12]]);
        let again = act(&[vec![10, 11, 12], vec![10, 11, 12]]);
        let other = act(&[vec![40, 41, 42, 43], vec![40, 41, 42, 43]]);
        assert!(a.equal(&again));
        assert!(!a.equal(&other), "{a} vs {other}");
        // A batch that needs no sub-task is refused by a model with a plan.
        assert!(model.forward_train(&batch_clone(&b)).is_err());
    }

    #[test]
    fn the_subtask_is_learned_by_cross_entropy() {
        // Two scenes (dark and bright images) with their own sub-task; a few steps of
        // training make greedy decoding say the right one for each.
        let mut model = plan_model(6);
        let b = batch(&model, 2);
        let images = Tensor::cat(
            &[
                Tensor::zeros([1, 2, 3, 16, 16], (Kind::Uint8, Device::Cpu)),
                Tensor::full([1, 2, 3, 16, 16], 255, (Kind::Uint8, Device::Cpu)),
            ],
            0,
        );
        let rows = vec![vec![20i64, 21, 22], vec![30, 31]];
        let (ids, mask) = right_pad(&rows, 0);
        let train = VlaBatch {
            images: images.shallow_clone(),
            subtask: Some((ids, mask)),
            ..batch_clone(&b)
        };
        let mut step = fast_step(&mut model);
        let first = step.step(&model, &train).unwrap();
        let mut last = first.clone();
        for _ in 0..60 {
            last = step.step(&model, &train).unwrap();
        }
        assert!(
            last.subtask_loss.unwrap() < 0.2 * first.subtask_loss.unwrap(),
            "{first:?} -> {last:?}"
        );
        let generated = generate(&model, &b, &images, SubtaskInput::Decode);
        assert_eq!(generated.subtasks, rows);
    }

    /// An optimiser that learns a toy batch in a few dozen steps.
    fn fast_step(model: &mut VlaModel) -> crate::train::optim::TrainStep {
        crate::train::optim::TrainStep::new(
            model,
            crate::train::optim::OptimConfig {
                lr: 3e-3,
                warmup_steps: 0,
                ..Default::default()
            },
        )
        .unwrap()
    }

    /// Vision-language examples on a model without a plan (the demo's layout).
    fn text_batch(model: &VlaModel, answers: &[Vec<i64>]) -> TextBatch {
        let b = answers.len() as i64;
        let s = model.config().vision.image_size as i64;
        let questions: Vec<Vec<i64>> = (0..b).map(|i| (5..(9 + i)).collect()).collect();
        let (prompt_ids, prompt_mask) = left_pad(&questions, 0);
        let (answer_ids, answer_mask) = right_pad(answers, 0);
        TextBatch {
            images: crate::model::rng_locked(|| {
                Tensor::randint(256, [b, 2, 3, s, s], (Kind::Uint8, Device::Cpu))
            }),
            state: None,
            prompt_ids,
            prompt_mask,
            answer_ids,
            answer_mask,
        }
    }

    fn row(batch: &TextBatch, i: i64) -> TextBatch {
        let len = batch.answer_mask.get(i).sum(Kind::Int64).int64_value(&[]);
        TextBatch {
            images: batch.images.narrow(0, i, 1),
            state: None,
            prompt_ids: batch.prompt_ids.narrow(0, i, 1),
            prompt_mask: batch.prompt_mask.narrow(0, i, 1),
            answer_ids: batch.answer_ids.narrow(0, i, 1).narrow(1, 0, len),
            answer_mask: batch.answer_mask.narrow(0, i, 1).narrow(1, 0, len),
        }
    }

    /// Co-training's masking: an answer's padding carries no loss (a mixed batch's loss is
    /// each row's own, weighted by its tokens), answers train only the text rows of the LM
    /// head and actions only the action rows, so neither kind of example teaches the
    /// other's output.
    #[test]
    fn answers_are_masked_text_losses_and_actions_stay_apart() {
        let mut cfg = VlaConfig::test_tiny();
        cfg.text.eos_token_id = Some(2);
        let model = VlaModel::new(cfg.clone(), NormStats::unit(&cfg), Device::Cpu, 3).unwrap();
        let answers = vec![vec![20i64], vec![30, 31, 32]];
        let both = text_batch(&model, &answers);
        let loss = |b: &TextBatch| {
            tch::no_grad(|| model.forward_text(b))
                .unwrap()
                .loss
                .double_value(&[])
        };
        let (l0, l1) = (loss(&row(&both, 0)), loss(&row(&both, 1)));
        let expected = (2.0 * l0 + 4.0 * l1) / 6.0;
        assert!(
            (loss(&both) - expected).abs() < 1e-5,
            "{} vs {expected}",
            loss(&both)
        );

        let vocab = model.config().text.vocab_size as i64;
        let head = model
            .var_store()
            .variables()
            .into_iter()
            .find(|(n, _)| n == "language_model.lm_head.weight")
            .map(|(_, t)| t)
            .expect("untied LM head");
        let grads = |loss: Tensor| {
            for (_, t) in model.var_store().variables() {
                let mut g = t.grad();
                if g.defined() {
                    let _ = g.zero_();
                }
            }
            loss.backward();
            let g = head.grad();
            let rows = g.size()[0];
            (
                g.narrow(0, 0, vocab)
                    .abs()
                    .sum(Kind::Float)
                    .double_value(&[]),
                g.narrow(0, vocab, rows - vocab)
                    .abs()
                    .sum(Kind::Float)
                    .double_value(&[]),
            )
        };
        let (text, action) = grads(model.forward_text(&both).unwrap().loss);
        assert!(
            text > 0.0 && action == 0.0,
            "answers: text {text}, action {action}"
        );
        let (text, action) = grads(model.forward_train(&batch(&model, 2)).unwrap().loss);
        assert!(
            text == 0.0 && action > 0.0,
            "actions: text {text}, action {action}"
        );
    }

    /// What greedy answering says is what teacher forcing predicts, on both layouts (with a
    /// plan an answer sits where the sub-task does), and a few steps teach two answers.
    #[test]
    fn answers_decode_as_teacher_forcing_predicts_and_are_learned() {
        for cfg in [VlaConfig::test_tiny_plan(2), {
            let mut c = VlaConfig::test_tiny();
            c.text.eos_token_id = Some(2);
            c
        }] {
            let mut model =
                VlaModel::new(cfg.clone(), NormStats::unit(&cfg), Device::Cpu, 7).unwrap();
            let mut train = text_batch(&model, &[vec![20i64, 21, 22], vec![30, 31]]);
            train.images = Tensor::cat(
                &[
                    Tensor::zeros([1, 2, 3, 16, 16], (Kind::Uint8, Device::Cpu)),
                    Tensor::full([1, 2, 3, 16, 16], 255, (Kind::Uint8, Device::Cpu)),
                ],
                0,
            );
            let answer = |m: &VlaModel| {
                m.answer(
                    &train.images,
                    None,
                    &train.prompt_ids,
                    &train.prompt_mask,
                    6,
                )
                .unwrap()
            };
            let said = answer(&model);
            let (ids, mask) = right_pad(&said, 0);
            let forced = TextBatch {
                answer_ids: ids,
                answer_mask: mask,
                images: train.images.shallow_clone(),
                prompt_ids: train.prompt_ids.shallow_clone(),
                prompt_mask: train.prompt_mask.shallow_clone(),
                state: None,
            };
            let out = tch::no_grad(|| model.forward_text(&forced)).unwrap();
            let labels: usize = said.iter().map(|s| s.len() + 1).sum();
            let cut = said.iter().filter(|s| s.len() == 5).count();
            let expected = (labels - cut) as f64 / labels as f64;
            assert!(
                (out.token_accuracy.double_value(&[]) - expected).abs() < 1e-6,
                "{said:?}: {} vs {expected}",
                out.token_accuracy
            );

            let mut step = fast_step(&mut model);
            let robot = batch(&model, 2);
            let robot = VlaBatch {
                subtask: cfg
                    .plan
                    .enabled()
                    .then(|| right_pad(&[vec![9i64], vec![9]], 0)),
                ..robot
            };
            let mut first = None;
            let mut last = None;
            for _ in 0..60 {
                let targets = crate::train::optim::AuxTargets {
                    text: Some(crate::train::optim::TextTargets {
                        batch: TextBatch {
                            images: train.images.shallow_clone(),
                            prompt_ids: train.prompt_ids.shallow_clone(),
                            prompt_mask: train.prompt_mask.shallow_clone(),
                            answer_ids: train.answer_ids.shallow_clone(),
                            answer_mask: train.answer_mask.shallow_clone(),
                            state: None,
                        },
                        weight: 1.0,
                        pixels: None,
                    }),
                    ..Default::default()
                };
                let stats = step
                    .step_with_targets(&model, &robot, &targets)
                    .and_then(|p| p.resolve())
                    .unwrap();
                first.get_or_insert(stats.vqa_loss.unwrap());
                last = stats.vqa_loss;
            }
            let (first, last) = (first.unwrap(), last.unwrap());
            assert!(last < 0.2 * first, "{first} -> {last}");
            assert_eq!(answer(&model), vec![vec![20, 21, 22], vec![30, 31]]);
        }
    }
    /// A batch that draws nothing from libtorch's generator, so values computed from it can
    /// be saved and compared across builds.
    fn fixed_batch(model: &VlaModel, b: i64) -> VlaBatch {
        let s = model.config().vision.image_size as i64;
        let n = b * 2 * 3 * s * s;
        let images = (Tensor::arange(n, (Kind::Int64, Device::Cpu)) * 37)
            .remainder(256)
            .to_kind(Kind::Uint8)
            .view([b, 2, 3, s, s]);
        let state = (Tensor::arange(b * 13, (Kind::Float, Device::Cpu)) * 0.37)
            .sin()
            .view([b, 13]);
        let prompts: Vec<Vec<i64>> = (0..b).map(|i| (1..(4 + i)).collect()).collect();
        let (prompt_ids, prompt_mask) = left_pad(&prompts, 0);
        let actions: Vec<[f32; 7]> = (0..b)
            .map(|i| [0.1 * i as f32, -0.2, 0.3, 0.0, 0.5, -0.5, (i % 2) as f32])
            .collect();
        let one = model.encode_actions(&actions).expect("valid actions");
        let k = model.config().action.chunk_size as i64;
        VlaBatch {
            images,
            state: Some(state),
            prompt_ids,
            prompt_mask,
            // A chunk's later slots: the same actions with the gripper flipped and the
            // first dimension shifted by a few bins per slot, so slots differ.
            action_tokens: match k {
                1 => one,
                _ => Tensor::cat(
                    &(0..k)
                        .map(|j| {
                            let t = one.copy();
                            let _ = t.narrow(1, 0, 1).g_add_scalar_(5 * j);
                            if j % 2 == 1 {
                                let mut g = t.narrow(1, 6, 1);
                                let flipped = (g.shallow_clone() - 300).neg() + 555;
                                g.copy_(&flipped);
                            }
                            t
                        })
                        .collect::<Vec<_>>(),
                    1,
                ),
            },
            action_is_pad: None,
            subtask: None,
        }
    }

    /// The one-action head must be exactly what it was before chunks existed: these values
    /// were printed by the code before `action.chunk_size` was added (same seed, same
    /// fixed batch; loss, logits, teacher-forced and free-running tokens, a seeded sample,
    /// three AdamW steps on HL-Gauss targets, and a model with a plan).
    #[test]
    fn the_one_action_head_is_unchanged_by_chunking() {
        let mut model = tiny_model(11);
        assert!(
            model
                .var_store()
                .variables()
                .keys()
                .all(|n| !n.starts_with("action_chunk_queries")),
            "chunk_size 1 adds no variable"
        );
        let b = fixed_batch(&model, 3);
        let out = tch::no_grad(|| model.forward_train(&b)).unwrap();
        let close = |got: f64, want: f64| {
            assert!(
                (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{got} vs {want} (saved before chunking)"
            )
        };
        close(out.loss.double_value(&[]), 5.351158618927002);
        close(
            out.action_logits.sum(Kind::Double).double_value(&[]),
            -123.43880587883177,
        );
        let ids = |t: &Tensor| Vec::<i64>::try_from(t.flatten(0, 1)).expect("i64 tokens");
        assert_eq!(
            ids(&out.predicted),
            [
                516, 306, 472, 472, 472, 547, 300, 356, 472, 472, 472, 472, 547, 300, 547, 544,
                349, 516, 550, 508, 300
            ]
        );
        let generated = model
            .generate_action_tokens(&b.images, b.state.as_ref(), &b.prompt_ids, &b.prompt_mask)
            .unwrap();
        assert_eq!(
            ids(&generated),
            [
                516, 460, 516, 532, 306, 306, 300, 356, 306, 306, 492, 306, 492, 555, 547, 550,
                471, 460, 504, 547, 300
            ]
        );
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let sampled = model
            .sample_action_tokens(
                &b.images,
                b.state.as_ref(),
                &b.prompt_ids,
                &b.prompt_mask,
                Some((1.0, &mut rng)),
            )
            .unwrap();
        assert_eq!(
            ids(&sampled),
            [
                514, 475, 320, 413, 515, 371, 300, 513, 504, 516, 452, 480, 488, 300, 451, 374,
                380, 486, 453, 320, 300
            ]
        );
        let mut step = crate::train::optim::TrainStep::new(
            &mut model,
            crate::train::optim::OptimConfig {
                lr: 3e-3,
                warmup_steps: 0,
                label_sigma_bins: 3.0,
                ..Default::default()
            },
        )
        .unwrap();
        for (loss, grad_norm) in [
            (5.351158618927002, 20.314313888549805),
            (5.4457173347473145, 5.513180255889893),
            (4.931643486022949, 2.2383015155792236),
        ] {
            let stats = step.step(&model, &b).unwrap();
            close(stats.loss, loss);
            close(stats.grad_norm, grad_norm);
        }
        let cfg = VlaConfig::test_tiny_plan(2);
        let plan = VlaModel::new(cfg.clone(), NormStats::unit(&cfg), Device::Cpu, 12).unwrap();
        let b = fixed_batch(&plan, 3);
        let g = generate(&plan, &b, &b.images, SubtaskInput::Decode);
        assert_eq!(
            ids(&g.actions),
            [
                494, 428, 346, 346, 346, 498, 300, 483, 346, 346, 346, 498, 385, 300, 533, 385,
                548, 346, 346, 346, 300
            ]
        );
        assert_eq!(
            g.subtasks,
            [
                vec![46, 207, 25, 16, 91, 16, 226],
                vec![25, 76, 102, 16, 23, 78, 180],
                vec![25, 231, 16, 207, 239, 16, 94]
            ]
        );
        let (ids, mask) = right_pad(&[vec![10, 11, 12], vec![10], vec![40, 41]], 0);
        let tf = VlaBatch {
            subtask: Some((ids, mask)),
            ..b
        };
        let out = tch::no_grad(|| plan.forward_train(&tf)).unwrap();
        close(out.loss.double_value(&[]), 6.189608573913574);
        let subtask_loss = out.subtask_loss.expect("a plan").double_value(&[]);
        close(subtask_loss, 6.552504062652588);
    }

    fn chunk_model(k: usize, seed: i64) -> VlaModel {
        crate::test_setup();
        let cfg = VlaConfig::test_tiny_chunk(k);
        let stats = NormStats::unit(&cfg);
        VlaModel::new(cfg, stats, Device::Cpu, seed).expect("valid chunk config")
    }

    #[test]
    fn one_pass_predicts_a_chunk_as_teacher_forcing_does() {
        let model = chunk_model(3, 2);
        let queries = &model.var_store().variables()["action_chunk_queries.weight"];
        assert_eq!(queries.size(), [21, 32], "[K·action_dim, D]");
        let b = fixed_batch(&model, 3);
        assert_eq!(b.action_tokens.size(), [3, 21]);
        let out = tch::no_grad(|| model.forward_train(&b)).unwrap();
        assert_eq!(out.action_logits.size(), [3, 21, 256]);
        assert_eq!(out.predicted.size(), [3, 21]);
        assert!(out.loss.double_value(&[]).is_finite());
        // Generation is the same single pass: K·7 tokens, each slot constrained like its
        // action dimension (every 7th a gripper bin), equal to teacher forcing's argmax.
        let generated = model
            .generate_action_tokens(&b.images, b.state.as_ref(), &b.prompt_ids, &b.prompt_mask)
            .unwrap();
        assert_eq!(generated.size(), [3, 21]);
        assert!(
            generated.equal(&out.predicted),
            "{generated} vs {}",
            out.predicted
        );
        let tokens = Vec::<i64>::try_from(generated.flatten(0, 1)).expect("i64 tokens");
        assert_constrained(&tokens);
        // The slots are different positions with different queries: not one action K times.
        let row: Vec<&[i64]> = tokens[..21].chunks(7).collect();
        assert!(row[0] != row[1] || row[1] != row[2], "{row:?}");
        // A cold sample is the argmax; a hot one stays constrained.
        let sample = |t: f64| {
            let mut rng = ChaCha8Rng::seed_from_u64(1);
            let toks = model
                .sample_action_tokens(
                    &b.images,
                    b.state.as_ref(),
                    &b.prompt_ids,
                    &b.prompt_mask,
                    Some((t, &mut rng)),
                )
                .unwrap();
            Vec::<i64>::try_from(toks.flatten(0, 1)).expect("i64 tokens")
        };
        assert_eq!(sample(1e-4), tokens);
        assert_constrained(&sample(100.0));
        // Continuous actions: one row of K·7 values per sample.
        let actions = model
            .generate_actions(&b.images, b.state.as_ref(), &b.prompt_ids, &b.prompt_mask)
            .unwrap();
        assert_eq!(actions.len(), 3);
        assert!(actions.iter().all(|a| a.len() == 21));
        // Action tokens of one action where a chunk is expected are refused.
        let bad = VlaBatch {
            action_tokens: b.action_tokens.narrow(1, 0, 7),
            ..batch_clone(&b)
        };
        assert!(model.forward_train(&bad).is_err());
        let bad = VlaBatch {
            action_is_pad: Some(Tensor::zeros([3, 2], (Kind::Bool, Device::Cpu))),
            ..batch_clone(&b)
        };
        assert!(model.forward_train(&bad).is_err(), "a pad mask of [B, K]");
    }

    #[test]
    fn the_action_block_is_bidirectional_and_the_prefix_causal() {
        let model = chunk_model(3, 4);
        let b = fixed_batch(&model, 2);
        let queries = model.var_store().variables()["action_chunk_queries.weight"].shallow_clone();
        let run = || {
            tch::no_grad(|| {
                let prefix = model
                    .embed_prefix(
                        &b.images,
                        b.state.as_ref(),
                        &b.prompt_ids,
                        &b.prompt_mask,
                        None,
                    )
                    .unwrap();
                let (x, mask, n) = model.append_queries(&queries, &prefix.embeds, &prefix.mask);
                let hidden = model
                    .lm
                    .forward_with_tail(&x, &mask, &mut model.lm.new_cache(), n)
                    .unwrap();
                let p = prefix.embeds.size()[1];
                (
                    hidden.narrow(1, 0, p),
                    model.action_logits(&hidden.narrow(1, p, n)),
                )
            })
        };
        let (prefix_before, logits_before) = run();
        // Change the query of the last slot (the third action's gripper).
        tch::no_grad(|| {
            let _ = queries.narrow(0, 20, 1).g_add_scalar_(0.5);
        });
        let (prefix_after, logits_after) = run();
        let moved = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
        assert_eq!(
            moved(&prefix_before, &prefix_after),
            0.0,
            "the prefix never sees the action slots"
        );
        for slot in [0, 6, 13] {
            let earlier = moved(
                &logits_before.narrow(1, slot, 1),
                &logits_after.narrow(1, slot, 1),
            );
            assert!(earlier > 1e-6, "slot {slot} must see a later slot's query");
        }
    }

    #[test]
    fn padded_slots_carry_no_loss() {
        let model = chunk_model(3, 5);
        let b = fixed_batch(&model, 2);
        // Row 0 ends after two frames, row 1 after one.
        let pad = Tensor::from_slice(&[false, false, true, false, true, true]).view([2, 3]);
        let with = |tokens: &Tensor| VlaBatch {
            action_tokens: tokens.shallow_clone(),
            action_is_pad: Some(pad.shallow_clone()),
            ..batch_clone(&b)
        };
        let losses = |batch: &VlaBatch| {
            let out = tch::no_grad(|| model.forward_train(batch)).unwrap();
            let soft =
                crate::train::optim::soft_target_loss(&model, &out.action_logits, batch, 3.0)
                    .unwrap();
            (
                out.loss.double_value(&[]),
                soft.double_value(&[]),
                out.accuracy.double_value(&[]),
            )
        };
        let original = losses(&with(&b.action_tokens));
        // Other targets in the padded slots (row 0's third action, row 1's last two).
        let changed = b.action_tokens.copy();
        let _ = changed.get(0).narrow(0, 14, 6).fill_(400);
        let _ = changed.get(1).narrow(0, 7, 13).fill_(410);
        assert_eq!(losses(&with(&changed)), original, "padding is not learned");
        // The same change in a real slot does change the loss.
        let real = b.action_tokens.copy();
        let _ = real.get(0).narrow(0, 7, 6).fill_(400);
        let moved = losses(&with(&real));
        assert!(moved.0 != original.0 && moved.1 != original.1);
        // Without padding every slot counts.
        let unpadded = VlaBatch {
            action_tokens: changed,
            ..batch_clone(&b)
        };
        assert_ne!(losses(&unpadded).0, original.0);
    }

    #[test]
    fn a_few_steps_lower_the_chunk_loss() {
        let mut model = chunk_model(3, 6);
        let mut b = fixed_batch(&model, 2);
        b.action_is_pad =
            Some(Tensor::from_slice(&[false, false, true, false, false, false]).view([2, 3]));
        let mut step = crate::train::optim::TrainStep::new(
            &mut model,
            crate::train::optim::OptimConfig {
                lr: 3e-3,
                warmup_steps: 0,
                label_sigma_bins: 2.0,
                ..Default::default()
            },
        )
        .unwrap();
        let first = step.step(&model, &b).unwrap();
        let mut last = first.clone();
        for _ in 0..40 {
            last = step.step(&model, &b).unwrap();
        }
        assert!(last.loss < 0.5 * first.loss, "{first:?} -> {last:?}");
        assert!(last.accuracy > first.accuracy, "{first:?} -> {last:?}");
        // The queries are learned.
        let q = &model.var_store().variables()["action_chunk_queries.weight"];
        let fresh = chunk_model(3, 6);
        let q0 = &fresh.var_store().variables()["action_chunk_queries.weight"];
        assert!((q - q0).abs().max().double_value(&[]) > 0.0);
    }

    #[test]
    fn a_chunk_follows_a_decoded_subtask_as_teacher_forcing_places_it() {
        crate::test_setup();
        let mut cfg = VlaConfig::test_tiny_plan(2);
        cfg.action.chunk_size = 2;
        let model = VlaModel::new(cfg.clone(), NormStats::unit(&cfg), Device::Cpu, 8).unwrap();
        let b = fixed_batch(&model, 3);
        let generated = generate(&model, &b, &b.images, SubtaskInput::Decode);
        assert_eq!(generated.actions.size(), [3, 14]);
        let (ids, mask) = right_pad(&generated.subtasks, 0);
        let tf = VlaBatch {
            action_tokens: generated.actions.shallow_clone(),
            subtask: Some((ids, mask)),
            ..batch_clone(&b)
        };
        let out = tch::no_grad(|| model.forward_train(&tf)).unwrap();
        assert!(
            out.predicted.equal(&generated.actions),
            "{} vs {}",
            out.predicted,
            generated.actions
        );
    }

    /// The training step reads nothing back from the device (so a GPU never waits for the
    /// host), and a step whose loss is not finite leaves weights and moments untouched,
    /// decided on the device as well.
    #[test]
    fn steps_read_nothing_back_and_a_non_finite_step_changes_nothing() {
        use crate::train::optim::{AuxTargets, OptimConfig, TrainStep};
        let mut model = chunk_model(1, 5);
        let b = fixed_batch(&model, 2);
        let config = OptimConfig {
            lr: 1e-3,
            warmup_steps: 0,
            ..Default::default()
        };
        let mut step = TrainStep::new(&mut model, config.clone()).expect("a valid optimiser");
        let before = crate::host::reads();
        let pending: Vec<_> = (0..3)
            .map(|_| {
                step.step_with_targets(&model, &b, &AuxTargets::default())
                    .unwrap()
            })
            .collect();
        assert_eq!(crate::host::reads(), before, "a step read values back");
        let stats = pending[2].resolve().unwrap();
        assert_eq!(crate::host::reads(), before + 1, "resolving is one read");
        assert_eq!(stats.step, 2);
        assert!(stats.loss.is_finite() && !stats.skipped && stats.skipped_steps == 0);
        let first = pending[0].resolve().unwrap();
        assert!(first.loss != stats.loss, "the updates changed the loss");

        let snapshot = |m: &VlaModel| -> Vec<(String, Tensor)> {
            let mut v: Vec<(String, Tensor)> = m
                .var_store()
                .variables()
                .into_iter()
                .map(|(k, t)| (k, t.copy()))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let weights = snapshot(&model);
        let mut bad = batch_clone(&b);
        bad.state = b.state.as_ref().map(|s| s.full_like(f64::NAN));
        let skipped = step.step(&model, &bad).unwrap();
        assert!(skipped.skipped && !skipped.loss.is_finite(), "{skipped:?}");
        assert_eq!(skipped.skipped_steps, 1);
        for ((name, w), (_, now)) in weights.iter().zip(snapshot(&model)) {
            assert!(w.equal(&now), "{name} changed in a skipped step");
        }
        // The moments too: the next good step is the one a run without the bad step takes.
        let mut twin = chunk_model(1, 5);
        let mut twin_step = TrainStep::new(&mut twin, config).expect("a valid optimiser");
        for _ in 0..3 {
            twin_step.step(&twin, &b).unwrap();
        }
        twin_step.set_step(4);
        step.step(&model, &b).unwrap();
        twin_step.step(&twin, &b).unwrap();
        for ((name, w), (_, t)) in snapshot(&model).iter().zip(snapshot(&twin)) {
            assert!(
                w.equal(&t),
                "{name}: a skipped step left a trace in the moments"
            );
        }
    }
}
