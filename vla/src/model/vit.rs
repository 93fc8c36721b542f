//! ViT image encoder with Hugging Face `ViTModel` parameter names.
//!
//! Pre-LayerNorm transformer over non-overlapping patches. Position embeddings are learned on
//! the native grid and resampled (bicubic) when an image of another resolution comes in, so a
//! model trained at 128×128 can still be run at, say, 224×224.

use tch::nn::Path;
use tch::{Device, Kind, Tensor};

use crate::config::VisionConfig;
use crate::model::layers::{
    lecun_init, normal_init, sub_path, LayerNorm, Linear, DECAY_GROUP, NO_DECAY_GROUP,
};

/// `[1, grid*grid, d]` 2-D sine-cosine position table: the first half of the channels
/// encodes the row, the second half the column, each with `d/4` geometric frequencies.
pub fn sincos_2d(grid: i64, d: i64) -> Tensor {
    let opts = (Kind::Float, Device::Cpu);
    let quarter = d / 4;
    let omega = (Tensor::arange(quarter, opts) / quarter.max(1) as f64 * (-(10_000f64.ln()))).exp();
    let pos = Tensor::arange(grid, opts);
    let angles = pos.unsqueeze(1) * omega.unsqueeze(0); // [G, d/4]
    let enc = Tensor::cat(&[angles.sin(), angles.cos()], 1); // [G, d/2]
    let half = enc.size()[1];
    let rows = enc.unsqueeze(1).expand([grid, grid, half], false);
    let cols = enc.unsqueeze(0).expand([grid, grid, half], false);
    let mut table = Tensor::cat(&[rows, cols], 2).reshape([1, grid * grid, 2 * half]);
    if 2 * half < d {
        // Widths not divisible by 4: pad the remaining channels with zeros.
        table = Tensor::cat(
            &[table, Tensor::zeros([1, grid * grid, d - 2 * half], opts)],
            2,
        );
    }
    table
}

/// `embeddings.patch_embeddings.stem.N`: a 3x3 stride-2 convolution followed by GELU.
#[derive(Debug)]
pub struct StemConv {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl StemConv {
    fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        x.conv2d(
            &self.weight.to_kind(kind),
            Some(&self.bias.to_kind(kind)),
            [2, 2],
            [1, 1],
            [1, 1],
            1,
        )
        .gelu("none")
    }
}

/// `embeddings.*`: optional conv stem, conv patch projection, optional CLS token, learned
/// position embeddings.
#[derive(Debug)]
pub struct VitEmbeddings {
    /// Early convolutions (empty for the plain HF patchify stem).
    pub stem: Vec<StemConv>,
    /// `embeddings.patch_embeddings.projection.{weight,bias}`, weight `[D, C, P, P]`.
    pub projection_weight: Tensor,
    pub projection_bias: Tensor,
    /// `embeddings.cls_token` `[1, 1, D]` (only with `use_cls_token`).
    pub cls_token: Option<Tensor>,
    /// `embeddings.position_embeddings` `[1, (1 +) G*G, D]` for the native grid `G`.
    pub position_embeddings: Tensor,
    /// Kernel and stride of the projection, in stem-output pixels.
    patch_size: i64,
    grid: i64,
}

