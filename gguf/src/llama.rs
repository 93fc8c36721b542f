//! llama.cpp's `llama` architecture → transformers' `LlamaForCausalLM`: the config from the
//! `llama.*` metadata, the Hugging Face name and shape of every tensor, and the undoing of the
//! rotary permutation llama.cpp's converter applies to the query and key projections.

use serde::Serialize;

use crate::error::{GgufError, Result};
use crate::reader::{GgufFile, TensorInfo};

/// A transformers `LlamaConfig` (`config.json`), with the fields the file states.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LlamaConfig {
    pub architectures: Vec<String>,
    pub model_type: String,
    pub hidden_size: u64,
    pub intermediate_size: u64,
    pub num_hidden_layers: u64,
    pub num_attention_heads: u64,
    pub num_key_value_heads: u64,
    pub head_dim: u64,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<serde_json::Value>,
    pub max_position_embeddings: u64,
    pub vocab_size: u64,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u64>,
    pub eos_token_id: Option<u64>,
    pub pad_token_id: Option<u64>,
    pub unk_token_id: Option<u64>,
    pub hidden_act: String,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    pub torch_dtype: String,
}

/// One tensor to write: where it is in the GGUF, and what it becomes.
#[derive(Clone, Debug)]
pub struct MappedTensor {
    pub gguf: TensorInfo,
    pub hf_name: String,
    /// Row-major shape of the Hugging Face weight.
    pub hf_shape: Vec<u64>,
    /// `Some(n_head)` for q/k projections, whose rows llama.cpp permuted for its rotary layout.
    pub unpermute_heads: Option<u64>,
}

/// A GGUF llama model, mapped onto `LlamaForCausalLM`.
#[derive(Clone, Debug)]
pub struct LlamaModel {
    pub config: LlamaConfig,
    /// In file order, so the data is read front to back.
    pub tensors: Vec<MappedTensor>,
    /// Tensors transformers has no parameter for, with the reason they are left out.
    pub skipped: Vec<(String, String)>,
}

