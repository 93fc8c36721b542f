//! Run directories: everything needed to rebuild a trained policy.
//!
//! ```text
//! run_dir/
//!   model.safetensors   weights, HF-style names (see `model.rs`), f32
//!   config.json         {"model_type": "vla", "format_version", "config": VlaConfig,
//!                        "norm_stats": {action: {q01, q99}, state: {mean, std}}}
//!   tokenizer.json      HF tokenizers file
//! ```
//!
//! Action statistics live in `config.json`, so the checkpoint is self-contained. Loading is
//! strict (every parameter present with the right shape, no unknown tensors) and every
//! failure — missing, unreadable, corrupt or truncated file, mismatching tensor — is an
//! error that names the file and the cause; nothing here panics on file contents.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::action_tokenizer::NormStats;
use crate::config::VlaConfig;
use crate::error::{Result, VlaError};
use crate::model::VlaModel;
use crate::text_tokenizer::TextTokenizer;

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
const FORMAT_VERSION: u32 = 1;

/// Contents of a run's `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub model_type: String,
    pub format_version: u32,
    pub config: VlaConfig,
    pub norm_stats: NormStats,
    /// A LoRA run's frozen base: the pretrained LM directory and its weights' hash. Its
    /// `model.safetensors` then holds only what was trained (adapters, the added ids'
    /// rows, the vision side), and loading reads the base from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_lm: Option<crate::hf::BaseLm>,
}

impl RunConfig {
    pub fn new(config: VlaConfig, norm_stats: NormStats) -> Self {
        RunConfig {
            model_type: "vla".into(),
            format_version: FORMAT_VERSION,
            config,
            norm_stats,
            base_lm: None,
        }
    }

    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| VlaError::checkpoint(path, format!("cannot read: {e}")))?;
        let rc: RunConfig = serde_json::from_str(&text)
            .map_err(|e| VlaError::checkpoint(path, format!("invalid config.json: {e}")))?;
        if rc.model_type != "vla" || rc.format_version != FORMAT_VERSION {
            return Err(VlaError::checkpoint(
                path,
                format!(
                    "unsupported model_type {:?} / format_version {} (expected \"vla\" / {FORMAT_VERSION})",
                    rc.model_type, rc.format_version
                ),
            ));
        }
        rc.config
            .validate()
            .and_then(|_| rc.norm_stats.validate(&rc.config))
            .map_err(|e| VlaError::checkpoint(path, e))?;
        Ok(rc)
    }

    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| VlaError::checkpoint(path, format!("cannot serialise: {e}")))?;
        write_atomic(path, text.as_bytes())
    }
}

/// Writes via a temporary file and rename, so a crash never leaves a half-written file
/// under the final name.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| VlaError::checkpoint(path, format!("cannot write: {e}")))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

fn kind_to_dtype(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        _ => return None,
    })
}

fn dtype_to_kind(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

/// A tensor copied to host bytes, ready for serialisation.
struct HostTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &HostTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn to_host(name: &str, t: &Tensor) -> Result<HostTensor> {
    let dtype = kind_to_dtype(t.kind()).ok_or_else(|| {
        VlaError::Input(format!("tensor {name} has unsupported kind {:?}", t.kind()))
    })?;
    let t = t.detach().to_device(Device::Cpu).contiguous();
    let numel = t.numel();
    let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
    t.f_copy_data_u8(&mut data, numel)?;
    Ok(HostTensor {
        dtype,
        shape: t.size().iter().map(|&d| d as usize).collect(),
        data,
    })
}

/// Names of the variables of `vs` that are not trained (a LoRA run's frozen base).
pub fn frozen_names(vs: &VarStore) -> HashSet<String> {
    let Ok(vars) = vs.variables_.lock() else {
        return HashSet::new();
    };
    let trainable: HashSet<usize> = vars
        .trainable_variables
        .iter()
        .map(|v| v.tensor.data_ptr() as usize)
        .collect();
    vars.named_variables
        .iter()
        .filter(|(_, t)| !trainable.contains(&(t.data_ptr() as usize)))
        .map(|(n, _)| n.clone())
        .collect()
}

/// Saves all variables of `vs` to a safetensors file (sorted names, `format: pt` metadata).
pub fn save_weights(path: impl AsRef<Path>, vs: &VarStore) -> Result<()> {
    save_weights_except(path, vs, &HashSet::new())
}

/// As [`save_weights`], leaving out the variables named in `skip`.
pub fn save_weights_except(
    path: impl AsRef<Path>,
    vs: &VarStore,
    skip: &HashSet<String>,
) -> Result<()> {
    let path = path.as_ref();
    let vars: BTreeMap<String, Tensor> = vs
        .variables()
        .into_iter()
        .filter(|(n, _)| !skip.contains(n))
        .collect();
    let host: Vec<(String, HostTensor)> = vars
        .iter()
        .map(|(n, t)| Ok((n.clone(), to_host(n, t)?)))
        .collect::<Result<_>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let tmp = tmp_path(path);
    safetensors::serialize_to_file(
        host.iter().map(|(n, t)| (n.as_str(), t)),
        Some(metadata),
        &tmp,
    )
    .map_err(|e| VlaError::checkpoint(path, format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| VlaError::checkpoint(path, format!("cannot write: {e}")))
}

fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| VlaError::checkpoint(path, format!("cannot read: {e}")))
}