impl VitEmbeddings {
    pub fn new(p: &Path, cfg: &VisionConfig) -> Self {
        let d = cfg.hidden_size as i64;
        let grid = (cfg.image_size / cfg.patch_size) as i64;
        let stem_path = sub_path(p, "patch_embeddings.stem");
        let mut in_channels = cfg.num_channels;
        let stem = cfg
            .stem_channels
            .iter()
            .enumerate()
            .map(|(i, &out)| {
                let q = stem_path.sub(i);
                let conv = StemConv {
                    weight: q.set_group(DECAY_GROUP).var(
                        "weight",
                        &[out as i64, in_channels as i64, 3, 3],
                        // He-style gain for the GELU that follows.
                        tch::nn::Init::Randn {
                            mean: 0.0,
                            stdev: (2.0 / (9 * in_channels) as f64).sqrt(),
                        },
                    ),
                    bias: q.set_group(NO_DECAY_GROUP).zeros("bias", &[out as i64]),
                };
                in_channels = out;
                conv
            })
            .collect::<Vec<_>>();
        // The projection covers what is left of the patch after the stem's downsampling.
        let ps = (cfg.patch_size >> stem.len()) as i64;
        let proj = sub_path(p, "patch_embeddings.projection");
        let fan_in = in_channels * (ps * ps) as usize;
        let projection_weight = proj.set_group(DECAY_GROUP).var(
            "weight",
            &[d, in_channels as i64, ps, ps],
            lecun_init(fan_in),
        );
        let projection_bias = proj.set_group(NO_DECAY_GROUP).zeros("bias", &[d]);
        let np = p.set_group(NO_DECAY_GROUP);
        let cls_token = cfg
            .use_cls_token
            .then(|| np.var("cls_token", &[1, 1, d], normal_init()));
        // Learned, but initialised to a 2-D sine-cosine table (as MAE) rather than HF's
        // N(0, 0.02): from scratch, the small random init leaves patch tokens nearly
        // position-blind and training plateaus before it learns *where* things are.
        let mut table = sincos_2d(grid, d);
        if cfg.use_cls_token {
            table = Tensor::cat(
                &[Tensor::zeros([1, 1, d], (Kind::Float, Device::Cpu)), table],
                1,
            );
        }
        let position_embeddings = np.var_copy("position_embeddings", &table.to_device(np.device()));
        VitEmbeddings {
            stem,
            projection_weight,
            projection_bias,
            cls_token,
            position_embeddings,
            patch_size: ps,
            grid,
        }
    }

    /// Position embeddings for a `gh × gw` patch grid; identical to the stored ones at the
    /// native grid, bicubically resampled otherwise (as HF `interpolate_pos_encoding`).
    pub fn position_embeddings_for(&self, gh: i64, gw: i64) -> Tensor {
        if gh == self.grid && gw == self.grid {
            return self.position_embeddings.shallow_clone();
        }
        let d = self.position_embeddings.size()[2];
        let n_cls = i64::from(self.cls_token.is_some());
        let patch_pos = self
            .position_embeddings
            .narrow(1, n_cls, self.grid * self.grid);
        let resized = patch_pos
            .reshape([1, self.grid, self.grid, d])
            .permute([0, 3, 1, 2])
            .to_kind(Kind::Float)
            .upsample_bicubic2d([gh, gw], false, None::<f64>, None::<f64>)
            .permute([0, 2, 3, 1])
            .reshape([1, gh * gw, d]);
        if n_cls == 1 {
            Tensor::cat(&[self.position_embeddings.narrow(1, 0, 1), resized], 1)
        } else {
            resized
        }
    }

    /// `[N, C, H, W]` normalised pixels → `[N, (1 +) gh*gw, D]` tokens.
    pub fn forward(&self, pixels: &Tensor) -> Tensor {
        match self.stem(pixels) {
            Some(features) => self.tokens(&features),
            None => self.tokens(pixels),
        }
    }

    /// The conv stem's last feature map `[N, C', H', W']` (`None` without a stem).
    pub fn stem(&self, pixels: &Tensor) -> Option<Tensor> {
        self.stem_levels(pixels).pop()
    }

    /// Every stem convolution's output, finest first (empty without a stem).
    pub fn stem_levels(&self, pixels: &Tensor) -> Vec<Tensor> {
        let mut levels: Vec<Tensor> = Vec::with_capacity(self.stem.len());
        for conv in &self.stem {
            let next = conv.forward(levels.last().unwrap_or(pixels));
            levels.push(next);
        }
        levels
    }

    /// Patch tokens from the stem's output (or from pixels without a stem).
    pub fn tokens(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let x = x.conv2d(
            &self.projection_weight.to_kind(kind),
            Some(&self.projection_bias.to_kind(kind)),
            [self.patch_size, self.patch_size],
            [0, 0],
            [1, 1],
            1,
        );
        let (n, d, gh, gw) = x.size4().expect("conv2d output is 4-D");
        let mut x = x.flatten(2, 3).transpose(1, 2); // [N, gh*gw, D]
        if let Some(cls) = &self.cls_token {
            x = Tensor::cat(&[cls.to_kind(kind).expand([n, 1, d], false), x], 1);
        }
        x + self.position_embeddings_for(gh, gw).to_kind(kind)
    }
}

/// `encoder.layer.N.attention`: multi-head self-attention without masking.
#[derive(Debug)]
pub struct VitAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    num_heads: i64,
}

