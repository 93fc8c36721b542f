//! One optimisation step: AdamW with decoupled weight decay (matrices only), linear warmup
//! then cosine decay of the learning rate, and gradient clipping by global norm.
//!
//! The training command owns the loop, data and logging; this module owns the update rule so
//! that every entry point trains the same way.

use serde::{Deserialize, Serialize};
use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::error::{Result, VlaError};
use crate::model::layers::{DECAY_GROUP, NO_DECAY_GROUP};
use crate::model::{TextBatch, VlaBatch, VlaModel};
use crate::train::distributed::DataParallel;

/// Optimiser and schedule settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Peak learning rate (reached at the end of warmup).
    pub lr: f64,
    /// Final learning rate as a fraction of `lr`.
    pub min_lr_ratio: f64,
    pub warmup_steps: usize,
    /// Length of the schedule; steps beyond it stay at the minimum LR.
    pub total_steps: usize,
    /// AdamW decoupled weight decay, applied to weight matrices and embeddings only.
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Clip the global gradient L2 norm to this value (<= 0 disables clipping).
    pub grad_clip_norm: f64,
    /// Use bf16 activations on CUDA (ignored on CPU, where bf16 matmuls are slow).
    pub bf16_on_cuda: bool,
    /// Width (in bins) of Gaussian soft targets over neighbouring action bins ("HL-Gauss",
    /// Farebrother et al. 2024); 0 trains on hard one-hot targets. Plain cross-entropy gives
    /// a prediction one bin off no credit at all, which makes small-data training of
    /// fine-grained bins slow; the soft targets keep the bin ordering. The binary gripper
    /// always uses hard targets.
    pub label_sigma_bins: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            lr: 3e-4,
            min_lr_ratio: 0.1,
            warmup_steps: 100,
            total_steps: 5_000,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            grad_clip_norm: 1.0,
            bf16_on_cuda: true,
            label_sigma_bins: 0.0,
        }
    }
}

