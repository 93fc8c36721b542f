//! Two-layer GELU MLP bridging widths (`fc1`, GELU, `fc2`), as the LLaVA/OpenVLA projector.
//!
//! Used twice: ViT width → LM width for patch tokens (`projector.*`), and proprioceptive
//! state → LM width for the single state token (`proprio_projector.*`).

use tch::nn::Path;
use tch::Tensor;

use crate::model::layers::Linear;

#[derive(Debug)]
pub struct MlpProjector {
    fc1: Linear,
    fc2: Linear,
}

impl MlpProjector {
    pub fn new(p: &Path, in_dim: usize, hidden: usize, out_dim: usize) -> Self {
        MlpProjector {
            fc1: Linear::new(&p.sub("fc1"), in_dim, hidden, true),
            fc2: Linear::new(&p.sub("fc2"), hidden, out_dim, true),
        }
    }

    /// `[..., in_dim]` → `[..., out_dim]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.fc2.forward(&self.fc1.forward(x).gelu("none"))
    }
}
