//! GGUF import: a llama.cpp model file becomes a Hugging Face model directory
//! (`model.safetensors` in f32 with transformers' names, `config.json`, `tokenizer.json`,
//! `tokenizer_config.json`, `generation_config.json`) that `vla-model` and transformers load.
//!
//! Free of tch so that it builds and tests anywhere. The weights are bit-identical to what
//! transformers' own GGUF loader produces, which the integration test checks on
//! SmolLM2-135M-Instruct (Q4_1):
//!
//! - [`reader`]: the file format, header only in memory, every size checked against the file;
//! - [`quant`]: ggml's block formats, dequantised as gguf-py does;
//! - [`llama`]: GGUF `llama` → `LlamaForCausalLM` names, shapes, config, q/k un-permutation;
//! - [`tokenizer`]: `tokenizer.json` from the `tokenizer.ggml.*` metadata;
//! - `export`: the streamed safetensors writer and the JSON files.
//!
//! ```no_run
//! # fn main() -> Result<(), vla_gguf::GgufError> {
//! let import = vla_gguf::Import::prepare("model.gguf".as_ref(), &Default::default())?;
//! let report = import.write("out".as_ref(), &mut |_| {})?;
//! println!("{} tensors", report.tensors);
//! # Ok(()) }
//! ```

mod error;
mod export;
pub mod llama;
pub mod quant;
pub mod reader;
#[cfg(test)]
mod testutil;
pub mod tokenizer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{json, Map};

pub use error::{GgufError, Result};
pub use llama::{LlamaConfig, LlamaModel, MappedTensor};
pub use quant::GgmlType;
pub use reader::{GgufFile, TensorInfo, Value};
pub use tokenizer::TokenizerFiles;

/// Options of an import.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Write the weights and config without a tokenizer (for tokenizer models not supported).
    pub skip_tokenizer: bool,
}

/// What an import wrote.
#[derive(Clone, Debug, Serialize)]
pub struct ImportReport {
    pub gguf: PathBuf,
    pub out: PathBuf,
    pub gguf_version: u32,
    pub architecture: String,
    /// `general.name`, when the file has one.
    pub name: Option<String>,
    /// Tensors written to `model.safetensors`.
    pub tensors: usize,
    pub parameters: u64,
    /// ggml type name → number of tensors of that type that were written.
    pub quant_types: BTreeMap<String, usize>,
    /// GGUF tensors left out, with the reason.
    pub skipped_tensors: Vec<(String, String)>,
    pub tie_word_embeddings: bool,
    pub vocab_size: u64,
    /// File names written into `out`.
    pub files: Vec<String>,
    pub safetensors_bytes: u64,
}

/// A checked import: the header is parsed, every tensor mapped and the tokenizer built before
/// anything is written, so that errors come before a half-written directory.
#[derive(Debug)]
pub struct Import {
    gguf: GgufFile,
    model: LlamaModel,
    tokenizer: Option<TokenizerFiles>,
}

impl Import {
    /// Reads the GGUF header at `path` and plans the conversion.
    pub fn prepare(path: &Path, options: &ImportOptions) -> Result<Self> {
        let gguf = GgufFile::open(path)?;
        tracing::debug!(
            "{}: GGUF v{}, {} metadata keys, {} tensors, alignment {}",
            path.display(),
            gguf.version,
            gguf.metadata.len(),
            gguf.tensors.len(),
            gguf.alignment
        );
        let model = llama::plan(&gguf)?;
        for (name, why) in &model.skipped {
            tracing::warn!("{}: tensor '{name}' left out: {why}", path.display());
        }
        let tokenizer = if options.skip_tokenizer {
            None
        } else {
            Some(tokenizer::build(
                &gguf,
                model.config.max_position_embeddings,
            )?)
        };
        Ok(Import {
            gguf,
            model,
            tokenizer,
        })
    }

    pub fn gguf(&self) -> &GgufFile {
        &self.gguf
    }

    pub fn model(&self) -> &LlamaModel {
        &self.model
    }