impl OptimConfig {
    /// Learning rate at optimisation step `step` (0-based): linear warmup from `lr/warmup`,
    /// then cosine decay to `lr * min_lr_ratio` at `total_steps`.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        let min_lr = self.lr * self.min_lr_ratio;
        min_lr + 0.5 * (self.lr - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// Metrics of one step.
#[derive(Clone, Debug, Serialize)]
pub struct StepStats {
    /// Index of the step just taken (0-based).
    pub step: usize,
    pub loss: f64,
    /// Action-token accuracy of the batch (before the update).
    pub accuracy: f64,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// The update was skipped because the loss or gradients were not finite.
    pub skipped: bool,
    /// Steps skipped so far by this optimiser, this one included.
    pub skipped_steps: u64,
    /// The weighted auxiliary target (regression) loss, when there was one.
    pub target_loss: Option<f64>,
    /// The weighted auxiliary heat-map loss, when there was one.
    pub map_loss: Option<f64>,
    /// The weighted subgoal gate loss, when there was one.
    pub subgoal_loss: Option<f64>,
    /// The sub-task tokens' cross-entropy (unweighted) and token accuracy, with a plan.
    pub subtask_loss: Option<f64>,
    pub subtask_accuracy: Option<f64>,
    /// Co-training: the vision-language answers' cross-entropy (unweighted) and token
    /// accuracy, when the step had vision-language examples.
    pub vqa_loss: Option<f64>,
    pub vqa_accuracy: Option<f64>,
}

/// A step's statistics as device scalars (`f64`), read back by [`PendingStats::resolve`] in
/// one transfer: the training loop resolves only the steps it logs.
#[derive(Debug)]
pub struct PendingStats {
    step: usize,
    lr: f64,
    loss: Tensor,
    accuracy: Tensor,
    grad_norm: Tensor,
    skipped: Tensor,
    skipped_steps: Tensor,
    target_loss: Option<Tensor>,
    map_loss: Option<Tensor>,
    subgoal_loss: Option<Tensor>,
    subtask_loss: Option<Tensor>,
    subtask_accuracy: Option<Tensor>,
    vqa_loss: Option<Tensor>,
    vqa_accuracy: Option<Tensor>,
}

impl PendingStats {
    /// Reads the statistics back (one host read: it waits for the step to finish).
    pub fn resolve(&self) -> Result<StepStats> {
        let optional = [
            &self.target_loss,
            &self.map_loss,
            &self.subgoal_loss,
            &self.subtask_loss,
            &self.subtask_accuracy,
            &self.vqa_loss,
            &self.vqa_accuracy,
        ];
        let mut all = vec![
            self.loss.shallow_clone(),
            self.accuracy.shallow_clone(),
            self.grad_norm.shallow_clone(),
            self.skipped.shallow_clone(),
            self.skipped_steps.shallow_clone(),
        ];
        all.extend(
            optional
                .iter()
                .filter_map(|t| t.as_ref().map(Tensor::shallow_clone)),
        );
        let values = crate::host::f64_values(&Tensor::stack(&all, 0))?;
        let mut rest = values[5..].iter().copied();
        let mut next = |t: &Option<Tensor>| t.as_ref().and_then(|_| rest.next());
        Ok(StepStats {
            step: self.step,
            loss: values[0],
            accuracy: values[1],
            lr: self.lr,
            grad_norm: values[2],
            skipped: values[3] != 0.0,
            skipped_steps: values[4] as u64,
            target_loss: next(&self.target_loss),
            map_loss: next(&self.map_loss),
            subgoal_loss: next(&self.subgoal_loss),
            subtask_loss: next(&self.subtask_loss),
            subtask_accuracy: next(&self.subtask_accuracy),
            vqa_loss: next(&self.vqa_loss),
            vqa_accuracy: next(&self.vqa_accuracy),
        })
    }
}

/// Targets of the auxiliary grounding losses for one batch (see
/// [`crate::train::data::TrainingData::target_locations`] and `target_pixels`).
#[derive(Debug, Default)]
pub struct AuxTargets {
    /// `[B, H, 2]` table (x, y) and `[B, H]` mask, for the regression loss.
    pub locations: Option<(Tensor, Tensor)>,
    /// `[B, H, 2]` front-image (x, y) in `[0, 1]` and `[B, H]` mask, for the heat-map loss.
    pub pixels: Option<(Tensor, Tensor)>,
    /// Weight of the heat-map loss.
    pub map_weight: f64,
    /// The same in the wrist camera, and its weight.
    pub wrist_pixels: Option<(Tensor, Tensor)>,
    pub wrist_map_weight: f64,
    /// `[B]` each frame's subgoal class (a head, or the number of heads for "hold"; -1:
    /// unknown), for the subgoal gate's loss.
    pub subgoals: Option<Tensor>,
    /// Co-training (RT-2): vision-language examples learned in the same step.
    pub text: Option<TextTargets>,
}

impl AuxTargets {
    /// The targets on `device`, copied without blocking (see [`crate::host::upload`]).
    pub fn to_device(&self, device: Device) -> AuxTargets {
        let up = |t: &Tensor| crate::host::upload(t, device);
        let pair = |p: &Option<(Tensor, Tensor)>| p.as_ref().map(|(a, b)| (up(a), up(b)));
        AuxTargets {
            locations: pair(&self.locations),
            pixels: pair(&self.pixels),
            map_weight: self.map_weight,
            wrist_pixels: pair(&self.wrist_pixels),
            wrist_map_weight: self.wrist_map_weight,
            subgoals: self.subgoals.as_ref().map(up),
            text: self.text.as_ref().map(|t| TextTargets {
                batch: t.batch.to_device(device),
                weight: t.weight,
                pixels: pair(&t.pixels),
            }),
        }
    }
}

/// Vision-language examples of a co-training step.
#[derive(Debug)]
pub struct TextTargets {
    pub batch: TextBatch,
    /// Weight of their losses against the robot frames' (their share of the step's rows).
    pub weight: f64,
    /// `[B, H, 2]` front-image (x, y) in `[0, 1]` and `[B, H]` mask: where a pointing
    /// question's answer is, for the heat-map loss of the head that reads its phrase (with
    /// the robot frames' `map_weight`): vision-language data teaching the grounding heads
    /// words the robot data never had.
    pub pixels: Option<(Tensor, Tensor)>,
}

/// The sum of the loss terms that are there (`None` when none is).
fn sum_present<'a>(terms: impl IntoIterator<Item = Option<&'a Tensor>>) -> Option<Tensor> {
    terms.into_iter().flatten().fold(None, |sum, t| {
        Some(sum.map_or_else(|| t.shallow_clone(), |s| s + t))
    })
}

/// Cross-entropy against Gaussian soft targets centred on the true bins (hard targets for
/// the gripper dimension). A chunk's tokens (`[B, K·A]`, the gripper at every action's
/// gripper dimension) are averaged over its real slots, as the plain cross-entropy is.
pub(crate) fn soft_target_loss(
    model: &VlaModel,
    logits: &Tensor,
    batch: &VlaBatch,
    sigma: f64,
) -> Result<Tensor> {
    let bins = model.config().action.num_bins as i64;
    let dims = model.config().action.action_dim as i64;
    let device = logits.device();
    let target = (batch.action_tokens.to_device(device) - model.action_tokenizer().token_offset())
        .to_kind(Kind::Float)
        .unsqueeze(-1); // [B, S, 1]
    let (b, steps) = (target.size()[0], target.size()[1]);
    let grid = Tensor::arange(bins, (Kind::Float, device)).view([1, 1, bins]);
    let mut weights = (-(grid - &target).square() / (2.0 * sigma * sigma)).exp();
    if let Some(g) = model.config().action.gripper_dim {
        // Each step's own one-hot: where the mask is 0 it is multiplied away exactly, so the
        // one-action head's weights are the same numbers as with the gripper's alone.
        let hard = target.squeeze_dim(-1).to_kind(Kind::Int64);
        let one_hot = hard.one_hot(bins).to_kind(Kind::Float);
        let mask = Tensor::zeros([1, steps, 1], (Kind::Float, device));
        for step in (g as i64..steps).step_by(dims.max(1) as usize) {
            let _ = mask.narrow(1, step, 1).fill_(1.0);
        }
        weights = &weights * (1.0 - &mask) + one_hot * &mask;
    }
    let weights = &weights / weights.sum_dim_intlist(-1, true, Kind::Float);
    let log_probs = logits.to_kind(Kind::Float).log_softmax(-1, Kind::Float);
    let per_token = (weights * log_probs).sum_dim_intlist(-1, false, Kind::Float);
    Ok(
        match model.action_token_weights(batch.action_is_pad.as_ref(), b)? {
            None => -per_token.mean(Kind::Float),
            Some(w) => -(per_token * &w).sum(Kind::Float) / w.sum(Kind::Float).clamp_min(1.0),
        },
    )
}

/// One trainable tensor with its AdamW moments.
struct Param {
    name: String,
    tensor: Tensor,
    decay: bool,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

/// Owns the optimiser state for one model.
///
/// AdamW is implemented here rather than through `tch::nn::Optimizer` so that its moments can
/// be saved and restored by name: `--resume` then continues bit for bit where a run stopped.
pub struct TrainStep {
    params: Vec<Param>,
    config: OptimConfig,
    step: usize,
    /// Averages gradients over ranks during backward (data-parallel runs): the group, and
    /// DDP's reducer over `params`.
    data_parallel: Option<(DataParallel, vla_dist::Reducer)>,
    /// Steps whose update was skipped (non-finite), counted on the device.
    skipped_steps: Tensor,
}

impl std::fmt::Debug for TrainStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainStep")
            .field("config", &self.config)
            .field("step", &self.step)
            .field("params", &self.params.len())
            .finish()
    }
}

