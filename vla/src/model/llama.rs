//! Llama-style decoder-only LM with Hugging Face `LlamaForCausalLM` parameter names.
//!
//! RMSNorm, rotary position embeddings (HF "rotate half" layout), SwiGLU MLP, grouped-query
//! causal self-attention and a KV cache. The model consumes *embeddings* rather than ids so
//! the VLA can splice image and state tokens in front of the text.
//!
//! Padding: each forward call takes a `[B, T]` validity mask. Padded positions are never
//! attended to, and rotary positions count only valid tokens, so a left-padded prompt gives
//! the same outputs as the unpadded one (batched inference equals one-by-one inference).

use tch::nn::Path;
use tch::{Device, Kind, Tensor};

use crate::config::TextConfig;
use crate::error::{Result, VlaError};
use crate::model::layers::{normal_init, sub_path, Linear, RmsNorm, DECAY_GROUP};

/// Cached keys/values of all layers plus the bookkeeping needed to extend them.
#[derive(Debug)]
pub struct KvCache {
    /// Per layer `(k, v)`, each `[B, kv_heads, T_past, head_dim]` (after rotary).
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// Number of cached positions (including padding).
    len: i64,
    /// Only once some position was padding: `[B, T_past]` bool validity of cached positions
    /// and `[B]` i64 rotary position of each sequence's next token. Without padding both are
    /// implied by `len`, which lets unpadded decoding skip all mask arithmetic.
    padding: Option<(Tensor, Tensor)>,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        KvCache {
            layers: (0..num_layers).map(|_| None).collect(),
            len: 0,
            padding: None,
        }
    }

    /// Number of cached positions (including padding).
    pub fn len(&self) -> i64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Rotary embedding tables `[max_pos, head_dim]` (f32), indexed by per-token positions.
///
/// HF applies `x * cos + rotate_half(x) * sin` with `rotate_half(x) = cat(-x2, x1)`. Here the
/// sign is folded into the sine table (`sin_signed = cat(-sin, sin)` halves) so the rotation
/// is `x * cos + roll(x, half) * sin_signed`: 4 ops instead of 7, which matters when decoding
/// one token at a time. Numerically identical.
#[derive(Debug)]
struct Rotary {
    cos: Tensor,
    sin_signed: Tensor,
}

impl Rotary {
    fn new(cfg: &TextConfig, device: Device) -> Self {
        let hd = (cfg.hidden_size / cfg.num_attention_heads) as i64;
        let opts = (Kind::Float, device);
        // theta^(-2i/hd), as HF `inv_freq`.
        let exponent = Tensor::arange_start_step(0, hd, 2, opts) / hd as f64;
        let inv_freq = (exponent * (-cfg.rope_theta.ln())).exp();
        let t = Tensor::arange(cfg.max_position_embeddings as i64, opts);
        let freqs = t.unsqueeze(1) * inv_freq.unsqueeze(0); // [P, hd/2]
        Rotary {
            cos: Tensor::cat(&[freqs.cos(), freqs.cos()], 1),
            sin_signed: Tensor::cat(&[freqs.sin().neg(), freqs.sin()], 1),
        }
    }

    /// `positions [B, T]` → `(cos, sin_signed)` each `[B, 1, T, hd]` in `kind`.
    fn tables(&self, positions: &Tensor, kind: Kind) -> (Tensor, Tensor) {
        let (b, t) = positions.size2().expect("positions are [B, T]");
        let flat = positions.reshape([-1]);
        let hd = self.cos.size()[1];
        let pick = |table: &Tensor| {
            table
                .index_select(0, &flat)
                .view([b, 1, t, hd])
                .to_kind(kind)
        };
        (pick(&self.cos), pick(&self.sin_signed))
    }
}

fn apply_rotary(x: &Tensor, cos: &Tensor, sin_signed: &Tensor) -> Tensor {
    let half = x.size()[3] / 2;
    x * cos + x.roll([half], [3]) * sin_signed
}

/// `model.layers.N.self_attn`.
#[derive(Debug)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    num_heads: i64,
    num_kv_heads: i64,
    head_dim: i64,
}

impl Attention {
    fn new(p: &Path, cfg: &TextConfig) -> Self {
        let d = cfg.hidden_size;
        let hd = cfg.hidden_size / cfg.num_attention_heads;
        let kv = cfg.num_key_value_heads * hd;
        Attention {
            q_proj: Linear::new(&p.sub("q_proj"), d, d, false),
            k_proj: Linear::new(&p.sub("k_proj"), d, kv, false),
            v_proj: Linear::new(&p.sub("v_proj"), d, kv, false),
            o_proj: Linear::new(&p.sub("o_proj"), d, d, false),
            num_heads: cfg.num_attention_heads as i64,
            num_kv_heads: cfg.num_key_value_heads as i64,
            head_dim: hd as i64,
        }
    }