    pub fn tokenizer(&self) -> Option<&TokenizerFiles> {
        self.tokenizer.as_ref()
    }

    /// Writes the directory `out` (created if missing; files of the same names replaced),
    /// calling `progress` after each tensor.
    pub fn write(
        &self,
        out: &Path,
        progress: &mut dyn FnMut(&MappedTensor),
    ) -> Result<ImportReport> {
        std::fs::create_dir_all(out).map_err(|e| GgufError::io(out, "cannot create", e))?;
        let config = &self.model.config;
        let mut files = Vec::new();

        let config_json = serde_json::to_value(config)
            .map_err(|e| GgufError::io(out, "cannot encode config", std::io::Error::other(e)))?;
        export::write_json(&out.join("config.json"), &config_json)?;
        files.push("config.json".to_string());

        let mut generation = Map::new();
        for (key, id) in [
            ("bos_token_id", config.bos_token_id),
            ("eos_token_id", config.eos_token_id),
            ("pad_token_id", config.pad_token_id),
        ] {
            if let Some(id) = id {
                generation.insert(key.into(), json!(id));
            }
        }
        export::write_json(
            &out.join("generation_config.json"),
            &serde_json::Value::Object(generation),
        )?;
        files.push("generation_config.json".to_string());

        if let Some(tok) = &self.tokenizer {
            export::write_json(&out.join("tokenizer.json"), &tok.tokenizer)?;
            export::write_json(&out.join("tokenizer_config.json"), &tok.tokenizer_config)?;
            files.push("tokenizer.json".to_string());
            files.push("tokenizer_config.json".to_string());
        }

        let mut data = self.gguf.data()?;
        let bytes = export::write_safetensors(
            &mut data,
            self.gguf.path(),
            &self.model.tensors,
            &out.join("model.safetensors"),
            progress,
        )?;
        files.push("model.safetensors".to_string());

        let mut quant_types = BTreeMap::new();
        for t in &self.model.tensors {
            *quant_types
                .entry(t.gguf.ggml_type.name().to_string())
                .or_insert(0) += 1;
        }
        let report = ImportReport {
            gguf: self.gguf.path().to_path_buf(),
            out: out.to_path_buf(),
            gguf_version: self.gguf.version,
            architecture: "llama".into(),
            name: self
                .gguf
                .get("general.name")
                .and_then(Value::as_str)
                .map(str::to_string),
            tensors: self.model.tensors.len(),
            parameters: self.model.tensors.iter().map(|t| t.gguf.n_elements).sum(),
            quant_types,
            skipped_tensors: self.model.skipped.clone(),
            tie_word_embeddings: config.tie_word_embeddings,
            vocab_size: config.vocab_size,
            files,
            safetensors_bytes: bytes,
        };
        tracing::info!(
            "{}: {} tensors, {} parameters written to {}",
            self.gguf.path().display(),
            report.tensors,
            report.parameters,
            out.display()
        );
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llama::tests::tiny_llama;
    use crate::quant::GgmlType;
    use crate::testutil::{Kv, TestGguf};
    use half::f16;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vla-gguf-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn read_f32(st: &safetensors::SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f32>) {
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::F32);
        let v = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        (t.shape().to_vec(), v)
    }

    /// Replaces a tiny-llama tensor by a quantised one with known values.
    fn q8_tensor(g: &mut TestGguf, name: &str, dims: &[u64], d: f32) -> Vec<f32> {
        let n = dims.iter().product::<u64>() as usize;
        let mut raw = Vec::new();
        let mut values = Vec::new();
        for b in 0..n / 32 {
            raw.extend(f16::from_f32(d).to_le_bytes());
            for j in 0..32 {
                let q = ((b * 32 + j) % 255) as i32 - 127;
                raw.push(q as i8 as u8);
                values.push(q as f32 * f16::from_f32(d).to_f32());
            }
        }
        g.remove_tensor(name);
        g.raw_tensor(name, dims, GgmlType::Q8_0.id(), raw);
        values
    }