impl TrainStep {
    /// Builds AdamW over the model's parameters; switches the model to bf16 activations when
    /// it lives on CUDA and `bf16_on_cuda` is set.
    pub fn new(model: &mut VlaModel, config: OptimConfig) -> Result<Self> {
        if config.lr <= 0.0 || !config.lr.is_finite() {
            return Err(VlaError::invalid(
                "lr",
                format!("{} must be > 0", config.lr),
            ));
        }
        let params = {
            let vars = model
                .var_store()
                .variables_
                .lock()
                .map_err(|_| VlaError::Input("variable store lock poisoned".into()))?;
            let group_of: std::collections::HashMap<usize, usize> = vars
                .trainable_variables
                .iter()
                .map(|v| (v.tensor.data_ptr() as usize, v.group))
                .collect();
            let mut params: Vec<Param> = vars
                .named_variables
                .iter()
                .filter_map(|(name, t)| {
                    let group = *group_of.get(&(t.data_ptr() as usize))?;
                    Some(Param {
                        name: name.clone(),
                        tensor: t.shallow_clone(),
                        decay: group == DECAY_GROUP,
                        exp_avg: t.zeros_like(),
                        exp_avg_sq: t.zeros_like(),
                    })
                })
                .collect();
            params.sort_by(|a, b| a.name.cmp(&b.name));
            if params.len() != vars.trainable_variables.len() {
                return Err(VlaError::Input(format!(
                    "optimiser found {} named trainable parameters of {}",
                    params.len(),
                    vars.trainable_variables.len()
                )));
            }
            params
        };
        debug_assert_ne!(DECAY_GROUP, NO_DECAY_GROUP);
        if config.bf16_on_cuda && matches!(model.device(), Device::Cuda(_)) {
            model.set_compute_kind(Kind::BFloat16)?;
        }
        Ok(TrainStep {
            params,
            config,
            step: 0,
            data_parallel: None,
            skipped_steps: Tensor::zeros([], (Kind::Int64, model.device())),
        })
    }

