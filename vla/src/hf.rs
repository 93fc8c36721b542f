//! Hugging Face interop: a pretrained model directory (`config.json` + `model.safetensors`,
//! as `save_pretrained` writes it) into our components.
//!
//! `transformers`' `LlamaConfig` and `ViTConfig` become [`TextConfig`] and [`VisionConfig`]:
//! keys we read get `transformers`' defaults when absent (so a config means what it means
//! there), values we cannot honour (biased attention, rope scaling, another activation) are
//! errors naming the file and the key, and keys that change nothing here are listed in a
//! note. [`PretrainedLm`] is a `LlamaForCausalLM` on its own — what `vla generate` runs and
//! what `tests/hf_parity.rs` checks against `transformers`, logits for logits.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{import_weights, CONFIG_FILE, WEIGHTS_FILE};
use crate::config::{TextConfig, VisionConfig};
use crate::error::{Result, VlaError};
use crate::model::llama::{KvCache, Llama};

/// A parsed `config.json` and the keys of it that played no part.
#[derive(Clone, Debug)]
pub struct HfConfig<T> {
    pub config: T,
    /// Keys that were present but are not read (bookkeeping such as `transformers_version`,
    /// or settings with no meaning here such as dropout). Sorted.
    pub ignored: Vec<String>,
}

/// Reads one `config.json` key by key, remembering which were used.
struct Keys<'a> {
    path: &'a Path,
    map: &'a Map<String, Value>,
    used: Vec<&'static str>,
}

impl<'a> Keys<'a> {
    fn new(path: &'a Path, map: &'a Map<String, Value>) -> Self {
        Keys {
            path,
            map,
            used: Vec::new(),
        }
    }

    /// `model_type` and `hidden_act` (absent: the values asked for) must be the ones our
    /// module implements.
    fn expect_model(&mut self, model_type: &'static str, act: &'static str) -> Result<()> {
        let got = self.str("model_type", model_type)?;
        self.require("model_type", got, model_type)?;
        let got = self.str("hidden_act", act)?;
        self.require("hidden_act", got, act)
    }

    fn err(&self, key: &str, message: impl std::fmt::Display) -> VlaError {
        VlaError::Config {
            path: self.path.to_path_buf(),
            message: format!("key `{key}`: {message}"),
        }
    }

    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.used.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn usize(&mut self, key: &'static str, default: usize) -> Result<usize> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| self.err(key, format!("expected a non-negative integer, got {v}"))),
        }
    }

    fn opt_usize(&mut self, key: &'static str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.usize(key, 0).map(Some),
        }
    }

    fn f64(&mut self, key: &'static str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.err(key, format!("expected a number, got {v}"))),
        }
    }

    fn bool(&mut self, key: &'static str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(key, format!("expected true or false, got {v}"))),
        }
    }

    fn str(&mut self, key: &'static str, default: &'a str) -> Result<&'a str> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_str()
                .ok_or_else(|| self.err(key, format!("expected a string, got {v}"))),
        }
    }

    /// A setting we implement one way only: anything else is an error, not a silent change.
    fn require<T: PartialEq + std::fmt::Debug>(&self, key: &str, got: T, want: T) -> Result<()> {
        if got == want {
            Ok(())
        } else {
            Err(self.err(key, format!("{got:?} is not supported (only {want:?})")))
        }
    }

    fn ignored(&self) -> Vec<String> {
        let mut rest: Vec<String> = self
            .map
            .keys()
            .filter(|k| !self.used.contains(&k.as_str()))
            .cloned()
            .collect();
        rest.sort();
        rest
    }
}

fn read_json(path: &Path) -> Result<Map<String, Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| VlaError::Config {
        path: path.to_path_buf(),
        message: format!("cannot read: {e}"),
    })?;
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(VlaError::Config {
            path: path.to_path_buf(),
            message: "expected a JSON object".into(),
        }),
        Err(e) => Err(VlaError::Config {
            path: path.to_path_buf(),
            message: format!("invalid JSON: {e}"),
        }),
    }
}

fn note_ignored(path: &Path, ignored: &[String]) {
    if !ignored.is_empty() {
        tracing::info!(file = %path.display(), keys = ?ignored, "config keys with no effect here");
    }
}