impl VitAttention {
    fn new(p: &Path, cfg: &VisionConfig) -> Self {
        let d = cfg.hidden_size;
        let a = p.sub("attention");
        VitAttention {
            query: Linear::new(&a.sub("query"), d, d, true),
            key: Linear::new(&a.sub("key"), d, d, true),
            value: Linear::new(&a.sub("value"), d, d, true),
            output: Linear::new(&sub_path(p, "output.dense"), d, d, true),
            num_heads: cfg.num_attention_heads as i64,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let (b, t, d) = x.size3().expect("ViT attention input is [N, T, D]");
        let hd = d / self.num_heads;
        let split = |y: Tensor| y.view([b, t, self.num_heads, hd]).transpose(1, 2);
        let q = split(self.query.forward(x));
        let k = split(self.key.forward(x));
        let v = split(self.value.forward(x));
        let y = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            false,
            None::<f64>,
            false,
        );
        self.output
            .forward(&y.transpose(1, 2).contiguous().view([b, t, d]))
    }
}

/// `encoder.layer.N`: pre-LN attention block then pre-LN GELU MLP, both residual.
#[derive(Debug)]
pub struct VitLayer {
    layernorm_before: LayerNorm,
    attention: VitAttention,
    layernorm_after: LayerNorm,
    intermediate: Linear,
    output: Linear,
}

impl VitLayer {
    fn new(p: &Path, cfg: &VisionConfig) -> Self {
        let d = cfg.hidden_size;
        VitLayer {
            layernorm_before: LayerNorm::new(&p.sub("layernorm_before"), d, cfg.layer_norm_eps),
            attention: VitAttention::new(&p.sub("attention"), cfg),
            layernorm_after: LayerNorm::new(&p.sub("layernorm_after"), d, cfg.layer_norm_eps),
            intermediate: Linear::new(
                &sub_path(p, "intermediate.dense"),
                d,
                cfg.intermediate_size,
                true,
            ),
            output: Linear::new(&sub_path(p, "output.dense"), cfg.intermediate_size, d, true),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let h = x + self.attention.forward(&self.layernorm_before.forward(x));
        let m = self
            .intermediate
            .forward(&self.layernorm_after.forward(&h))
            .gelu("none");
        &h + self.output.forward(&m)
    }
}

/// The encoder: embeddings, `encoder.layer.*`, final `layernorm`.
#[derive(Debug)]
pub struct VitModel {
    pub embeddings: VitEmbeddings,
    layers: Vec<VitLayer>,
    layernorm: LayerNorm,
    has_cls: bool,
}

impl VitModel {
    pub fn new(p: &Path, cfg: &VisionConfig) -> Self {
        let embeddings = VitEmbeddings::new(&p.sub("embeddings"), cfg);
        let lp = sub_path(p, "encoder.layer");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| VitLayer::new(&lp.sub(i), cfg))
            .collect();
        let layernorm = LayerNorm::new(&p.sub("layernorm"), cfg.hidden_size, cfg.layer_norm_eps);
        VitModel {
            embeddings,
            layers,
            layernorm,
            has_cls: cfg.use_cls_token,
        }
    }

    /// `[N, C, H, W]` normalised pixels → `[N, gh*gw, D]` patch tokens (CLS dropped).
    pub fn forward(&self, pixels: &Tensor) -> Tensor {
        self.forward_modulated(pixels, |f| f).0
    }

    /// Patch tokens and the conv stem's feature maps, finest first (empty without a stem),
    /// with `modulate` applied to the last map before the patch projection (FiLM
    /// conditioning).
    pub fn forward_modulated(
        &self,
        pixels: &Tensor,
        modulate: impl FnOnce(Tensor) -> Tensor,
    ) -> (Tensor, Vec<Tensor>) {
        let mut features = self.embeddings.stem_levels(pixels);
        if let Some(last) = features.pop() {
            features.push(modulate(last));
        }
        let x = self.encode(self.embeddings.tokens(features.last().unwrap_or(pixels)));
        let tokens = if self.has_cls {
            let t = x.size()[1];
            x.narrow(1, 1, t - 1)
        } else {
            x
        };
        (tokens, features)
    }

    /// `ViTModel`'s `last_hidden_state`: every token, the CLS one first when there is one.
    pub fn last_hidden_state(&self, pixels: &Tensor) -> Tensor {
        self.encode(self.embeddings.forward(pixels))
    }