/// Maps a `llama` GGUF onto a `LlamaForCausalLM`, checking every shape against the config.
pub fn plan(file: &GgufFile) -> Result<LlamaModel> {
    let path = file.path();
    let arch_key = "general.architecture";
    let arch = file.req_str(arch_key)?;
    if arch != "llama" {
        return Err(GgufError::unsupported(
            path,
            format!("metadata key '{arch_key}'"),
            format!("architecture '{arch}' is not supported; only 'llama'"),
        ));
    }
    let config = config(file, arch)?;
    let c = &config;
    let q_rows = c.num_attention_heads * c.head_dim;
    let kv_rows = c.num_key_value_heads * c.head_dim;

    let mut tensors = Vec::new();
    let mut skipped = Vec::new();
    for t in &file.tensors {
        let at = || format!("tensor '{}'", t.name);
        let (hf_name, shape, heads) = match t.name.as_str() {
            "token_embd.weight" => (
                "model.embed_tokens.weight".to_string(),
                vec![c.vocab_size, c.hidden_size],
                None,
            ),
            "output_norm.weight" => ("model.norm.weight".into(), vec![c.hidden_size], None),
            "output.weight" => (
                "lm_head.weight".into(),
                vec![c.vocab_size, c.hidden_size],
                None,
            ),
            "rope_freqs.weight" => {
                skipped.push((
                    t.name.clone(),
                    "llama3 rope frequency factors: transformers' GGUF loader drops them too, \
                     so positions past the original context differ from llama.cpp"
                        .to_string(),
                ));
                continue;
            }
            name => {
                let Some((layer, suffix)) = name
                    .strip_prefix("blk.")
                    .and_then(|r| r.split_once('.'))
                    .and_then(|(n, s)| n.parse::<u64>().ok().map(|n| (n, s)))
                else {
                    return Err(GgufError::unsupported(
                        path,
                        at(),
                        "no LlamaForCausalLM parameter corresponds to this tensor",
                    ));
                };
                if layer >= c.num_hidden_layers {
                    return Err(GgufError::invalid(
                        path,
                        at(),
                        format!(
                            "layer {layer} but llama.block_count is {}",
                            c.num_hidden_layers
                        ),
                    ));
                }
                let (hf, shape, heads) = match suffix {
                    "attn_norm.weight" => ("input_layernorm.weight", vec![c.hidden_size], None),
                    "ffn_norm.weight" => {
                        ("post_attention_layernorm.weight", vec![c.hidden_size], None)
                    }
                    "attn_q.weight" => (
                        "self_attn.q_proj.weight",
                        vec![q_rows, c.hidden_size],
                        Some(c.num_attention_heads),
                    ),
                    "attn_k.weight" => (
                        "self_attn.k_proj.weight",
                        vec![kv_rows, c.hidden_size],
                        Some(c.num_key_value_heads),
                    ),
                    "attn_v.weight" => (
                        "self_attn.v_proj.weight",
                        vec![kv_rows, c.hidden_size],
                        None,
                    ),
                    "attn_output.weight" => {
                        ("self_attn.o_proj.weight", vec![c.hidden_size, q_rows], None)
                    }
                    "ffn_gate.weight" => (
                        "mlp.gate_proj.weight",
                        vec![c.intermediate_size, c.hidden_size],
                        None,
                    ),
                    "ffn_up.weight" => (
                        "mlp.up_proj.weight",
                        vec![c.intermediate_size, c.hidden_size],
                        None,
                    ),
                    "ffn_down.weight" => (
                        "mlp.down_proj.weight",
                        vec![c.hidden_size, c.intermediate_size],
                        None,
                    ),
                    "attn_rot_embd.weight" => {
                        skipped.push((
                            t.name.clone(),
                            "precomputed rotary table; transformers computes it".to_string(),
                        ));
                        continue;
                    }
                    _ => {
                        return Err(GgufError::unsupported(
                            path,
                            at(),
                            "no LlamaForCausalLM parameter corresponds to this tensor \
                             (biases, experts and other extras are not supported)",
                        ))
                    }
                };
                (format!("model.layers.{layer}.{hf}"), shape, heads)
            }
        };
        if t.shape() != shape {
            return Err(GgufError::invalid(
                path,
                at(),
                format!(
                    "shape {:?} (GGUF order {:?}) does not match the config: {hf_name} must be {shape:?}",
                    t.shape(),
                    t.dims
                ),
            ));
        }
        if !t.ggml_type.is_supported() {
            return Err(GgufError::unsupported(
                path,
                at(),
                crate::quant::DequantError::Unsupported(t.ggml_type).to_string(),
            ));
        }
        tensors.push(MappedTensor {
            gguf: t.clone(),
            hf_name,
            hf_shape: shape,
            unpermute_heads: heads,
        });
    }

    let mut required = vec![
        "token_embd.weight".to_string(),
        "output_norm.weight".to_string(),
    ];
    for layer in 0..c.num_hidden_layers {
        for part in [
            "attn_norm",
            "ffn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        ] {
            required.push(format!("blk.{layer}.{part}.weight"));
        }
    }
    if let Some(missing) = required.iter().find(|n| file.tensor(n).is_none()) {
        return Err(GgufError::invalid(
            path,
            format!("tensor '{missing}'"),
            "missing: a llama model needs it",
        ));
    }
    Ok(LlamaModel {
        config,
        tensors,
        skipped,
    })
}

