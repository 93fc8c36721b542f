//! Llama-style decoder-only LM with Hugging Face `LlamaForCausalLM` parameter names.
//!
//! RMSNorm, rotary position embeddings (HF "rotate half" layout), SwiGLU MLP, grouped-query
//! causal self-attention (optionally with a bidirectional tail: [`Llama::forward_with_tail`])
//! and a KV cache. The model consumes *embeddings* rather than ids so the VLA can splice
//! image and state tokens in front of the text.
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
        let hd = cfg.attention_head_dim() as i64;
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

/// The last key index each query `q_idx [T, 1]` (absolute indices) may attend to: itself
/// (causal), or for the queries of the last `tail` positions of a sequence of `total`, the
/// last key, so that block sees itself in both directions.
fn tail_limit(q_idx: &Tensor, total: i64, tail: i64) -> Tensor {
    let before_tail = q_idx.lt(total - tail);
    q_idx.where_self(&before_tail, &q_idx.full_like(total - 1))
}

/// A projection of the stack: trainable, or (under LoRA) frozen with an adapter when it is
/// one of the targets.
fn projection(p: &Path, cfg: &TextConfig, name: &str, in_dim: usize, out_dim: usize) -> Linear {
    match &cfg.lora {
        None => Linear::new(&p.sub(name), in_dim, out_dim, false),
        Some(lora) => Linear::frozen(&p.sub(name), in_dim, out_dim, false, lora.for_target(name)),
    }
}

fn rms_norm(p: &Path, cfg: &TextConfig, dim: usize) -> RmsNorm {
    match cfg.lora {
        None => RmsNorm::new(p, dim, cfg.rms_norm_eps),
        Some(_) => RmsNorm::frozen(p, dim, cfg.rms_norm_eps),
    }
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
        let hd = cfg.attention_head_dim();
        let q = cfg.num_attention_heads * hd;
        let kv = cfg.num_key_value_heads * hd;
        Attention {
            q_proj: projection(p, cfg, "q_proj", d, q),
            k_proj: projection(p, cfg, "k_proj", d, kv),
            v_proj: projection(p, cfg, "v_proj", d, kv),
            o_proj: projection(p, cfg, "o_proj", q, d),
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
        let (b, t, _) = x.size3().expect("attention input is [B, T, D]");
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
        self.o_proj.forward(&y.transpose(1, 2).contiguous().view([
            b,
            t,
            self.num_heads * self.head_dim,
        ]))
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
            gate_proj: projection(p, cfg, "gate_proj", d, i),
            up_proj: projection(p, cfg, "up_proj", d, i),
            down_proj: projection(p, cfg, "down_proj", i, d),
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
            input_layernorm: rms_norm(&p.sub("input_layernorm"), cfg, d),
            self_attn: Attention::new(&p.sub("self_attn"), cfg),
            post_attention_layernorm: rms_norm(&p.sub("post_attention_layernorm"), cfg, d),
            mlp: Mlp::new(&p.sub("mlp"), cfg),
        }
    }
}

/// The decoder stack with `model.embed_tokens`, `model.norm` and `lm_head`.
///
/// Under LoRA the pretrained matrices are frozen, but the ids added after the text
/// vocabulary (the action tokens) must still be learned: their rows live in separate
/// trainable `trainable_tokens_delta` tensors `[added, D]` (PEFT's "trainable tokens"),
/// read in place of the frozen rows, so no optimiser state is spent on the 49 k text rows.
#[derive(Debug)]
pub struct Llama {
    /// `model.embed_tokens.weight` `[V, D]`.
    pub embed_tokens: Tensor,
    /// Under LoRA: the trainable rows `text_rows..V` of `embed_tokens`.
    pub embed_delta: Option<Tensor>,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    /// `None` when the head is tied to `embed_tokens` (`tie_word_embeddings`).
    lm_head: Option<Linear>,
    /// Under LoRA with an untied head: its trainable rows `text_rows..V`.
    pub head_delta: Option<Tensor>,
    /// Rows of the pretrained (text) vocabulary.
    text_rows: i64,
    rotary: Rotary,
    max_positions: i64,
}