/// `LlamaConfig` (`model_type` "llama") from a `config.json`, with `transformers`' defaults.
pub fn llama_config(path: impl AsRef<Path>) -> Result<HfConfig<TextConfig>> {
    let path = path.as_ref();
    let map = read_json(path)?;
    let mut k = Keys::new(path, &map);
    k.expect_model("llama", "silu")?;
    let attention_bias = k.bool("attention_bias", false)?;
    k.require("attention_bias", attention_bias, false)?;
    let mlp_bias = k.bool("mlp_bias", false)?;
    k.require("mlp_bias", mlp_bias, false)?;
    // transformers 5 keeps rotary settings in `rope_parameters`; 4.x in `rope_theta` and
    // `rope_scaling`.
    let mut rope_theta = k.f64("rope_theta", 10_000.0)?;
    for key in ["rope_parameters", "rope_scaling"] {
        let key: &'static str = key;
        if let Some(rope) = k.get(key) {
            let rope = rope
                .as_object()
                .ok_or_else(|| k.err(key, format!("expected an object, got {rope}")))?;
            let kind = rope
                .get("rope_type")
                .or_else(|| rope.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("default");
            k.require(key, kind, "default")?;
            if let Some(theta) = rope.get("rope_theta") {
                rope_theta = theta
                    .as_f64()
                    .ok_or_else(|| k.err(key, format!("rope_theta is not a number: {theta}")))?;
            }
        }
    }
    let num_attention_heads = k.usize("num_attention_heads", 32)?;
    let eos_token_id = match k.get("eos_token_id") {
        None => None,
        // A list of end ids: the first is the one generation appends.
        Some(Value::Array(ids)) => ids.first().and_then(Value::as_u64).map(|n| n as usize),
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| k.err("eos_token_id", format!("expected an id, got {v}")))?
                as usize,
        ),
    };
    let config = TextConfig {
        vocab_size: k.usize("vocab_size", 32_000)?,
        hidden_size: k.usize("hidden_size", 4096)?,
        intermediate_size: k.usize("intermediate_size", 11_008)?,
        num_hidden_layers: k.usize("num_hidden_layers", 32)?,
        num_attention_heads,
        num_key_value_heads: k.usize("num_key_value_heads", num_attention_heads)?,
        rms_norm_eps: k.f64("rms_norm_eps", 1e-6)?,
        rope_theta,
        head_dim: k.opt_usize("head_dim")?,
        tie_word_embeddings: k.bool("tie_word_embeddings", false)?,
        lora: None,
        max_position_embeddings: k.usize("max_position_embeddings", 2048)?,
        eos_token_id,
    };
    check_text(path, &config)?;
    let ignored = k.ignored();
    note_ignored(path, &ignored);
    Ok(HfConfig { config, ignored })
}

fn check_text(path: &Path, c: &TextConfig) -> Result<()> {
    let bad = |key: &str, message: String| VlaError::Config {
        path: path.to_path_buf(),
        message: format!("key `{key}`: {message}"),
    };
    if c.num_attention_heads == 0 || c.num_key_value_heads == 0 {
        return Err(bad("num_attention_heads", "heads must be positive".into()));
    }
    if !c.num_attention_heads.is_multiple_of(c.num_key_value_heads) {
        return Err(bad(
            "num_key_value_heads",
            format!(
                "{} does not divide num_attention_heads {}",
                c.num_key_value_heads, c.num_attention_heads
            ),
        ));
    }
    let hd = c.attention_head_dim();
    if hd == 0 || !hd.is_multiple_of(2) {
        return Err(bad("head_dim", format!("head width {hd} must be even")));
    }
    for (key, v) in [
        ("vocab_size", c.vocab_size),
        ("hidden_size", c.hidden_size),
        ("num_hidden_layers", c.num_hidden_layers),
        ("max_position_embeddings", c.max_position_embeddings),
    ] {
        if v == 0 {
            return Err(bad(key, "must be positive".into()));
        }
    }
    Ok(())
}