/// Parses the header and checks that offsets cover the file exactly (catches truncation).
fn parse_safetensors<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes)
        .map_err(|e| VlaError::checkpoint(path, format!("corrupt or truncated safetensors: {e}")))
}

fn view_to_tensor(
    path: &Path,
    name: &str,
    view: &safetensors::tensor::TensorView<'_>,
) -> Result<Tensor> {
    let kind = dtype_to_kind(view.dtype()).ok_or_else(|| {
        VlaError::checkpoint(
            path,
            format!("tensor `{name}` has unsupported dtype {:?}", view.dtype()),
        )
    })?;
    let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
    Tensor::f_from_data_size(view.data(), &shape, kind)
        .map_err(|e| VlaError::checkpoint(path, format!("tensor `{name}`: {e}")))
}

fn copy_into(path: &Path, name: &str, dst: &Tensor, src: &Tensor) -> Result<()> {
    if dst.size() != src.size() {
        return Err(VlaError::checkpoint(
            path,
            format!(
                "tensor `{name}` has shape {:?}, the model expects {:?}",
                src.size(),
                dst.size()
            ),
        ));
    }
    if !src.is_floating_point() && dst.is_floating_point() {
        return Err(VlaError::checkpoint(
            path,
            format!("tensor `{name}` has non-float kind {:?}", src.kind()),
        ));
    }
    let mut dst = dst.shallow_clone();
    tch::no_grad(|| dst.f_copy_(src))
        .map_err(|e| VlaError::checkpoint(path, format!("tensor `{name}`: {e}")))
}

/// Strictly loads every variable of `vs` from `path`: all must be present with the same
/// shape, and the file may not contain unknown tensors.
pub fn load_weights(path: impl AsRef<Path>, vs: &VarStore) -> Result<()> {
    load_weights_except(path, vs, &HashSet::new())
}