    fn encode(&self, mut x: Tensor) -> Tensor {
        for layer in &self.layers {
            x = layer.forward(&x);
        }
        self.layernorm.forward(&x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VlaConfig;
    use tch::{nn::VarStore, Device};

    #[test]
    fn position_interpolation_is_identity_at_native_resolution() {
        crate::test_setup();
        for cls in [false, true] {
            let mut cfg = VlaConfig::test_tiny().vision;
            cfg.use_cls_token = cls;
            let vs = VarStore::new(Device::Cpu);
            let emb = VitEmbeddings::new(&vs.root(), &cfg);
            let g = (cfg.image_size / cfg.patch_size) as i64;
            let same = emb.position_embeddings_for(g, g);
            assert!(same.equal(&emb.position_embeddings));
            // A different grid really resamples (the test could fail if it did not).
            let big = emb.position_embeddings_for(2 * g, 2 * g);
            assert_eq!(big.size()[1], 4 * g * g + i64::from(cls));
            // And going through the generic resampling path at the native size also holds.
            let d = cfg.hidden_size as i64;
            let n_cls = i64::from(cls);
            let resampled = emb
                .position_embeddings
                .narrow(1, n_cls, g * g)
                .reshape([1, g, g, d])
                .permute([0, 3, 1, 2])
                .upsample_bicubic2d([g, g], false, None::<f64>, None::<f64>)
                .permute([0, 2, 3, 1])
                .reshape([1, g * g, d]);
            let diff = (resampled - emb.position_embeddings.narrow(1, n_cls, g * g))
                .abs()
                .max()
                .double_value(&[]);
            assert!(diff < 1e-6, "bicubic at native size moved values by {diff}");
        }
    }

    #[test]
    fn vit_runs_at_other_resolutions() {
        crate::test_setup();
        let cfg = VlaConfig::test_tiny().vision;
        let vs = VarStore::new(Device::Cpu);
        let vit = VitModel::new(&vs.root(), &cfg);
        let x =
            crate::model::rng_locked(|| Tensor::randn([2, 3, 16, 16], (Kind::Float, Device::Cpu)));
        assert_eq!(vit.forward(&x).size(), vec![2, 4, 16]);
        let x =
            crate::model::rng_locked(|| Tensor::randn([1, 3, 32, 24], (Kind::Float, Device::Cpu)));
        assert_eq!(vit.forward(&x).size(), vec![1, 12, 16]);
        assert!(vs
            .variables()
            .contains_key("encoder.layer.0.attention.attention.query.weight"));
        assert!(vs
            .variables()
            .contains_key("embeddings.patch_embeddings.projection.weight"));
    }

    #[test]
    fn conv_stem_downsamples_before_the_projection() {
        crate::test_setup();
        let mut cfg = VlaConfig::test_tiny().vision;
        cfg.stem_channels = vec![4, 6];
        let vs = VarStore::new(Device::Cpu);
        let vit = VitModel::new(&vs.root(), &cfg);
        let vars = vs.variables();
        assert_eq!(
            vars["embeddings.patch_embeddings.stem.1.weight"].size(),
            vec![6, 4, 3, 3]
        );
        // Patch 8 after a stride-4 stem: the projection covers 2x2 stem pixels.
        assert_eq!(
            vars["embeddings.patch_embeddings.projection.weight"].size(),
            vec![16, 6, 2, 2]
        );
        let x =
            crate::model::rng_locked(|| Tensor::randn([2, 3, 16, 16], (Kind::Float, Device::Cpu)));
        let (tokens, features) = vit.forward_modulated(&x, |f| f);
        assert_eq!(tokens.size(), vec![2, 4, 16]);
        let sizes: Vec<_> = features.iter().map(Tensor::size).collect();
        assert_eq!(sizes, vec![vec![2, 4, 8, 8], vec![2, 6, 4, 4]]);
        // Without a stem there is no feature map and the projection is the whole patch.
        cfg.stem_channels.clear();
        let vs = VarStore::new(Device::Cpu);
        let plain = VitModel::new(&vs.root(), &cfg);
        assert!(plain.forward_modulated(&x, |f| f).1.is_empty());
        assert_eq!(
            vs.variables()["embeddings.patch_embeddings.projection.weight"].size(),
            vec![16, 3, 8, 8]
        );
    }
}