/// `ViTConfig` (`model_type` "vit") from a `config.json`, with `transformers`' defaults; the
/// result has a CLS token and one camera, and none of our additions (stem, keypoints,
/// grounding) — the plain `ViTModel`.
pub fn vit_config(path: impl AsRef<Path>) -> Result<HfConfig<VisionConfig>> {
    let path = path.as_ref();
    let map = read_json(path)?;
    let mut k = Keys::new(path, &map);
    k.expect_model("vit", "gelu")?;
    let qkv_bias = k.bool("qkv_bias", true)?;
    k.require("qkv_bias", qkv_bias, true)?;
    let config = VisionConfig {
        image_size: k.usize("image_size", 224)?,
        patch_size: k.usize("patch_size", 16)?,
        num_channels: k.usize("num_channels", 3)?,
        hidden_size: k.usize("hidden_size", 768)?,
        num_hidden_layers: k.usize("num_hidden_layers", 12)?,
        num_attention_heads: k.usize("num_attention_heads", 12)?,
        intermediate_size: k.usize("intermediate_size", 3072)?,
        layer_norm_eps: k.f64("layer_norm_eps", 1e-12)?,
        use_cls_token: true,
        num_cameras: 1,
        num_keypoints: 0,
        stem_channels: Vec::new(),
        film: false,
        grounding_heads: 0,
        grounding_fine: false,
        grounding_phrases: false,
        image_mean: [0.5; 3],
        image_std: [0.5; 3],
    };
    if config.patch_size == 0
        || config.num_attention_heads == 0
        || !config.image_size.is_multiple_of(config.patch_size)
        || !config
            .hidden_size
            .is_multiple_of(config.num_attention_heads)
    {
        return Err(VlaError::Config {
            path: path.to_path_buf(),
            message: format!(
                "keys `image_size`/`patch_size`/`hidden_size`/`num_attention_heads`: {} / {} / {} / {} do not divide evenly",
                config.image_size, config.patch_size, config.hidden_size, config.num_attention_heads
            ),
        });
    }
    let ignored = k.ignored();
    note_ignored(path, &ignored);
    Ok(HfConfig { config, ignored })
}

/// Which pretrained LM a LoRA run is built on: its directory and the SHA-256 of its
/// `model.safetensors`, so a run never silently loads on top of other weights.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BaseLm {
    pub dir: PathBuf,
    pub sha256: String,
}

impl BaseLm {
    /// Hashes `dir/model.safetensors` (the directory is kept as an absolute path).
    pub fn of(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let dir = dir
            .canonicalize()
            .map_err(|e| VlaError::checkpoint(dir, format!("cannot resolve: {e}")))?;
        let sha256 = file_sha256(&dir.join(WEIGHTS_FILE))?;
        Ok(BaseLm { dir, sha256 })
    }

    /// Checks that the base is still there with the same weights.
    pub fn verify(&self) -> std::result::Result<(), String> {
        let path = self.dir.join(WEIGHTS_FILE);
        let now = file_sha256(&path).map_err(|e| {
            format!("the base language model of this LoRA run is not readable: {e}")
        })?;
        if now != self.sha256 {
            return Err(format!(
                "the base language model {} has changed since training (sha256 {} , the run expects {})",
                path.display(),
                now,
                self.sha256
            ));
        }
        Ok(())
    }
}