fn config(file: &GgufFile, arch: &str) -> Result<LlamaConfig> {
    let key = |s: &str| format!("{arch}.{s}");
    let positive = |k: &str, v: u64| {
        if v == 0 {
            Err(file.key_error(k, "must be positive"))
        } else {
            Ok(v)
        }
    };
    let hidden = positive(
        &key("embedding_length"),
        file.req_u64(&key("embedding_length"))?,
    )?;
    let layers = positive(&key("block_count"), file.req_u64(&key("block_count"))?)?;
    let ffn = positive(
        &key("feed_forward_length"),
        file.req_u64(&key("feed_forward_length"))?,
    )?;
    let heads_key = key("attention.head_count");
    let heads = positive(&heads_key, file.req_u64(&heads_key)?)?;
    let kv_key = key("attention.head_count_kv");
    let kv_heads = positive(&kv_key, file.opt_u64(&kv_key)?.unwrap_or(heads))?;
    if heads % kv_heads != 0 {
        return Err(file.key_error(
            &kv_key,
            format!("{kv_heads} key/value heads do not divide {heads} attention heads"),
        ));
    }
    let ctx_key = key("context_length");
    let context = positive(&ctx_key, file.req_u64(&ctx_key)?)?;
    let eps_key = key("attention.layer_norm_rms_epsilon");
    let eps = file
        .opt_f64(&eps_key)?
        .ok_or_else(|| file.key_error(&eps_key, "missing (required)"))?;
    let theta = file.opt_f64(&key("rope.freq_base"))?.unwrap_or(10_000.0);

    // llama.cpp states the head size as key_length (newer files) and as the rotary width;
    // transformers reads the latter. For llama they are the same, and both must be even.
    let key_len_key = key("attention.key_length");
    let rope_key = key("rope.dimension_count");
    let head_dim = match file.opt_u64(&key_len_key)? {
        Some(v) => positive(&key_len_key, v)?,
        None => match file.opt_u64(&rope_key)? {
            Some(v) => positive(&rope_key, v)?,
            None => {
                if hidden % heads != 0 {
                    return Err(file.key_error(
                        &heads_key,
                        format!("{heads} heads do not divide the embedding length {hidden}, and no head size is stated"),
                    ));
                }
                hidden / heads
            }
        },
    };
    for k in [&rope_key, &key("attention.value_length")] {
        if let Some(v) = file.opt_u64(k)? {
            if v != head_dim {
                return Err(GgufError::unsupported(
                    file.path(),
                    format!("metadata key '{k}'"),
                    format!("{v} differs from the head size {head_dim}: not a llama layout"),
                ));
            }
        }
    }
    if head_dim % 2 != 0 {
        return Err(file.key_error(&rope_key, format!("head size {head_dim} is odd")));
    }

    let scaling_key = key("rope.scaling.type");
    let rope_scaling = match file.opt_str(&scaling_key)? {
        None | Some("none") => None,
        Some("linear") => {
            let factor_key = key("rope.scaling.factor");
            let factor = file
                .opt_f64(&factor_key)?
                .ok_or_else(|| file.key_error(&factor_key, "missing (linear rope scaling)"))?;
            Some(serde_json::json!({"rope_type": "linear", "type": "linear", "factor": factor}))
        }
        Some(other) => {
            return Err(GgufError::unsupported(
                file.path(),
                format!("metadata key '{scaling_key}'"),
                format!("rope scaling '{other}' is not supported (only none and linear)"),
            ))
        }
    };

    let embd = file.tensor("token_embd.weight").ok_or_else(|| {
        GgufError::invalid(
            file.path(),
            "tensor 'token_embd.weight'",
            "missing: a llama model needs it",
        )
    })?;
    let embd_rows = embd.shape().first().copied().unwrap_or(0);
    let vocab_key = key("vocab_size");
    let vocab = match file.opt_u64(&vocab_key)? {
        Some(v) => v,
        None => match file.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()) {
            Some(tokens) => tokens.len() as u64,
            None => embd_rows,
        },
    };
    if vocab != embd_rows {
        return Err(GgufError::invalid(
            file.path(),
            "tensor 'token_embd.weight'",
            format!("{embd_rows} rows but the vocabulary has {vocab} tokens"),
        ));
    }
    let token = |name: &str| -> Result<Option<u64>> {
        let k = format!("tokenizer.ggml.{name}");
        match file.opt_u64(&k)? {
            Some(id) if id >= vocab => Err(file.key_error(
                &k,
                format!("token id {id} outside the vocabulary of {vocab}"),
            )),
            other => Ok(other),
        }
    };

    Ok(LlamaConfig {
        architectures: vec!["LlamaForCausalLM".into()],
        model_type: "llama".into(),
        hidden_size: hidden,
        intermediate_size: ffn,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        head_dim,
        rms_norm_eps: eps,
        rope_theta: theta,
        rope_scaling,
        max_position_embeddings: context,
        vocab_size: vocab,
        tie_word_embeddings: file.tensor("output.weight").is_none(),
        bos_token_id: token("bos_token_id")?,
        eos_token_id: token("eos_token_id")?,
        pad_token_id: token("padding_token_id")?,
        unk_token_id: token("unknown_token_id")?,
        hidden_act: "silu".into(),
        attention_bias: false,
        mlp_bias: false,
        torch_dtype: "float32".into(),
    })
}