    fn repeat_kv(&self, x: Tensor) -> Tensor {
        let n_rep = self.num_heads / self.num_kv_heads;
        if n_rep == 1 {
            return x;
        }
        let (b, h, t, d) = x.size4().expect("kv is 4-D");
        x.unsqueeze(2)
            .expand([b, h, n_rep, t, d], false)
            .reshape([b, h * n_rep, t, d])
    }

    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        attn_mask: Option<&Tensor>,
        is_causal: bool,
        cache: &mut Option<(Tensor, Tensor)>,
    ) -> Tensor {
        let (b, t, d) = x.size3().expect("attention input is [B, T, D]");
        let q = self
            .q_proj
            .forward(x)
            .view([b, t, self.num_heads, self.head_dim])
            .transpose(1, 2);
        let k = self
            .k_proj
            .forward(x)
            .view([b, t, self.num_kv_heads, self.head_dim])
            .transpose(1, 2);
        let v = self
            .v_proj
            .forward(x)
            .view([b, t, self.num_kv_heads, self.head_dim])
            .transpose(1, 2);
        let q = apply_rotary(&q, cos, sin);
        let k = apply_rotary(&k, cos, sin);
        let (k, v) = match cache.take() {
            Some((pk, pv)) => (Tensor::cat(&[pk, k], 2), Tensor::cat(&[pv, v], 2)),
            None => (k, v),
        };
        *cache = Some((k.shallow_clone(), v.shallow_clone()));
        let k = self.repeat_kv(k);
        let v = self.repeat_kv(v);
        let y = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            attn_mask,
            0.0,
            is_causal,
            None::<f64>,
            false,
        );
        self.o_proj
            .forward(&y.transpose(1, 2).contiguous().view([b, t, d]))
    }
}

/// `model.layers.N.mlp`: SwiGLU.
#[derive(Debug)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn new(p: &Path, cfg: &TextConfig) -> Self {
        let (d, i) = (cfg.hidden_size, cfg.intermediate_size);
        Mlp {
            gate_proj: Linear::new(&p.sub("gate_proj"), d, i, false),
            up_proj: Linear::new(&p.sub("up_proj"), d, i, false),
            down_proj: Linear::new(&p.sub("down_proj"), i, d, false),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.down_proj
            .forward(&(self.gate_proj.forward(x).silu() * self.up_proj.forward(x)))
    }
}

/// `model.layers.N`.
#[derive(Debug)]
struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    fn new(p: &Path, cfg: &TextConfig) -> Self {
        let d = cfg.hidden_size;
        DecoderLayer {
            input_layernorm: RmsNorm::new(&p.sub("input_layernorm"), d, cfg.rms_norm_eps),
            self_attn: Attention::new(&p.sub("self_attn"), cfg),
            post_attention_layernorm: RmsNorm::new(
                &p.sub("post_attention_layernorm"),
                d,
                cfg.rms_norm_eps,
            ),
            mlp: Mlp::new(&p.sub("mlp"), cfg),
        }
    }
}

/// The decoder stack with `model.embed_tokens`, `model.norm` and `lm_head`.
#[derive(Debug)]
pub struct Llama {
    /// `model.embed_tokens.weight` `[V, D]`.
    pub embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rotary: Rotary,
    max_positions: i64,
}