    #[test]
    fn writes_a_loadable_directory() {
        let dir = scratch("import");
        let mut g = tiny_llama(2, false);
        let gate = q8_tensor(&mut g, "blk.1.ffn_gate.weight", &[32, 12], 0.125);
        let path = dir.join("tiny.gguf");
        std::fs::write(&path, g.build()).unwrap();
        let import = Import::prepare(
            &path,
            &ImportOptions {
                skip_tokenizer: true,
            },
        )
        .unwrap();
        let mut seen = Vec::new();
        let out = dir.join("hf");
        let report = import
            .write(&out, &mut |t| seen.push(t.hf_name.clone()))
            .unwrap();
        assert_eq!(report.tensors, 2 * 9 + 3);
        assert_eq!(seen.len(), report.tensors);
        assert_eq!(report.quant_types["Q8_0"], 1);
        assert_eq!(report.quant_types["F32"], 20);
        assert!(!report.tie_word_embeddings);
        assert!(!out.join("tokenizer.json").exists());
        assert!(!out.join("model.safetensors.partial").exists());

        let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
        assert_eq!(bytes.len() as u64, report.safetensors_bytes);
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.len(), report.tensors);
        let (shape, v) = read_f32(&st, "model.layers.1.mlp.gate_proj.weight");
        assert_eq!(shape, [12, 32]);
        assert_eq!(v, gate);
        let (shape, _) = read_f32(&st, "lm_head.weight");
        assert_eq!(shape, [6, 32]);

        // q: the GGUF rows were llama.cpp-permuted; ours must be the un-permuted ones.
        let f = GgufFile::open(&path).unwrap();
        let q = f.tensor("blk.0.attn_q.weight").unwrap();
        let raw = f.data().unwrap().rows(q, 0, q.n_rows()).unwrap();
        let mut src = vec![0f32; 32 * 32];
        quant::dequantize(GgmlType::F32, &raw, &mut src).unwrap();
        let (_, ours) = read_f32(&st, "model.layers.0.self_attn.q_proj.weight");
        assert_ne!(ours, src);
        // 32 rows, 2 heads of 16, halves of 8: HF row 16h + 8t + i is GGUF row 16h + 2i + t.
        for h in 0..2 {
            for t in 0..2 {
                for i in 0..8 {
                    let (hf, gg) = (16 * h + 8 * t + i, 16 * h + 2 * i + t);
                    assert_eq!(ours[hf * 32..hf * 32 + 32], src[gg * 32..gg * 32 + 32]);
                }
            }
        }
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["num_key_value_heads"], 1);
        assert_eq!(config["tie_word_embeddings"], false);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_tokenizer_less_file_needs_skip_tokenizer() {
        let dir = scratch("notok");
        let path = dir.join("tiny.gguf");
        std::fs::write(&path, tiny_llama(1, true).build()).unwrap();
        let e = Import::prepare(&path, &ImportOptions::default()).unwrap_err();
        assert!(e.to_string().contains("tokenizer.ggml.model"), "{e}");
        let mut g = tiny_llama(1, true);
        g.kv("tokenizer.ggml.model", Kv::Str("llama".into()));
        std::fs::write(&path, g.build()).unwrap();
        let e = Import::prepare(&path, &ImportOptions::default()).unwrap_err();
        assert!(
            e.to_string().starts_with(&path.display().to_string()),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_panic_on_corrupted_files() {
        // Flip bytes all over a valid file: every outcome must be Ok or a clean error.
        let dir = scratch("fuzz");
        let path = dir.join("f.gguf");
        let good = tiny_llama(1, true).build();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for round in 0..300 {
            let mut b = good.clone();
            for _ in 0..(1 + round % 4) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = (state % b.len() as u64) as usize;
                b[at] = (state >> 32) as u8;
            }
            if round % 5 == 0 {
                b.truncate((state >> 8) as usize % b.len());
            }
            std::fs::write(&path, &b).unwrap();
            if let Ok(import) = Import::prepare(
                &path,
                &ImportOptions {
                    skip_tokenizer: true,
                },
            ) {
                let _ = import.write(&dir.join("out"), &mut |_| {});
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