/// Undoes llama.cpp's `permute` of a q or k projection (`rows` × `cols`, row-major): its
/// converter interleaves the two rotary halves of each head, transformers' `rotate_half`
/// wants them as two blocks. As transformers' `reverse_permute_weights`:
/// `w.reshape(n_head, dim, 2, cols).swapaxes(1, 2)`, i.e. output row `h·2d + t·d + i` is input
/// row `h·2d + 2i + t`.
pub fn unpermute_rows(src: &[f32], rows: usize, cols: usize, n_head: usize) -> Option<Vec<f32>> {
    if n_head == 0 || !rows.is_multiple_of(2 * n_head) || src.len() != rows.checked_mul(cols)? {
        return None;
    }
    let dim = rows / n_head / 2;
    let mut out = Vec::with_capacity(src.len());
    for h in 0..n_head {
        for t in 0..2 {
            for i in 0..dim {
                let from = h * 2 * dim + 2 * i + t;
                out.extend_from_slice(src.get(from * cols..(from + 1) * cols)?);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::quant::GgmlType;
    use crate::testutil::{Kv, TestGguf};
    use std::path::Path;

    /// A complete tiny llama GGUF (F32 tensors filled with `fill(name, index)`), no tokenizer.
    pub fn tiny_llama(layers: u64, tied: bool) -> TestGguf {
        let (hidden, heads, kv, ffn, vocab) = (32u64, 2u64, 1u64, 12u64, 6u64);
        let hd = hidden / heads;
        let mut g = TestGguf::new();
        g.kv("general.architecture", Kv::Str("llama".into()));
        g.kv("general.name", Kv::Str("tiny".into()));
        g.kv("llama.block_count", Kv::U32(layers as u32));
        g.kv("llama.context_length", Kv::U32(64));
        g.kv("llama.embedding_length", Kv::U32(hidden as u32));
        g.kv("llama.feed_forward_length", Kv::U32(ffn as u32));
        g.kv("llama.attention.head_count", Kv::U32(heads as u32));
        g.kv("llama.attention.head_count_kv", Kv::U32(kv as u32));
        g.kv("llama.rope.freq_base", Kv::F32(10000.0));
        g.kv("llama.attention.layer_norm_rms_epsilon", Kv::F32(1e-5));
        g.kv("llama.rope.dimension_count", Kv::U32(hd as u32));
        let add = |g: &mut TestGguf, name: &str, dims: &[u64]| {
            let n: u64 = dims.iter().product();
            let seed = name.bytes().map(u64::from).sum::<u64>();
            let vals: Vec<f32> = (0..n)
                .map(|i| ((seed * 7 + i) % 23) as f32 - 11.0)
                .collect();
            g.tensor_f32(name, dims, &vals);
        };
        add(&mut g, "token_embd.weight", &[hidden, vocab]);
        for l in 0..layers {
            add(&mut g, &format!("blk.{l}.attn_norm.weight"), &[hidden]);
            add(
                &mut g,
                &format!("blk.{l}.attn_q.weight"),
                &[hidden, heads * hd],
            );
            add(
                &mut g,
                &format!("blk.{l}.attn_k.weight"),
                &[hidden, kv * hd],
            );
            add(
                &mut g,
                &format!("blk.{l}.attn_v.weight"),
                &[hidden, kv * hd],
            );
            add(
                &mut g,
                &format!("blk.{l}.attn_output.weight"),
                &[heads * hd, hidden],
            );
            add(&mut g, &format!("blk.{l}.ffn_norm.weight"), &[hidden]);
            add(&mut g, &format!("blk.{l}.ffn_gate.weight"), &[hidden, ffn]);
            add(&mut g, &format!("blk.{l}.ffn_up.weight"), &[hidden, ffn]);
            add(&mut g, &format!("blk.{l}.ffn_down.weight"), &[ffn, hidden]);
        }
        add(&mut g, "output_norm.weight", &[hidden]);
        if !tied {
            add(&mut g, "output.weight", &[hidden, vocab]);
        }
        g
    }

    fn plan_of(g: &TestGguf) -> Result<LlamaModel> {
        let bytes = g.build();
        let f = GgufFile::parse(Path::new("m.gguf"), bytes.as_slice(), bytes.len() as u64)?;
        plan(&f)
    }

    #[test]
    fn config_and_names() {
        let m = plan_of(&tiny_llama(2, true)).unwrap();
        let c = &m.config;
        assert_eq!(
            (
                c.hidden_size,
                c.num_hidden_layers,
                c.num_attention_heads,
                c.num_key_value_heads
            ),
            (32, 2, 2, 1)
        );
        assert_eq!((c.head_dim, c.intermediate_size, c.vocab_size), (16, 12, 6));
        assert_eq!(c.rms_norm_eps, f64::from(1e-5f32));
        assert!(c.tie_word_embeddings);
        assert_eq!(m.tensors.len(), 2 + 2 * 9);
        let names: Vec<_> = m.tensors.iter().map(|t| t.hf_name.as_str()).collect();
        assert!(names.contains(&"model.layers.1.self_attn.k_proj.weight"));
        assert!(names.contains(&"model.layers.0.post_attention_layernorm.weight"));
        assert!(!names.contains(&"lm_head.weight"));
        let k = m
            .tensors
            .iter()
            .find(|t| t.hf_name == "model.layers.0.self_attn.k_proj.weight")
            .unwrap();
        assert_eq!(k.hf_shape, vec![16, 32]);
        assert_eq!(k.unpermute_heads, Some(1));
        let json = serde_json::to_value(c).unwrap();
        assert_eq!(json["architectures"][0], "LlamaForCausalLM");
        assert_eq!(json["torch_dtype"], "float32");
        assert!(json.get("rope_scaling").is_none());

        let m = plan_of(&tiny_llama(1, false)).unwrap();
        assert!(!m.config.tie_word_embeddings);
        assert!(m.tensors.iter().any(|t| t.hf_name == "lm_head.weight"));
    }

    #[test]
    fn errors_name_key_or_tensor() {
        let mut g = tiny_llama(1, true);
        g.set("general.architecture", Kv::Str("qwen2".into()));
        let e = plan_of(&g).unwrap_err();
        assert!(matches!(e, GgufError::Unsupported { .. }));
        assert!(
            e.to_string()
                .contains("m.gguf: metadata key 'general.architecture': architecture 'qwen2'"),
            "{e}"
        );

        let mut g = tiny_llama(1, true);
        g.remove("llama.embedding_length");
        let e = plan_of(&g).unwrap_err().to_string();
        assert!(e.contains("'llama.embedding_length': missing"), "{e}");

        let mut g = tiny_llama(1, true);
        g.set("llama.attention.head_count_kv", Kv::U32(3));
        assert!(plan_of(&g)
            .unwrap_err()
            .to_string()
            .contains("do not divide"));

        let mut g = tiny_llama(2, true);
        g.remove_tensor("blk.1.ffn_up.weight");
        let e = plan_of(&g).unwrap_err().to_string();
        assert!(e.contains("tensor 'blk.1.ffn_up.weight': missing"), "{e}");

        let mut g = tiny_llama(1, true);
        g.set("llama.feed_forward_length", Kv::U32(16));
        let e = plan_of(&g).unwrap_err().to_string();
        assert!(
            e.contains("tensor 'blk.0.ffn_gate.weight': shape [12, 32]"),
            "{e}"
        );

        let mut g = tiny_llama(1, true);
        g.tensor_f32("blk.0.attn_q.bias", &[32], &[0.0; 32]);
        let e = plan_of(&g).unwrap_err().to_string();
        assert!(e.contains("tensor 'blk.0.attn_q.bias'"), "{e}");

        let mut g = tiny_llama(1, true);
        g.tensor_f32("blk.3.attn_q.weight", &[32, 32], &[0.0; 1024]);
        assert!(plan_of(&g).unwrap_err().to_string().contains("layer 3"));

        let mut g = tiny_llama(1, true);
        g.set("tokenizer.ggml.eos_token_id", Kv::U32(99));
        assert!(plan_of(&g)
            .unwrap_err()
            .to_string()
            .contains("'tokenizer.ggml.eos_token_id': token id 99 outside"));

        let mut g = tiny_llama(1, true);
        g.set("llama.rope.scaling.type", Kv::Str("yarn".into()));
        assert!(plan_of(&g).unwrap_err().to_string().contains("yarn"));
    }

    #[test]
    fn unsupported_quant_type_of_a_mapped_tensor_is_refused_up_front() {
        let mut g = tiny_llama(1, true);
        g.remove_tensor("output_norm.weight");
        g.raw_tensor("output_norm.weight", &[32], GgmlType::F16.id(), vec![0; 64]);
        assert!(plan_of(&g).is_ok());
        g.remove_tensor("output_norm.weight");
        // F64: a type ggml knows, but no llama.cpp converter writes weights in.
        g.raw_tensor(
            "output_norm.weight",
            &[32],
            GgmlType::F64.id(),
            vec![0; 256],
        );
        let e = plan_of(&g).unwrap_err();
        assert!(matches!(e, GgufError::Unsupported { .. }));
        let e = e.to_string();
        assert!(
            e.contains("tensor 'output_norm.weight': ggml type F64 cannot be dequantised"),
            "{e}"
        );
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(n_head, 2, rows / n_head / 2, cols).swapaxes(1, 2)
        let (rows, cols, n_head) = (12usize, 3usize, 2usize);
        let hf: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
        let dim = rows / n_head / 2;
        let mut permuted = Vec::new();
        for h in 0..n_head {
            for i in 0..dim {
                for t in 0..2 {
                    let r = h * 2 * dim + t * dim + i;
                    permuted.extend_from_slice(&hf[r * cols..(r + 1) * cols]);
                }
            }
        }
        assert_ne!(permuted, hf);
        assert_eq!(unpermute_rows(&permuted, rows, cols, n_head).unwrap(), hf);
        assert!(unpermute_rows(&permuted, rows, cols, 5).is_none());
        assert!(unpermute_rows(&permuted[1..], rows, cols, n_head).is_none());
    }
}