fn file_sha256(path: &Path) -> Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut file = std::fs::File::open(path)
        .map_err(|e| VlaError::checkpoint(path, format!("cannot read: {e}")))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| VlaError::checkpoint(path, format!("cannot read: {e}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// A `LlamaForCausalLM` loaded from a Hugging Face directory.
#[derive(Debug)]
pub struct PretrainedLm {
    pub dir: PathBuf,
    pub config: TextConfig,
    pub lm: Llama,
    vs: VarStore,
}

impl PretrainedLm {
    /// Loads `dir/config.json` and `dir/model.safetensors`. Every parameter must be in the
    /// file with its shape (a tied model needs no `lm_head.weight`); tensors the model has no
    /// place for are listed in a note.
    pub fn load(dir: impl AsRef<Path>, device: Device) -> Result<Self> {
        let dir = dir.as_ref();
        let HfConfig { config, .. } = llama_config(dir.join(CONFIG_FILE))?;
        let vs = VarStore::new(device);
        let lm = Llama::new(&vs.root(), &config, config.vocab_size, device);
        let weights = dir.join(WEIGHTS_FILE);
        let report = import_weights(&weights, &vs, |n| Some(n.to_string()), &[])?;
        if !report.missing.is_empty() {
            return Err(VlaError::checkpoint(
                &weights,
                format!(
                    "{} parameters of the model are not in the file, e.g. {:?}",
                    report.missing.len(),
                    &report.missing[..report.missing.len().min(5)]
                ),
            ));
        }
        if !report.unused.is_empty() {
            tracing::info!(file = %weights.display(), tensors = ?report.unused, "tensors not used");
        }
        Ok(PretrainedLm {
            dir: dir.to_path_buf(),
            config,
            lm,
            vs,
        })
    }

    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    fn check_ids(&self, ids: &[i64]) -> Result<()> {
        let v = self.config.vocab_size as i64;
        match ids.iter().find(|&&id| id < 0 || id >= v) {
            Some(id) => Err(VlaError::Input(format!(
                "token id {id} is outside the vocabulary of {v}"
            ))),
            None if ids.is_empty() => Err(VlaError::Input("empty prompt".into())),
            None => Ok(()),
        }
    }

    /// Logits `[T, V]` (f32) of every position of one unpadded sequence.
    pub fn logits(&self, ids: &[i64]) -> Result<Tensor> {
        self.check_ids(ids)?;
        let device = self.lm.embed_tokens.device();
        let ids = Tensor::from_slice(ids).to_device(device).unsqueeze(0);
        let mask = ids.ones_like().to_kind(Kind::Bool);
        tch::no_grad(|| {
            let mut cache = self.lm.new_cache();
            let hidden = self
                .lm
                .forward(&self.lm.embed(&ids, Kind::Float), &mask, &mut cache)?;
            Ok(self.lm.logits(&hidden).squeeze_dim(0))
        })
    }

    /// Greedy continuation of `ids` with the KV cache: at most `max_new_tokens` ids, ending
    /// early after `eos` (which is included). Ties go to the lowest id, as `argmax`.
    pub fn generate_greedy(
        &self,
        ids: &[i64],
        max_new_tokens: usize,
        eos: Option<i64>,
    ) -> Result<Vec<i64>> {
        self.check_ids(ids)?;
        let device = self.lm.embed_tokens.device();
        let room = self
            .config
            .max_position_embeddings
            .saturating_sub(ids.len());
        tch::no_grad(|| {
            let mut cache: KvCache = self.lm.new_cache();
            let mut next = Tensor::from_slice(ids).to_device(device).unsqueeze(0);
            let mut out = Vec::new();
            for _ in 0..max_new_tokens.min(room) {
                let mask = next.ones_like().to_kind(Kind::Bool);
                let hidden =
                    self.lm
                        .forward(&self.lm.embed(&next, Kind::Float), &mask, &mut cache)?;
                let last = hidden.select(1, hidden.size()[1] - 1);
                let id = self.lm.logits(&last).argmax(-1, false).int64_value(&[0]);
                out.push(id);
                if Some(id) == eos {
                    break;
                }
                next = Tensor::from_slice(&[id]).to_device(device).unsqueeze(0);
            }
            Ok(out)
        })
    }
}

/// Fills rows `old_rows..` of an embedding-like matrix `[V, D]` as `transformers`'
/// `resize_token_embeddings` does by default (`mean_resizing`): samples from a normal with
/// the old rows' mean and 1e-9 times their covariance — in effect the mean, so the new ids
/// (our action tokens) start where the old distribution's centre is and change no existing
/// token's probability much — or exactly the mean when that covariance is not positive
/// definite. Uses libtorch's global generator (seed it for reproducible imports).
pub fn init_added_rows(weight: &Tensor, old_rows: i64) -> Result<()> {
    let rows = weight.size()[0];
    if old_rows <= 0 || old_rows >= rows {
        return Ok(());
    }
    tch::no_grad(|| -> Result<()> {
        let old = weight.narrow(0, 0, old_rows).to_kind(Kind::Float);
        let mean = old.mean_dim(0, false, Kind::Float);
        let centred = &old - mean.unsqueeze(0);
        let cov = centred.transpose(0, 1).matmul(&centred) / old_rows as f64 * 1e-9;
        let added = rows - old_rows;
        let values = match cov.f_linalg_cholesky(false) {
            Ok(l) => {
                let z = Tensor::randn([added, mean.size()[0]], (Kind::Float, weight.device()));
                mean.unsqueeze(0) + z.matmul(&l.transpose(0, 1))
            }
            Err(_) => mean.unsqueeze(0).expand([added, mean.size()[0]], false),
        };
        let mut dst = weight.narrow(0, old_rows, added);
        dst.f_copy_(&values.to_kind(weight.kind()))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, json: &str) -> PathBuf {
        let path = dir.join("config.json");
        std::fs::write(&path, json).unwrap();
        path
    }

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vla-hf-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn llama_defaults_are_transformers_defaults() {
        let dir = tmp("defaults");
        let path = write(
            &dir,
            r#"{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
                "transformers_version": "5.23.0", "attention_dropout": 0.0}"#,
        );
        let HfConfig { config, ignored } = llama_config(&path).unwrap();
        assert_eq!(config.rms_norm_eps, 1e-6);
        assert_eq!(config.rope_theta, 10_000.0);
        assert_eq!(config.num_key_value_heads, 4, "defaults to the heads");
        assert_eq!(config.vocab_size, 32_000);
        assert!(!config.tie_word_embeddings);
        assert_eq!(config.attention_head_dim(), 16);
        assert_eq!(ignored, vec!["attention_dropout", "transformers_version"]);
    }

    #[test]
    fn llama_reads_both_rope_layouts_and_refuses_scaling() {
        let dir = tmp("rope");
        let v5 = write(
            &dir,
            r#"{"hidden_size": 64, "num_attention_heads": 4, "rope_parameters":
                {"rope_type": "default", "rope_theta": 100000.0}, "eos_token_id": [2, 7]}"#,
        );
        let c = llama_config(&v5).unwrap().config;
        assert_eq!(c.rope_theta, 100_000.0);
        assert_eq!(c.eos_token_id, Some(2));
        let scaled = write(
            &dir,
            r#"{"hidden_size": 64, "num_attention_heads": 4, "rope_scaling":
                {"rope_type": "llama3", "factor": 8.0}}"#,
        );
        let err = llama_config(&scaled).unwrap_err().to_string();
        assert!(
            err.contains("rope_scaling") && err.contains("llama3"),
            "{err}"
        );
        let biased = write(
            &dir,
            r#"{"hidden_size": 64, "num_attention_heads": 4, "attention_bias": true}"#,
        );
        let err = llama_config(&biased).unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("attention_bias"),
            "{err}"
        );
        let gqa = write(
            &dir,
            r#"{"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 3}"#,
        );
        let err = llama_config(&gqa).unwrap_err().to_string();
        assert!(err.contains("num_key_value_heads"), "{err}");
    }

    #[test]
    fn vit_defaults_are_transformers_defaults() {
        let dir = tmp("vit");
        let path = write(&dir, r#"{"model_type": "vit", "encoder_stride": 16}"#);
        let HfConfig { config, ignored } = vit_config(&path).unwrap();
        assert_eq!(config.layer_norm_eps, 1e-12);
        assert_eq!((config.image_size, config.patch_size), (224, 16));
        assert!(config.use_cls_token);
        assert_eq!(ignored, vec!["encoder_stride"]);
        let bad = write(&dir, r#"{"model_type": "vit", "hidden_act": "relu"}"#);
        let err = vit_config(&bad).unwrap_err().to_string();
        assert!(err.contains("hidden_act") && err.contains("relu"), "{err}");
    }

    #[test]
    fn added_rows_start_at_the_mean() {
        crate::test_setup();
        tch::manual_seed(3);
        let w = Tensor::randn([50, 8], (Kind::Float, Device::Cpu)) + 1.5;
        let before = w.narrow(0, 0, 40).copy();
        init_added_rows(&w, 40).unwrap();
        assert!(w.narrow(0, 0, 40).equal(&before), "old rows kept");
        let mean = before.mean_dim(0, true, Kind::Float);
        let diff = (w.narrow(0, 40, 10) - mean).abs().max().double_value(&[]);
        assert!(
            diff < 1e-3,
            "new rows are the old mean (+ tiny noise): {diff}"
        );
        assert!(
            diff > 0.0,
            "sampled, not copied, when the covariance allows"
        );
    }
}