    pub fn config(&self) -> &OptimConfig {
        &self.config
    }

    /// Number of steps taken so far.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// Resumes the schedule at `step` (e.g. after reloading weights).
    pub fn set_step(&mut self, step: usize) {
        self.step = step;
    }

    /// From now on, gradients are averaged over `dp`'s ranks before every update, by DDP's
    /// reducer during backward.
    pub fn set_data_parallel(&mut self, dp: DataParallel) -> Result<()> {
        let params: Vec<Tensor> = self
            .params
            .iter()
            .map(|p| p.tensor.shallow_clone())
            .collect();
        let reducer = dp.reducer(&params)?;
        self.data_parallel = Some((dp, reducer));
        Ok(())
    }

    /// Overwrites the optimiser moments with rank 0's.
    pub fn broadcast_state(&self, dp: &DataParallel) -> Result<()> {
        let moments: Vec<Tensor> = self
            .params
            .iter()
            .flat_map(|p| [p.exp_avg.shallow_clone(), p.exp_avg_sq.shallow_clone()])
            .collect();
        dp.broadcast_from_main(&moments)
    }

    fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.tensor.zero_grad();
        }
    }

    /// Forward, backward, clip, update, and the step's statistics read back. Non-finite losses
    /// or gradients skip the update.
    pub fn step(&mut self, model: &VlaModel, batch: &VlaBatch) -> Result<StepStats> {
        self.step_with_targets(model, batch, &AuxTargets::default())?
            .resolve()
    }

    /// As [`Self::step`], adding the auxiliary grounding losses whose targets are given
    /// (when the model has grounding heads), and without reading anything back: the
    /// statistics stay on the device until [`PendingStats::resolve`], and whether the update
    /// applies (finite loss and gradients) is decided on the device too. On a GPU the host
    /// can then queue the next steps while this one runs.
    pub fn step_with_targets(
        &mut self,
        model: &VlaModel,
        batch: &VlaBatch,
        targets: &AuxTargets,
    ) -> Result<PendingStats> {
        let lr = self.config.lr_at(self.step);
        self.zero_grad();
        let out = model.forward_train(batch)?;
        let regression = targets
            .locations
            .as_ref()
            .and_then(|(xy, mask)| model.target_loss(&out, xy, mask));
        let front_map = targets.pixels.as_ref().and_then(|(px, m)| {
            model.target_map_loss(
                out.grounding_log_maps.as_ref(),
                (px, m),
                0,
                targets.map_weight,
            )
        });
        let wrist_map = targets.wrist_pixels.as_ref().and_then(|(px, m)| {
            let maps = out.grounding_log_maps.as_ref();
            model.target_map_loss(maps, (px, m), 1, targets.wrist_map_weight)
        });
        let map = sum_present([front_map.as_ref(), wrist_map.as_ref()]);
        let subgoal = targets
            .subgoals
            .as_ref()
            .and_then(|labels| model.subgoal_loss(&out, labels));
        let plan = out
            .subtask_loss
            .as_ref()
            .map(|l| l * model.config().plan.weight);
        let text = match &targets.text {
            Some(t) => Some((model.forward_text(&t.batch)?, t)),
            None => None,
        };
        let text_loss = text.as_ref().map(|(out, t)| {
            let pointing = t.pixels.as_ref().and_then(|(px, m)| {
                let maps = out.grounding_log_maps.as_ref();
                model.target_map_loss(maps, (px, m), 0, targets.map_weight)
            });
            match pointing {
                Some(p) => (&out.loss + p) * t.weight,
                None => &out.loss * t.weight,
            }
        });
        let aux = sum_present([
            regression.as_ref(),
            map.as_ref(),
            subgoal.as_ref(),
            plan.as_ref(),
            text_loss.as_ref(),
        ]);
        let train_loss = if self.config.label_sigma_bins > 0.0 {
            soft_target_loss(
                model,
                &out.action_logits,
                batch,
                self.config.label_sigma_bins,
            )?
        } else {
            out.loss.shallow_clone()
        };
        let train_loss = match &aux {
            Some(a) => train_loss + a,
            None => train_loss,
        };
        if let Some((_, reducer)) = &self.data_parallel {
            reducer.prepare_for_backward(std::slice::from_ref(&train_loss))?;
        }
        // A failed collective inside backward (a peer gone, a timeout) is an error, not a panic.
        // (c10d's message then names the peer, e.g. gloo's "Connection reset by peer".)
        train_loss.f_backward()?;
        if let Some((dp, _)) = &self.data_parallel {
            // The gradients are the global batch's mean now (the reducer averaged them
            // during backward); the logged loss and accuracy become the global batch's too
            // (the other logged losses stay this rank's).
            dp.average(&[out.loss.detach(), out.accuracy.detach()])?;
        }
        let (grad_norm, finite) = tch::no_grad(|| self.clip_gradients(&out.loss));
        self.adamw_update(lr, &finite);
        self.zero_grad();
        let _ = self
            .skipped_steps
            .g_add_(&finite.logical_not().to_kind(Kind::Int64));
        let scalar = |t: &Tensor| t.detach().to_kind(Kind::Double);
        let stats = PendingStats {
            step: self.step,
            lr,
            loss: scalar(&out.loss),
            accuracy: scalar(&out.accuracy),
            grad_norm: scalar(&grad_norm),
            skipped: scalar(&finite.logical_not()),
            skipped_steps: scalar(&self.skipped_steps),
            target_loss: regression.as_ref().map(scalar),
            map_loss: map.as_ref().map(scalar),
            subgoal_loss: subgoal.as_ref().map(scalar),
            subtask_loss: out.subtask_loss.as_ref().map(scalar),
            subtask_accuracy: out
                .subtask_accuracy
                .as_ref()
                .map(|(tokens, _)| scalar(tokens)),
            vqa_loss: text.as_ref().map(|(out, _)| scalar(&out.loss)),
            vqa_accuracy: text.as_ref().map(|(out, _)| scalar(&out.token_accuracy)),
        };
        self.step += 1;
        Ok(stats)
    }

    /// AdamW (Loshchilov & Hutter): decoupled decay, bias-corrected moments. Where `finite`
    /// (a boolean scalar on the device) is false, parameters and moments stay as they were.
    fn adamw_update(&mut self, lr: f64, finite: &Tensor) {
        let c = &self.config;
        let t = (self.step + 1) as i32;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2 = 1.0 - c.beta2.powi(t);
        tch::no_grad(|| {
            // Factors that are the update's where it applies and leave values alone where not.
            let keep = |factor: f64| Tensor::where_scalar(finite, factor, 1.0);
            let (beta1, beta2) = (keep(c.beta1), keep(c.beta2));
            let decay = keep(1.0 - lr * c.weight_decay);
            let apply = finite.to_kind(Kind::Float);
            for p in &mut self.params {
                let g = p.tensor.grad();
                if !g.defined() {
                    continue;
                }
                // A skipped step's gradient may hold inf/NaN: it must not reach the moments.
                let g = g.masked_fill(&finite.logical_not(), 0.0);
                if p.decay && c.weight_decay > 0.0 {
                    let _ = p.tensor.g_mul_(&decay.to_kind(p.tensor.kind()));
                }
                let _ = p.exp_avg.g_mul_(&beta1.to_kind(p.exp_avg.kind()));
                let _ = p.exp_avg.g_add_(&(&g * (1.0 - c.beta1)));
                let _ = p.exp_avg_sq.g_mul_(&beta2.to_kind(p.exp_avg_sq.kind()));
                let _ = p.exp_avg_sq.g_add_(&(&g * &g * (1.0 - c.beta2)));
                let denom = (&p.exp_avg_sq / bias2).sqrt() + c.eps;
                let update = (&p.exp_avg / &denom) * (lr / bias1);
                let _ = p.tensor.g_sub_(&(update * apply.to_kind(p.tensor.kind())));
            }
        });
    }
    /// Saves the optimiser moments (safetensors, `exp_avg.NAME` / `exp_avg_sq.NAME`).
    pub fn save_state(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut named: Vec<(String, Tensor)> = Vec::with_capacity(2 * self.params.len());
        for p in &self.params {
            named.push((
                format!("exp_avg.{}", p.name),
                p.exp_avg.to_device(Device::Cpu),
            ));
            named.push((
                format!("exp_avg_sq.{}", p.name),
                p.exp_avg_sq.to_device(Device::Cpu),
            ));
        }
        let tmp = path.with_extension("safetensors.tmp");
        Tensor::write_safetensors(&named, &tmp).map_err(|e| VlaError::checkpoint(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| VlaError::checkpoint(path, e))?;
        Ok(())
    }

    /// Restores moments written by [`Self::save_state`]; every parameter must be present
    /// with its shape.
    pub fn load_state(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let named = Tensor::read_safetensors(path).map_err(|e| VlaError::checkpoint(path, e))?;
        let map: std::collections::HashMap<String, Tensor> = named.into_iter().collect();
        tch::no_grad(|| {
            for p in &mut self.params {
                for (prefix, dst) in [
                    ("exp_avg", &mut p.exp_avg),
                    ("exp_avg_sq", &mut p.exp_avg_sq),
                ] {
                    let key = format!("{prefix}.{}", p.name);
                    let src = map.get(&key).ok_or_else(|| {
                        VlaError::checkpoint(path, format!("missing optimiser tensor {key}"))
                    })?;
                    if src.size() != dst.size() {
                        return Err(VlaError::checkpoint(
                            path,
                            format!(
                                "{key} has shape {:?}, expected {:?}",
                                src.size(),
                                dst.size()
                            ),
                        ));
                    }
                    dst.copy_(&src.to_device(dst.device()).to_kind(dst.kind()));
                }
            }
            Ok(())
        })
    }

    /// Scales the gradients to a global norm of at most `grad_clip_norm`, as
    /// `torch.nn.utils.clip_grad_norm_` does (always multiplying by a coefficient clamped to 1,
    /// so nothing is read back). Returns the norm before clipping and whether `loss` and the
    /// gradients are finite, both as device scalars.
    fn clip_gradients(&self, loss: &Tensor) -> (Tensor, Tensor) {
        let grads: Vec<Tensor> = self
            .params
            .iter()
            .map(|p| p.tensor.grad())
            .filter(Tensor::defined)
            .collect();
        let device = loss.device();
        let total = if grads.is_empty() {
            Tensor::zeros([], (Kind::Float, device))
        } else {
            let norms: Vec<Tensor> = grads
                .iter()
                .map(|g| g.norm().to_kind(Kind::Float))
                .collect();
            Tensor::stack(&norms, 0).norm()
        };
        let finite = loss.detach().isfinite().logical_and(&total.isfinite());
        let max = self.config.grad_clip_norm;
        if max > 0.0 && !grads.is_empty() {
            // In f64, as the scale was computed on the host before this moved to the device
            // (the gradients take it as f32): a run steps to the bit as it did then.
            let coef = (max / (total.to_kind(Kind::Double) + 1e-6)).clamp_max(1.0);
            for mut g in grads {
                let _ = g.g_mul_(&coef.to_kind(g.kind()));
            }
        }
        (total, finite)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays() {
        let c = OptimConfig {
            lr: 1.0,
            min_lr_ratio: 0.1,
            warmup_steps: 10,
            total_steps: 110,
            ..Default::default()
        };
        assert!((c.lr_at(0) - 0.1).abs() < 1e-12);
        assert!((c.lr_at(9) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(10) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(60) - 0.55).abs() < 1e-9);
        assert!((c.lr_at(110) - 0.1).abs() < 1e-12);
        assert!((c.lr_at(1000) - 0.1).abs() < 1e-12);
        assert!(c.lr_at(30) > c.lr_at(50));
    }
}
