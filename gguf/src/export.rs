//! Writing the Hugging Face directory: `model.safetensors` streamed one tensor slice at a time
//! (the header is known from the tensor infos before any data is read), and the JSON files.
//!
//! A streamed writer rather than the `safetensors` crate's `serialize_to_file`, which needs every
//! tensor in memory at once: SmolLM2-135M is 98 MB quantised but 540 MB as f32.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::error::{GgufError, Result};
use crate::llama::{unpermute_rows, MappedTensor};
use crate::quant::dequantize;
use crate::reader::TensorData;

/// Output elements dequantised per slice of a tensor that needs no permutation.
const SLICE_ELEMENTS: u64 = 1 << 20;

/// The safetensors header for `tensors` written as f32 in this order, padded with spaces to a
/// multiple of 8 bytes as the `safetensors` crate does.
fn header(tensors: &[MappedTensor]) -> Result<Vec<u8>, String> {
    let mut map = Map::new();
    map.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0u64;
    for t in tensors {
        let bytes = t
            .hf_shape
            .iter()
            .try_fold(4u64, |n, &d| n.checked_mul(d))
            .ok_or_else(|| format!("{}: size overflows", t.hf_name))?;
        map.insert(
            t.hf_name.clone(),
            json!({"dtype": "F32", "shape": t.hf_shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut text = Value::Object(map).to_string().into_bytes();
    text.resize(text.len().next_multiple_of(8), b' ');
    Ok(text)
}

/// Writes `tensors` dequantised to f32 (q/k un-permuted) as `path`, through a temporary file
/// renamed at the end so that a failed import leaves no truncated model behind. Calls
/// `progress` after each tensor. Returns the bytes written.
pub(crate) fn write_safetensors(
    data: &mut TensorData<'_>,
    gguf_path: &Path,
    tensors: &[MappedTensor],
    path: &Path,
    progress: &mut dyn FnMut(&MappedTensor),
) -> Result<u64> {
    let partial = path.with_extension("safetensors.partial");
    let result = write_to(data, gguf_path, tensors, &partial, progress);
    match result {
        Ok(bytes) => {
            std::fs::rename(&partial, path)
                .map_err(|e| GgufError::io(path, "cannot move the finished file in place", e))?;
            Ok(bytes)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

fn write_to(
    data: &mut TensorData<'_>,
    gguf_path: &Path,
    tensors: &[MappedTensor],
    path: &Path,
    progress: &mut dyn FnMut(&MappedTensor),
) -> Result<u64> {
    let write_err = |e: std::io::Error| GgufError::io(path, "cannot write", e);
    let head = header(tensors).map_err(|msg| GgufError::invalid(gguf_path, "tensors", msg))?;
    let file = File::create(path).map_err(|e| GgufError::io(path, "cannot create", e))?;
    let mut out = BufWriter::with_capacity(1 << 22, file);
    out.write_all(&(head.len() as u64).to_le_bytes())
        .and_then(|_| out.write_all(&head))
        .map_err(write_err)?;
    let mut written = 8 + head.len() as u64;
    let mut bytes = Vec::new();
    for t in tensors {
        let info = &t.gguf;
        let at = || format!("tensor '{}'", info.name);
        let row_len = info.row_len();
        let n_rows = info.n_rows();
        let slice_rows = match t.unpermute_heads {
            // The permutation moves whole rows across the tensor: take it in one piece (q and
            // k are small next to the embedding).
            Some(_) => n_rows.max(1),
            None => (SLICE_ELEMENTS / row_len.max(1)).clamp(1, n_rows.max(1)),
        };
        let mut first = 0;
        while first < n_rows {
            let rows = slice_rows.min(n_rows - first);
            let raw = data.rows(info, first, rows)?;
            let n = usize::try_from(rows * row_len)
                .map_err(|_| GgufError::invalid(gguf_path, at(), "too large for this machine"))?;
            let mut values = vec![0f32; n];
            dequantize(info.ggml_type, &raw, &mut values)
                .map_err(|e| GgufError::invalid(gguf_path, at(), e.to_string()))?;
            if let Some(heads) = t.unpermute_heads {
                values = unpermute_rows(&values, n_rows as usize, row_len as usize, heads as usize)
                    .ok_or_else(|| {
                        GgufError::invalid(
                            gguf_path,
                            at(),
                            format!("{n_rows} rows cannot be split into {heads} rotary heads"),
                        )
                    })?;
            }
            bytes.clear();
            bytes.reserve(values.len() * 4);
            for v in &values {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            out.write_all(&bytes).map_err(write_err)?;
            written += bytes.len() as u64;
            first += rows;
        }
        progress(t);
    }
    out.flush().map_err(write_err)?;
    out.into_inner()
        .map_err(|e| GgufError::io(path, "cannot write", e.into_error()))?
        .sync_all()
        .map_err(write_err)?;
    Ok(written)
}

/// Writes `value` as pretty JSON to `path`.
pub(crate) fn write_json(path: &Path, value: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| GgufError::io(path, "cannot encode", std::io::Error::other(e)))?;
    text.push('\n');
    std::fs::write(path, text).map_err(|e| GgufError::io(path, "cannot write", e))
}
