//! One optimisation step: AdamW with decoupled weight decay (matrices only), linear warmup
//! then cosine decay of the learning rate, and gradient clipping by global norm.
//!
//! The training command owns the loop, data and logging; this module owns the update rule so
//! that every entry point trains the same way.

use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::error::{Result, VlaError};
use crate::layers::{DECAY_GROUP, NO_DECAY_GROUP};
use crate::model::{VlaBatch, VlaModel};

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
}

/// Owns the optimiser state for one model.
pub struct TrainStep {
    opt: nn::Optimizer,
    config: OptimConfig,
    step: usize,
}

impl std::fmt::Debug for TrainStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainStep")
            .field("config", &self.config)
            .field("step", &self.step)
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
        let mut opt = nn::AdamW {
            beta1: config.beta1,
            beta2: config.beta2,
            wd: config.weight_decay,
            eps: config.eps,
            amsgrad: false,
        }
        .build(model.var_store(), config.lr_at(0))?;
        opt.set_weight_decay_group(DECAY_GROUP, config.weight_decay);
        opt.set_weight_decay_group(NO_DECAY_GROUP, 0.0);
        if config.bf16_on_cuda && matches!(model.device(), Device::Cuda(_)) {
            model.set_compute_kind(Kind::BFloat16)?;
        }
        Ok(TrainStep {
            opt,
            config,
            step: 0,
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

    /// Forward, backward, clip, update. Non-finite losses or gradients skip the update.
    pub fn step(&mut self, model: &VlaModel, batch: &VlaBatch) -> Result<StepStats> {
        let lr = self.config.lr_at(self.step);
        self.opt.set_lr(lr);
        self.opt.zero_grad();
        let out = model.forward_train(batch)?;
        out.loss.backward();
        let loss = out.loss.double_value(&[]);
        let accuracy = out.accuracy.double_value(&[]);
        let grad_norm = self.clip_gradients();
        let skipped = !(loss.is_finite() && grad_norm.is_finite());
        if skipped {
            tracing::warn!(
                step = self.step,
                loss,
                grad_norm,
                "non-finite loss/gradients, update skipped"
            );
            self.opt.zero_grad();
        } else {
            self.opt.step();
        }
        let stats = StepStats {
            step: self.step,
            loss,
            accuracy,
            lr,
            grad_norm,
            skipped,
        };
        self.step += 1;
        Ok(stats)
    }

    /// Global L2 norm of all gradients, scaled down in place to `grad_clip_norm` if larger.
    fn clip_gradients(&self) -> f64 {
        tch::no_grad(|| {
            let grads: Vec<Tensor> = self
                .opt
                .trainable_variables()
                .iter()
                .map(Tensor::grad)
                .filter(Tensor::defined)
                .collect();
            if grads.is_empty() {
                return 0.0;
            }
            let norms: Vec<Tensor> = grads
                .iter()
                .map(|g| g.norm().to_kind(Kind::Float))
                .collect();
            let total = Tensor::stack(&norms, 0).norm().double_value(&[]);
            let max = self.config.grad_clip_norm;
            if max > 0.0 && total.is_finite() && total > max {
                let scale = max / (total + 1e-6);
                for mut g in grads {
                    let _ = g.g_mul_scalar_(scale);
                }
            }
            total
        })
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