impl Llama {
    /// `p` is the LM root (the VLA uses `language_model`); `vocab_size` includes action tokens.
    /// Rotary tables are built on `device` (variables may be created elsewhere and moved).
    pub fn new(p: &Path, cfg: &TextConfig, vocab_size: usize, device: Device) -> Self {
        let m = p.sub("model");
        let embed_tokens = m.sub("embed_tokens").set_group(DECAY_GROUP).var(
            "weight",
            &[vocab_size as i64, cfg.hidden_size as i64],
            normal_init(),
        );
        let lp = sub_path(&m, "layers");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(&lp.sub(i), cfg))
            .collect();
        let norm = RmsNorm::new(&m.sub("norm"), cfg.hidden_size, cfg.rms_norm_eps);
        let lm_head = Linear::new(&p.sub("lm_head"), cfg.hidden_size, vocab_size, false);
        Llama {
            embed_tokens,
            layers,
            norm,
            lm_head,
            rotary: Rotary::new(cfg, device),
            max_positions: cfg.max_position_embeddings as i64,
        }
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.layers.len())
    }

    /// Token ids `[B, T]` → embeddings `[B, T, D]` in `kind`.
    pub fn embed(&self, ids: &Tensor, kind: Kind) -> Tensor {
        Tensor::embedding(&self.embed_tokens, ids, -1, false, false).to_kind(kind)
    }

    /// Runs `embeds [B, T, D]` (validity `mask [B, T]`) after whatever `cache` holds and
    /// appends them to it. Returns the final-normed hidden states `[B, T, D]`.
    ///
    /// With an empty cache this is the full (training) forward pass; the cache then holds
    /// the prefix for incremental decoding.
    pub fn forward(&self, embeds: &Tensor, mask: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let (b, t, _) = embeds.size3().map_err(VlaError::Torch)?;
        if mask.size() != [b, t] {
            return Err(VlaError::Input(format!(
                "LM mask has shape {:?}, expected [{b}, {t}]",
                mask.size()
            )));
        }
        if t == 0 {
            return Err(VlaError::Input("LM forward called with no tokens".into()));
        }
        if cache.layers.len() != self.layers.len() {
            return Err(VlaError::Input("KV cache built for another model".into()));
        }
        let past = cache.len;
        let total = past + t;
        // Rotary positions never exceed the absolute index, so this bound is sufficient.
        if total > self.max_positions {
            return Err(VlaError::Input(format!(
                "sequence of {total} tokens exceeds text.max_position_embeddings {}",
                self.max_positions
            )));
        }
        let device = embeds.device();
        let mask = mask.to_kind(Kind::Bool);
        let unpadded = cache.padding.is_none() && mask.all().int64_value(&[]) != 0;
        let (positions, attn_mask, is_causal) = if unpadded {
            // Fast path (every single-observation call): plain causal attention.
            let positions = Tensor::arange_start(past, total, (Kind::Int64, device))
                .unsqueeze(0)
                .expand([b, t], false);
            let (attn_mask, is_causal) = if t == 1 {
                (None, false)
            } else if past == 0 {
                (None, true)
            } else {
                let q_idx = Tensor::arange_start(past, total, (Kind::Int64, device)).unsqueeze(1);
                let k_idx = Tensor::arange(total, (Kind::Int64, device)).unsqueeze(0);
                (Some(k_idx.le_tensor(&q_idx).view([1, 1, t, total])), false)
            };
            (positions, attn_mask, is_causal)
        } else {
            let (prev_mask, start) = match cache.padding.take() {
                Some(p) => p,
                None => (
                    Tensor::ones([b, past], (Kind::Bool, device)),
                    Tensor::full([b], past, (Kind::Int64, device)),
                ),
            };
            let full_mask = Tensor::cat(&[prev_mask, mask.shallow_clone()], 1);
            let counts = mask.to_kind(Kind::Int64).cumsum(1, Kind::Int64);
            let positions = (start.unsqueeze(1) + &counts - 1).clamp_min(0);
            // Query i (absolute index past + i) may see key j when j <= past + i and j is a
            // real token; it always sees itself so padded rows never become all-masked (NaN).
            let q_idx = Tensor::arange_start(past, total, (Kind::Int64, device)).unsqueeze(1);
            let k_idx = Tensor::arange(total, (Kind::Int64, device)).unsqueeze(0);
            let attn_mask = k_idx
                .le_tensor(&q_idx)
                .unsqueeze(0)
                .logical_and(&full_mask.unsqueeze(1))
                .logical_or(&k_idx.eq_tensor(&q_idx).unsqueeze(0))
                .unsqueeze(1); // [B, 1, T, Tk]
            let next = start + counts.select(1, t - 1);
            cache.padding = Some((full_mask, next));
            (positions, Some(attn_mask), false)
        };
        cache.len = total;

        let (cos, sin) = self.rotary.tables(&positions, embeds.kind());
        let mut x = embeds.shallow_clone();
        for (layer, layer_cache) in self.layers.iter().zip(cache.layers.iter_mut()) {
            let h = &x
                + layer.self_attn.forward(
                    &layer.input_layernorm.forward(&x),
                    &cos,
                    &sin,
                    attn_mask.as_ref(),
                    is_causal,
                    layer_cache,
                );
            x = &h
                + layer
                    .mlp
                    .forward(&layer.post_attention_layernorm.forward(&h));
        }
        Ok(self.norm.forward(&x))
    }

    /// Hidden states `[..., D]` → logits `[..., V]` (f32).
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        self.lm_head.forward(hidden).to_kind(Kind::Float)
    }

    /// Logits of vocabulary ids `start..start + len` only (f32): the action head without
    /// computing the text-token logits that constrained decoding would mask anyway.
    pub fn logits_range(&self, hidden: &Tensor, start: i64, len: i64) -> Tensor {
        let w = self
            .lm_head
            .weight
            .narrow(0, start, len)
            .to_kind(hidden.kind());
        hidden.linear(&w, None::<Tensor>).to_kind(Kind::Float)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VlaConfig;
    use tch::nn::VarStore;

    fn tiny() -> (VarStore, Llama, i64) {
        crate::test_setup();
        tch::manual_seed(1);
        let cfg = VlaConfig::test_tiny().text;
        let vs = VarStore::new(Device::Cpu);
        let lm = Llama::new(&vs.root(), &cfg, 50, Device::Cpu);
        (vs, lm, cfg.hidden_size as i64)
    }

    fn full_logits(lm: &Llama, ids: &Tensor, mask: &Tensor) -> Tensor {
        let e = lm.embed(ids, Kind::Float);
        let mut cache = lm.new_cache();
        lm.logits(&lm.forward(&e, mask, &mut cache).unwrap())
    }

    #[test]
    fn causal_later_tokens_do_not_change_earlier_logits() {
        let (_vs, lm, _) = tiny();
        let ids = Tensor::randint(50, [2, 10], (Kind::Int64, Device::Cpu));
        let mask = Tensor::ones([2, 10], (Kind::Bool, Device::Cpu));
        let a = full_logits(&lm, &ids, &mask);
        let changed = ids.copy();
        let _ = changed.narrow(1, 6, 4).fill_(7);
        let b = full_logits(&lm, &changed, &mask);
        let early = (a.narrow(1, 0, 6) - b.narrow(1, 0, 6))
            .abs()
            .max()
            .double_value(&[]);
        assert!(early < 1e-6, "earlier logits moved by {early}");
        let late = (a.narrow(1, 6, 4) - b.narrow(1, 6, 4))
            .abs()
            .max()
            .double_value(&[]);
        assert!(
            late > 1e-4,
            "later logits must depend on the changed tokens"
        );
    }

    #[test]
    fn kv_cache_decoding_matches_full_recomputation() {
        let (_vs, lm, _) = tiny();
        let ids = Tensor::randint(50, [3, 12], (Kind::Int64, Device::Cpu));
        // Without padding (fast path) and with left padding on the second sequence (masked
        // keys, shifted positions).
        for padded in [false, true] {
            let mask = Tensor::ones([3, 12], (Kind::Bool, Device::Cpu));
            if padded {
                let _ = mask.get(1).narrow(0, 0, 3).fill_(0);
            }
            let full = full_logits(&lm, &ids, &mask);
            let mut cache = lm.new_cache();
            let prefix = 7;
            let e = lm.embed(&ids.narrow(1, 0, prefix), Kind::Float);
            let h = lm
                .forward(&e, &mask.narrow(1, 0, prefix), &mut cache)
                .unwrap();
            let mut steps = vec![lm.logits(&h)];
            // One token at a time, then a two-token chunk (multi-token extension path).
            for i in prefix..10 {
                let e = lm.embed(&ids.narrow(1, i, 1), Kind::Float);
                let h = lm.forward(&e, &mask.narrow(1, i, 1), &mut cache).unwrap();
                steps.push(lm.logits(&h));
            }
            let e = lm.embed(&ids.narrow(1, 10, 2), Kind::Float);
            let h = lm.forward(&e, &mask.narrow(1, 10, 2), &mut cache).unwrap();
            steps.push(lm.logits(&h));
            assert_eq!(cache.len(), 12);
            let inc = Tensor::cat(&steps, 1);
            let diff = (inc - &full).abs().max().double_value(&[]);
            assert!(
                diff < 1e-4,
                "cached decoding (padded: {padded}) differs by {diff}"
            );
        }
    }

    #[test]
    fn left_padding_does_not_change_outputs() {
        let (_vs, lm, _) = tiny();
        let ids = Tensor::randint(50, [1, 6], (Kind::Int64, Device::Cpu));
        let ones = Tensor::ones([1, 6], (Kind::Bool, Device::Cpu));
        let plain = full_logits(&lm, &ids, &ones);
        let padded_ids = Tensor::cat(&[Tensor::zeros([1, 3], (Kind::Int64, Device::Cpu)), ids], 1);
        let mask = Tensor::cat(&[Tensor::zeros([1, 3], (Kind::Bool, Device::Cpu)), ones], 1);
        let padded = full_logits(&lm, &padded_ids, &mask).narrow(1, 3, 6);
        let diff = (plain - padded).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "padding changed logits by {diff}");
    }
}