/// As [`load_weights`] for every variable not named in `skip` (which the file must not hold
/// either).
pub fn load_weights_except(
    path: impl AsRef<Path>,
    vs: &VarStore,
    skip: &HashSet<String>,
) -> Result<()> {
    let path = path.as_ref();
    let bytes = read_bytes(path)?;
    let st = parse_safetensors(path, &bytes)?;
    let vars: HashMap<String, Tensor> = vs
        .variables()
        .into_iter()
        .filter(|(n, _)| !skip.contains(n))
        .collect();
    let file_names: HashSet<&str> = st.names().into_iter().collect();
    let mut missing: Vec<&str> = vars
        .keys()
        .map(String::as_str)
        .filter(|n| !file_names.contains(n))
        .collect();
    if !missing.is_empty() {
        missing.sort_unstable();
        return Err(VlaError::checkpoint(
            path,
            format!(
                "{} model tensors missing, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            ),
        ));
    }
    let mut unknown: Vec<&str> = file_names
        .iter()
        .copied()
        .filter(|n| !vars.contains_key(*n))
        .collect();
    if !unknown.is_empty() {
        unknown.sort_unstable();
        return Err(VlaError::checkpoint(
            path,
            format!(
                "{} tensors unknown to this model (config mismatch?), e.g. {:?}",
                unknown.len(),
                &unknown[..unknown.len().min(5)]
            ),
        ));
    }
    for (name, var) in &vars {
        let view = st
            .tensor(name)
            .map_err(|e| VlaError::checkpoint(path, format!("tensor `{name}`: {e}")))?;
        copy_into(path, name, var, &view_to_tensor(path, name, &view)?)?;
    }
    Ok(())
}

/// What [`import_weights`] did.
#[derive(Debug, Default, Clone)]
pub struct ImportReport {
    /// Model variables that received a value.
    pub loaded: Vec<String>,
    /// Model variables left at their initial value.
    pub missing: Vec<String>,
    /// File tensors the name map dropped or that match no variable.
    pub unused: Vec<String>,
    /// Variables (of `grow`) that have more rows than the file: `(name, rows in the file,
    /// rows in the model)`; the added rows were initialised by [`crate::hf::init_added_rows`].
    pub resized: Vec<(String, i64, i64)>,
}

/// Non-strict import of pretrained weights (e.g. an HF ViT or Llama checkpoint): `rename`
/// maps each file tensor name to a model variable name (or `None` to skip it). Shapes must
/// still match, except that the variables named in `grow` may have more rows than the file
/// (a vocabulary extended by action ids, as `resize_token_embeddings`): the file fills the
/// first rows and the rest start at the old rows' mean. Typical use:
/// `|n| Some(format!("vision_backbone.{}", n.strip_prefix("vit.")?))`.
pub fn import_weights(
    path: impl AsRef<Path>,
    vs: &VarStore,
    rename: impl Fn(&str) -> Option<String>,
    grow: &[&str],
) -> Result<ImportReport> {
    let path = path.as_ref();
    let bytes = read_bytes(path)?;
    let st = parse_safetensors(path, &bytes)?;
    let vars = vs.variables();
    let mut report = ImportReport::default();
    for (file_name, view) in st.iter() {
        match rename(file_name).and_then(|n| vars.get(&n).map(|v| (n, v))) {
            Some((name, var)) => {
                let src = view_to_tensor(path, file_name, &view)?;
                let (rows, want) = (src.size(), var.size());
                let grows = grow.contains(&name.as_str())
                    && rows.len() == want.len()
                    && !rows.is_empty()
                    && rows[0] < want[0]
                    && rows[1..] == want[1..];
                if grows {
                    copy_into(path, &name, &var.narrow(0, 0, rows[0]), &src)?;
                    crate::hf::init_added_rows(var, rows[0])?;
                    report.resized.push((name.clone(), rows[0], want[0]));
                } else {
                    copy_into(path, &name, var, &src)?;
                }
                report.loaded.push(name);
            }
            None => report.unused.push(file_name.to_string()),
        }
    }
    let loaded: HashSet<&String> = report.loaded.iter().collect();
    report.missing = vars
        .keys()
        .filter(|n| !loaded.contains(n))
        .cloned()
        .collect();
    report.missing.sort();
    // The file's tensors come in hash order: sort what is reported, so a report repeats.
    report.loaded.sort();
    report.unused.sort();
    report.resized.sort();
    tracing::info!(
        file = %path.display(),
        loaded = report.loaded.len(),
        missing = report.missing.len(),
        unused = report.unused.len(),
        "imported pretrained weights"
    );
    Ok(report)
}

/// Writes `model.safetensors`, `config.json` and `tokenizer.json` into `dir` (created).
pub fn save_run(dir: impl AsRef<Path>, model: &VlaModel, tokenizer: &TextTokenizer) -> Result<()> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir)
        .map_err(|e| VlaError::checkpoint(dir, format!("cannot create: {e}")))?;
    let mut rc = RunConfig::new(model.config().clone(), model.norm_stats().clone());
    // A LoRA run stores what it trained and a reference to its frozen base.
    let frozen = match (model.base_lm(), &model.config().text.lora) {
        (Some(base), Some(_)) => {
            rc.base_lm = Some(base.clone());
            frozen_names(model.var_store())
        }
        _ => HashSet::new(),
    };
    save_weights_except(dir.join(WEIGHTS_FILE), model.var_store(), &frozen)?;
    rc.save(dir.join(CONFIG_FILE))?;
    tokenizer.save(dir.join(TOKENIZER_FILE))?;
    tracing::info!(dir = %dir.display(), "saved run");
    Ok(())
}

/// Rebuilds the model and tokenizer saved by [`save_run`] on `device`.
pub fn load_run(dir: impl AsRef<Path>, device: Device) -> Result<(VlaModel, TextTokenizer)> {
    let dir = dir.as_ref();
    let rc = RunConfig::load(dir.join(CONFIG_FILE))?;
    let tok_path = dir.join(TOKENIZER_FILE);
    let tokenizer = TextTokenizer::from_file(&tok_path)?;
    if tokenizer.vocab_size() > rc.config.text.vocab_size {
        return Err(VlaError::checkpoint(
            &tok_path,
            format!(
                "tokenizer has {} ids but text.vocab_size is {} (action ids would collide)",
                tokenizer.vocab_size(),
                rc.config.text.vocab_size
            ),
        ));
    }
    let mut model = VlaModel::new(rc.config, rc.norm_stats, device, 0)?;
    match &rc.base_lm {
        Some(base) => {
            base.verify()
                .map_err(|e| VlaError::checkpoint(dir.join(CONFIG_FILE), e))?;
            model.import_base(base.clone())?;
            let frozen = frozen_names(model.var_store());
            load_weights_except(dir.join(WEIGHTS_FILE), model.var_store(), &frozen)?;
        }
        None => load_weights(dir.join(WEIGHTS_FILE), model.var_store())?,
    }
    tracing::info!(dir = %dir.display(), ?device, "loaded run");
    Ok((model, tokenizer))
}