impl Llama {
    /// `p` is the LM root (the VLA uses `language_model`); `vocab_size` includes action tokens.
    /// Rotary tables are built on `device` (variables may be created elsewhere and moved).
    pub fn new(p: &Path, cfg: &TextConfig, vocab_size: usize, device: Device) -> Self {
        let m = p.sub("model");
        let (v, d) = (vocab_size as i64, cfg.hidden_size as i64);
        let text_rows = (cfg.vocab_size as i64).min(v);
        let frozen = cfg.lora.is_some();
        let added = |q: &Path| {
            (frozen && v > text_rows).then(|| {
                q.set_group(DECAY_GROUP)
                    .zeros("trainable_tokens_delta", &[v - text_rows, d])
            })
        };
        let e = m.sub("embed_tokens");
        let embed_tokens = if frozen {
            e.zeros_no_train("weight", &[v, d])
        } else {
            e.set_group(DECAY_GROUP)
                .var("weight", &[v, d], normal_init())
        };
        let embed_delta = added(&e);
        let lp = sub_path(&m, "layers");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(&lp.sub(i), cfg))
            .collect();
        let norm = rms_norm(&m.sub("norm"), cfg, cfg.hidden_size);
        let h = p.sub("lm_head");
        let lm_head = (!cfg.tie_word_embeddings).then(|| match frozen {
            false => Linear::new(&h, cfg.hidden_size, vocab_size, false),
            true => Linear::frozen(&h, cfg.hidden_size, vocab_size, false, None),
        });
        let head_delta = lm_head.as_ref().and_then(|_| added(&h));
        Llama {
            embed_tokens,
            embed_delta,
            layers,
            norm,
            lm_head,
            head_delta,
            text_rows,
            rotary: Rotary::new(cfg, device),
            max_positions: cfg.max_position_embeddings as i64,
        }
    }

    /// Under LoRA, starts the trainable rows of the added ids from the (imported, grown)
    /// frozen matrices' rows.
    pub fn init_trainable_rows(&self) -> Result<()> {
        let pairs = [
            (Some(&self.embed_tokens), self.embed_delta.as_ref()),
            (
                self.lm_head.as_ref().map(|h| &h.weight),
                self.head_delta.as_ref(),
            ),
        ];
        for (full, delta) in pairs {
            if let (Some(full), Some(delta)) = (full, delta) {
                let rows = full.narrow(0, self.text_rows, delta.size()[0]);
                let mut delta = delta.shallow_clone();
                tch::no_grad(|| delta.f_copy_(&rows))?;
            }
        }
        Ok(())
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.layers.len())
    }

    /// Token ids `[B, T]` → embeddings `[B, T, D]` in `kind`.
    pub fn embed(&self, ids: &Tensor, kind: Kind) -> Tensor {
        let base = |ids: &Tensor| Tensor::embedding(&self.embed_tokens, ids, -1, false, false);
        match &self.embed_delta {
            None => base(ids).to_kind(kind),
            Some(delta) => {
                let text = ids.clamp_max(self.text_rows - 1);
                let added = (ids - self.text_rows).clamp_min(0);
                let added = Tensor::embedding(delta, &added, -1, false, false);
                base(&text)
                    .where_self(&ids.lt(self.text_rows).unsqueeze(-1), &added)
                    .to_kind(kind)
            }
        }
    }

    /// Runs `embeds [B, T, D]` (validity `mask [B, T]`) after whatever `cache` holds and
    /// appends them to it. Returns the final-normed hidden states `[B, T, D]`.
    ///
    /// With an empty cache this is the full (training) forward pass; the cache then holds
    /// the prefix for incremental decoding.
    pub fn forward(&self, embeds: &Tensor, mask: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        self.forward_with_tail(embeds, mask, cache, 0)
    }

    /// [`Self::forward`] whose last `tail` positions form a bidirectional block: each of
    /// them sees every (valid) earlier position and every position of the block, before or
    /// after it, while the positions in front of the block stay causal and never see it.
    /// This is how parallel decoding reads K actions off one pass (OpenVLA-OFT): the action
    /// slots are filled together, so none has to wait for, or be conditioned on, a
    /// neighbour's guess. `tail` 0 or 1 is plain causal attention (the same fast paths).
    pub fn forward_with_tail(
        &self,
        embeds: &Tensor,
        mask: &Tensor,
        cache: &mut KvCache,
        tail: i64,
    ) -> Result<Tensor> {
        let (b, t, _) = embeds.size3().map_err(VlaError::Torch)?;
        if tail < 0 || tail > t {
            return Err(VlaError::Input(format!(
                "a bidirectional tail of {tail} positions in a call of {t}"
            )));
        }
        // One position attends to itself either way.
        let tail = if tail > 1 { tail } else { 0 };
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
        // Whether any row is padded decides the path; asking a GPU would stall it, so there the
        // general (masked) path runs, which is right for unpadded rows too.
        let unpadded =
            cache.padding.is_none() && device == Device::Cpu && mask.all().int64_value(&[]) != 0;
        let (positions, attn_mask, is_causal) = if unpadded {
            // Fast path (every single-observation call): plain causal attention.
            let positions = Tensor::arange_start(past, total, (Kind::Int64, device))
                .unsqueeze(0)
                .expand([b, t], false);
            let (attn_mask, is_causal) = if tail > 0 {
                let q_idx = Tensor::arange_start(past, total, (Kind::Int64, device)).unsqueeze(1);
                let k_idx = Tensor::arange(total, (Kind::Int64, device)).unsqueeze(0);
                let limit = tail_limit(&q_idx, total, tail);
                (Some(k_idx.le_tensor(&limit).view([1, 1, t, total])), false)
            } else if t == 1 {
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
            // A bidirectional tail's queries see up to the last key instead of themselves.
            let q_idx = Tensor::arange_start(past, total, (Kind::Int64, device)).unsqueeze(1);
            let k_idx = Tensor::arange(total, (Kind::Int64, device)).unsqueeze(0);
            let limit = match tail {
                0 => q_idx.shallow_clone(),
                _ => tail_limit(&q_idx, total, tail),
            };
            let attn_mask = k_idx
                .le_tensor(&limit)
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

    /// The output projection (`lm_head.weight`, or the embeddings when tied) and, under
    /// LoRA, the trainable rows that replace its rows from `text_rows` on.
    fn head(&self) -> (&Tensor, Option<&Tensor>) {
        match &self.lm_head {
            Some(head) => (&head.weight, self.head_delta.as_ref()),
            None => (&self.embed_tokens, self.embed_delta.as_ref()),
        }
    }

    /// Rows `start..start + len` of the output projection.
    fn head_rows(&self, start: i64, len: i64) -> Tensor {
        let (full, delta) = self.head();
        let Some(delta) = delta else {
            return full.narrow(0, start, len);
        };
        let end = start + len;
        let mut parts = Vec::new();
        if start < self.text_rows {
            parts.push(full.narrow(0, start, end.min(self.text_rows) - start));
        }
        if end > self.text_rows {
            let from = start.max(self.text_rows);
            parts.push(delta.narrow(0, from - self.text_rows, end - from));
        }
        Tensor::cat(&parts, 0)
    }

    /// Hidden states `[..., D]` → logits `[..., V]` (f32).
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        match (&self.lm_head, self.head()) {
            (Some(head), (_, None)) => head.forward(hidden).to_kind(Kind::Float),
            (_, (full, delta)) => {
                let rows = delta.map_or(full.size()[0], |_| self.text_rows);
                let w = self.head_rows(0, rows).to_kind(hidden.kind());
                let mut logits = hidden.linear(&w, None::<Tensor>);
                if let Some(delta) = delta {
                    let added = hidden.linear(&delta.to_kind(hidden.kind()), None::<Tensor>);
                    logits = Tensor::cat(&[logits, added], -1);
                }
                logits.to_kind(Kind::Float)
            }
        }
    }

    /// Logits of vocabulary ids `start..start + len` only (f32): the action head without
    /// computing the text-token logits that constrained decoding would mask anyway.
    pub fn logits_range(&self, hidden: &Tensor, start: i64, len: i64) -> Tensor {
        let w = self.head_rows(start, len).to_kind(hidden.kind());
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
    #[test]
    fn a_bidirectional_tail_sees_itself_and_the_prefix_never_sees_it() {
        let (_vs, lm, _) = tiny();
        let ids = Tensor::randint(50, [2, 10], (Kind::Int64, Device::Cpu));
        let hidden = |ids: &Tensor, mask: &Tensor, tail: i64| {
            let e = lm.embed(ids, Kind::Float);
            lm.forward_with_tail(&e, mask, &mut lm.new_cache(), tail)
                .unwrap()
        };
        let moved = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
        let ones = Tensor::ones([2, 10], (Kind::Bool, Device::Cpu));
        let plain = hidden(&ids, &ones, 0);
        let with_tail = hidden(&ids, &ones, 4);
        // The prefix is the same with or without the tail; the tail's first positions differ
        // (they now see the later tail positions).
        assert!(moved(&plain.narrow(1, 0, 6), &with_tail.narrow(1, 0, 6)) < 1e-6);
        assert!(moved(&plain.narrow(1, 6, 1), &with_tail.narrow(1, 6, 1)) > 1e-4);
        // Changing the tail's third token changes its first two positions, never the prefix.
        let changed = ids.copy();
        let _ = changed.narrow(1, 8, 1).fill_(7);
        let again = hidden(&changed, &ones, 4);
        assert_eq!(
            moved(&with_tail.narrow(1, 0, 6), &again.narrow(1, 0, 6)),
            0.0
        );
        assert!(moved(&with_tail.narrow(1, 6, 2), &again.narrow(1, 6, 2)) > 1e-4);
        // A tail after a cached prefix (unpadded and left-padded) is the same as in one pass.
        for padded in [false, true] {
            let mask = ones.copy();
            if padded {
                let _ = mask.get(1).narrow(0, 0, 3).fill_(0);
            }
            let full = hidden(&ids, &mask, 4);
            let mut cache = lm.new_cache();
            let e = lm.embed(&ids, Kind::Float);
            let _ = lm
                .forward(&e.narrow(1, 0, 6), &mask.narrow(1, 0, 6), &mut cache)
                .unwrap();
            let tail = lm
                .forward_with_tail(&e.narrow(1, 6, 4), &mask.narrow(1, 6, 4), &mut cache, 4)
                .unwrap();
            let diff = moved(&tail, &full.narrow(1, 6, 4));
            assert!(
                diff < 1e-5,
                "cached tail (padded: {padded}) differs by {diff}"
            );
        }
        // A tail longer than the call is refused.
        let e = lm.embed(&ids, Kind::Float);
        assert!(lm
            .forward_with_tail(&e, &ones, &mut lm.new_cache(), 11)
            .is_err());
    }
}
