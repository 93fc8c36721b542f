//! Small building blocks shared by the components.
//!
//! They are thin wrappers over tch so that (a) parameter names match Hugging Face exactly
//! (`weight`, `bias`), (b) compute follows the activation dtype — the weights stay f32 masters
//! and are cast on use, which is how bf16 mixed precision is done here (tch cannot select the
//! bf16 autocast dtype) — and (c) biases and norm weights land in the no-weight-decay group.

use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

/// Optimizer parameter group with weight decay (matrices, embeddings).
pub const DECAY_GROUP: usize = 0;
/// Optimizer parameter group without weight decay (biases, norms, position embeddings).
pub const NO_DECAY_GROUP: usize = 1;

/// Standard deviation of the normal init of embeddings, as HF `initializer_range`.
pub const INIT_STD: f64 = 0.02;

pub(crate) fn normal_init() -> Init {
    Init::Randn {
        mean: 0.0,
        stdev: INIT_STD,
    }
}

/// LeCun-normal init (`std = 1/sqrt(fan_in)`) for linear layers. HF's fixed N(0, 0.02) suits
/// wide pretrained models; trained from scratch at widths of 128–256 it leaves attention
/// almost uniform and, on a toy "where is the block" task, the model ignored the image for
/// 600+ steps, while with this init it localised within ~150 steps.
pub(crate) fn lecun_init(fan_in: usize) -> Init {
    Init::Randn {
        mean: 0.0,
        stdev: 1.0 / (fan_in.max(1) as f64).sqrt(),
    }
}

/// `y = x W^T + b`, weight `[out, in]` like `torch.nn.Linear`, optionally with a LoRA
/// adapter.
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub lora: Option<Lora>,
}

/// A low-rank adapter `scale · B A` beside a frozen weight: `lora_A.weight` `[rank, in]`,
/// `lora_B.weight` `[out, rank]` (PEFT's layout, without its adapter-name level).
#[derive(Debug)]
pub struct Lora {
    pub a: Tensor,
    pub b: Tensor,
    pub scale: f64,
}

impl Linear {
    pub fn new(p: &Path, in_dim: usize, out_dim: usize, bias: bool) -> Self {
        let weight = p.set_group(DECAY_GROUP).var(
            "weight",
            &[out_dim as i64, in_dim as i64],
            lecun_init(in_dim),
        );
        let bias = bias.then(|| p.set_group(NO_DECAY_GROUP).zeros("bias", &[out_dim as i64]));
        Linear {
            weight,
            bias,
            lora: None,
        }
    }

    /// A layer whose weight and bias are frozen (not trained, no optimiser state; their
    /// values come from a pretrained model), with a trainable adapter of `(rank, scale)`
    /// when given. `A` is Kaiming-uniform as PEFT's (`a = √5`: bound `1/√in`), `B` zero.
    pub fn frozen(
        p: &Path,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        adapter: Option<(usize, f64)>,
    ) -> Self {
        let weight = p.zeros_no_train("weight", &[out_dim as i64, in_dim as i64]);
        let bias = bias.then(|| p.zeros_no_train("bias", &[out_dim as i64]));
        let lora = adapter.map(|(rank, scale)| {
            let bound = 1.0 / (in_dim.max(1) as f64).sqrt();
            Lora {
                a: p.sub("lora_A").set_group(DECAY_GROUP).var(
                    "weight",
                    &[rank as i64, in_dim as i64],
                    Init::Uniform {
                        lo: -bound,
                        up: bound,
                    },
                ),
                b: p.sub("lora_B")
                    .set_group(DECAY_GROUP)
                    .zeros("weight", &[out_dim as i64, rank as i64]),
                scale,
            }
        });
        Linear { weight, bias, lora }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let y = if kind == self.weight.kind() {
            // Fast path (f32): no casts, which matters for per-token decoding overhead.
            x.linear(&self.weight, self.bias.as_ref())
        } else {
            let w = self.weight.to_kind(kind);
            let b = self.bias.as_ref().map(|b| b.to_kind(kind));
            x.linear(&w, b.as_ref())
        };
        match &self.lora {
            None => y,
            Some(l) => {
                let low = x
                    .linear(&l.a.to_kind(kind), None::<Tensor>)
                    .linear(&l.b.to_kind(kind), None::<Tensor>);
                y + low * l.scale
            }
        }
    }
}

/// LayerNorm with affine parameters; statistics computed in f32 for stability under bf16.
#[derive(Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(p: &Path, dim: usize, eps: f64) -> Self {
        let p = p.set_group(NO_DECAY_GROUP);
        LayerNorm {
            weight: p.ones("weight", &[dim as i64]),
            bias: p.zeros("bias", &[dim as i64]),
            eps,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let dim = self.weight.size()[0];
        if kind == Kind::Float {
            return x.layer_norm([dim], Some(&self.weight), Some(&self.bias), self.eps, false);
        }
        x.to_kind(Kind::Float)
            .layer_norm([dim], Some(&self.weight), Some(&self.bias), self.eps, false)
            .to_kind(kind)
    }
}

/// Llama RMSNorm (`weight * x / rms(x)`), computed in f32 as in HF.
#[derive(Debug)]
pub struct RmsNorm {
    pub weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(p: &Path, dim: usize, eps: f64) -> Self {
        RmsNorm {
            weight: p.set_group(NO_DECAY_GROUP).ones("weight", &[dim as i64]),
            eps,
        }
    }

    /// Frozen gain (a pretrained model's, under LoRA).
    pub fn frozen(p: &Path, dim: usize, eps: f64) -> Self {
        RmsNorm {
            weight: p.ones_no_train("weight", &[dim as i64]),
            eps,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        if kind == Kind::Float {
            // One fused ATen op instead of six.
            let dim = self.weight.size()[0];
            return x.rms_norm([dim], Some(&self.weight), self.eps);
        }
        let xf = x.to_kind(Kind::Float);
        let rms = (xf.square().mean_dim(-1i64, true, Kind::Float) + self.eps).rsqrt();
        ((xf * rms).to_kind(kind)) * self.weight.to_kind(kind)
    }
}

/// Walks a dotted HF name (`encoder.layer.3`) down a var-store path (tch forbids dots).
pub(crate) fn sub_path<'a>(p: &Path<'a>, dotted: &str) -> Path<'a> {
    dotted.split('.').fold(p.clone(), |acc, part| acc.sub(part))
}
