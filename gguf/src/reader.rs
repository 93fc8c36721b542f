//! The GGUF container: header, metadata key/values, tensor infos, aligned tensor data.
//!
//! Layout (little-endian, versions 2 and 3): `"GGUF"`, u32 version, u64 tensor count, u64
//! key/value count; each key/value is a string key, a u32 value type and the value; each tensor
//! info is a string name, u32 dimension count, u64 sizes (fastest-varying first), u32 ggml type
//! and u64 offset into the data section, which starts at the next multiple of
//! `general.alignment` (32 by default). Strings are a u64 length and UTF-8 bytes.
//!
//! Only the header is read into memory; tensor data stays in the file and is read a slice at a
//! time ([`TensorData`]). Every length is checked against what is left of the file before
//! anything is allocated, so a corrupt count becomes an error, not an out-of-memory abort.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{GgufError, Result};
use crate::quant::GgmlType;

const MAGIC: [u8; 4] = *b"GGUF";
/// ggml's `GGML_MAX_DIMS`.
const MAX_DIMS: u32 = 4;
const DEFAULT_ALIGNMENT: u64 = 32;
/// Arrays of arrays are legal; deeper nesting than this is taken as corruption.
const MAX_ARRAY_DEPTH: usize = 4;

/// A metadata value, of any of the thirteen GGUF value types.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// The GGUF name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "uint8",
            Value::I8(_) => "int8",
            Value::U16(_) => "uint16",
            Value::I16(_) => "int16",
            Value::U32(_) => "uint32",
            Value::I32(_) => "int32",
            Value::F32(_) => "float32",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::U64(_) => "uint64",
            Value::I64(_) => "int64",
            Value::F64(_) => "float64",
        }
    }

    /// Any integer type, as i128 (no integer GGUF type is out of its range).
    pub fn as_int(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v.into(),
            Value::I8(v) => v.into(),
            Value::U16(v) => v.into(),
            Value::I16(v) => v.into(),
            Value::U32(v) => v.into(),
            Value::I32(v) => v.into(),
            Value::U64(v) => v.into(),
            Value::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// A float type, widened exactly to f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) => Some(v),
            _ => None,
        }
    }
}

/// One tensor's description; its data is `n_bytes` at `offset` in the file.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// Sizes as GGUF stores them, fastest-varying first (ggml `ne`): the reverse of the
    /// row-major shape PyTorch would give the same data.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    pub n_elements: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Row-major shape (slowest-varying first), as Hugging Face weights are written.
    pub fn shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }

    /// Elements in one row (`ne0`), the unit blocks never straddle.
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    pub fn n_rows(&self) -> u64 {
        self.n_elements.checked_div(self.row_len()).unwrap_or(0)
    }

    pub fn row_bytes(&self) -> u64 {
        self.n_bytes.checked_div(self.n_rows()).unwrap_or(0)
    }
}

/// A parsed GGUF header: metadata and tensor infos, every tensor checked to lie in the file.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    pub version: u32,
    /// Key/values in file order.
    pub metadata: Vec<(String, Value)>,
    index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Where the data section starts.
    pub data_start: u64,
    pub file_len: u64,
}

/// A failure while reading the header, before the caller says where it was.
enum ReadError {
    Eof { pos: u64, need: u64, len: u64 },
    Io(std::io::Error),
    Bad(String),
}

type Read_<T> = std::result::Result<T, ReadError>;

/// The header stream: counts the position and refuses reads past the end of the file.
struct Input<R> {
    inner: R,
    pos: u64,
    len: u64,
}

impl<R: Read> Input<R> {
    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn ensure(&self, need: u64) -> Read_<()> {
        if need > self.remaining() {
            return Err(ReadError::Eof {
                pos: self.pos,
                need,
                len: self.len,
            });
        }
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Read_<[u8; N]> {
        self.ensure(N as u64)?;
        let mut buf = [0u8; N];
        self.inner.read_exact(&mut buf).map_err(ReadError::Io)?;
        self.pos += N as u64;
        Ok(buf)
    }

    fn bytes(&mut self, n: u64) -> Read_<Vec<u8>> {
        self.ensure(n)?;
        let n_usize = usize::try_from(n).map_err(|_| ReadError::Bad(format!("{n} bytes")))?;
        let mut buf = vec![0u8; n_usize];
        self.inner.read_exact(&mut buf).map_err(ReadError::Io)?;
        self.pos += n;
        Ok(buf)
    }

    fn u32(&mut self) -> Read_<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Read_<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Read_<String> {
        let n = self.u64()?;
        let bytes = self.bytes(n)?;
        String::from_utf8(bytes).map_err(|e| ReadError::Bad(format!("string is not UTF-8: {e}")))
    }

    fn value(&mut self, ty: u32, depth: usize) -> Read_<Value> {
        Ok(match ty {
            0 => Value::U8(u8::from_le_bytes(self.array()?)),
            1 => Value::I8(i8::from_le_bytes(self.array()?)),
            2 => Value::U16(u16::from_le_bytes(self.array()?)),
            3 => Value::I16(i16::from_le_bytes(self.array()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.array()?)),
            6 => Value::F32(f32::from_le_bytes(self.array()?)),
            7 => match u8::from_le_bytes(self.array()?) {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(ReadError::Bad(format!("bool byte {b} is neither 0 nor 1"))),
            },
            8 => Value::String(self.string()?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(ReadError::Bad(format!(
                        "arrays nested deeper than {MAX_ARRAY_DEPTH}"
                    )));
                }
                let item = self.u32()?;
                let count = self.u64()?;
                let min = min_size(item).ok_or_else(|| {
                    ReadError::Bad(format!("unknown array item value type {item}"))
                })?;
                // Before allocating: could the file even hold this many items?
                self.ensure(count.saturating_mul(min))?;
                // Grown as items arrive: a `Value` is 32 bytes, so reserving `count` up front
                // could ask for 32 times the file's size.
                let mut items =
                    Vec::with_capacity(usize::try_from(count.min(1 << 16)).unwrap_or(0));
                for _ in 0..count {
                    items.push(self.value(item, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.array()?)),
            12 => Value::F64(f64::from_le_bytes(self.array()?)),
            other => return Err(ReadError::Bad(format!("unknown value type {other}"))),
        })
    }
}

/// The fewest bytes a value of GGUF type `ty` occupies.
fn min_size(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10 | 11 | 12 => 8,
        9 => 12,
        _ => return None,
    })
}

impl GgufFile {
    /// Reads and checks the header of the GGUF file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| GgufError::io(path, "cannot open", e))?;
        let len = file
            .metadata()
            .map_err(|e| GgufError::io(path, "cannot stat", e))?
            .len();
        Self::parse(path, BufReader::with_capacity(1 << 20, file), len)
    }

    /// Parses a header from `reader`, a file of `len` bytes (`path` only names it in errors).
    pub fn parse(path: &Path, reader: impl Read, len: u64) -> Result<Self> {
        let mut input = Input {
            inner: reader,
            pos: 0,
            len,
        };
        let err = |at: &str, e: ReadError| {
            match e {
            ReadError::Eof { pos, need, len } => GgufError::invalid(
                path,
                at,
                format!(
                    "file ends early (truncated?): needs {need} bytes at offset {pos}, file has {len}"
                ),
            ),
            ReadError::Io(e) => GgufError::io(path, format!("reading {at}"), e),
            ReadError::Bad(msg) => GgufError::invalid(path, at, msg),
        }
        };

        let magic: [u8; 4] = input.array().map_err(|e| err("header", e))?;
        if magic != MAGIC {
            return Err(GgufError::invalid(
                path,
                "header",
                format!("bad magic {magic:02x?}: not a GGUF file (expected \"GGUF\")"),
            ));
        }
        let version = input.u32().map_err(|e| err("header", e))?;
        if version != 2 && version != 3 {
            let hint = if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
                " (a big-endian file; only little-endian GGUF is supported)"
            } else if version == 1 {
                " (GGUF v1 predates 64-bit counts; re-convert it with a current llama.cpp)"
            } else {
                ""
            };
            return Err(GgufError::unsupported(
                path,
                "header",
                format!("GGUF version {version} is not supported, only 2 and 3{hint}"),
            ));
        }
        let n_tensors = input.u64().map_err(|e| err("header", e))?;
        let n_kv = input.u64().map_err(|e| err("header", e))?;

        let mut metadata = Vec::new();
        let mut index = HashMap::new();
        for i in 0..n_kv {
            let at = format!("metadata key #{i}");
            let key = input.string().map_err(|e| err(&at, e))?;
            let at = format!("metadata key '{key}'");
            let ty = input.u32().map_err(|e| err(&at, e))?;
            let value = input.value(ty, 0).map_err(|e| err(&at, e))?;
            if index.insert(key.clone(), metadata.len()).is_some() {
                return Err(GgufError::invalid(path, at, "key appears twice"));
            }
            metadata.push((key, value));
        }

        let alignment = match index.get("general.alignment").map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(Value::U32(a)) if a.is_power_of_two() => u64::from(*a),
            Some(v) => {
                return Err(GgufError::invalid(
                    path,
                    "metadata key 'general.alignment'",
                    format!("must be a uint32 power of two, got {} {v:?}", v.type_name()),
                ))
            }
        };

        let mut infos = Vec::new();
        let mut names = HashMap::new();
        for i in 0..n_tensors {
            let at = format!("tensor info #{i}");
            let name = input.string().map_err(|e| err(&at, e))?;
            let at = format!("tensor '{name}'");
            let n_dims = input.u32().map_err(|e| err(&at, e))?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(GgufError::invalid(
                    path,
                    at,
                    format!("{n_dims} dimensions (ggml allows 1 to {MAX_DIMS})"),
                ));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(input.u64().map_err(|e| err(&at, e))?);
            }
            let type_id = input.u32().map_err(|e| err(&at, e))?;
            let offset = input.u64().map_err(|e| err(&at, e))?;
            let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| {
                GgufError::unsupported(path, &at, format!("unknown ggml type id {type_id}"))
            })?;
            if names.insert(name.clone(), infos.len()).is_some() {
                return Err(GgufError::invalid(path, at, "tensor name appears twice"));
            }
            infos.push((name, dims, ggml_type, offset));
        }

        let data_start = input
            .pos
            .checked_next_multiple_of(alignment)
            .ok_or_else(|| GgufError::invalid(path, "header", "data offset overflows"))?;

        let mut tensors = Vec::with_capacity(infos.len());
        for (name, dims, ggml_type, rel) in infos {
            let at = format!("tensor '{name}'");
            let n_elements = dims
                .iter()
                .try_fold(1u64, |n, &d| n.checked_mul(d))
                .filter(|&n| n <= i64::MAX as u64)
                .ok_or_else(|| GgufError::invalid(path, &at, format!("size {dims:?} overflows")))?;
            let block = ggml_type.block_size() as u64;
            if dims[0] % block != 0 {
                return Err(GgufError::invalid(
                    path,
                    &at,
                    format!(
                        "row length {} is not a multiple of the {ggml_type} block size {block}",
                        dims[0]
                    ),
                ));
            }
            let n_bytes = (n_elements / block)
                .checked_mul(ggml_type.type_size() as u64)
                .ok_or_else(|| GgufError::invalid(path, &at, "byte size overflows"))?;
            if rel % alignment != 0 {
                return Err(GgufError::invalid(
                    path,
                    &at,
                    format!("data offset {rel} is not a multiple of the alignment {alignment}"),
                ));
            }
            let offset = data_start.checked_add(rel);
            let end = offset.and_then(|o| o.checked_add(n_bytes));
            match (offset, end) {
                (Some(offset), Some(end)) if end <= len => tensors.push(TensorInfo {
                    name,
                    dims,
                    ggml_type,
                    offset,
                    n_elements,
                    n_bytes,
                }),
                _ => {
                    return Err(GgufError::invalid(
                        path,
                        at,
                        format!(
                            "tensor data ({n_bytes} bytes of {ggml_type} at data offset {rel}, \
                             file offset {}) runs past the end of the file ({len} bytes)",
                            data_start.saturating_add(rel)
                        ),
                    ))
                }
            }
        }

        Ok(GgufFile {
            path: path.to_path_buf(),
            version,
            metadata,
            index,
            tensors,
            alignment,
            data_start,
            file_len: len,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// An error about metadata key `key`.
    pub(crate) fn key_error(&self, key: &str, msg: impl Into<String>) -> GgufError {
        GgufError::invalid(&self.path, format!("metadata key '{key}'"), msg)
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        want: &str,
        f: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => f(v).map(Some).ok_or_else(|| {
                self.key_error(key, format!("expected {want}, found {}", v.type_name()))
            }),
        }
    }

    /// An optional non-negative integer of any integer type that fits `u64`.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        match self.typed(key, "an integer", Value::as_int)? {
            None => Ok(None),
            Some(v) => u64::try_from(v)
                .map(Some)
                .map_err(|_| self.key_error(key, format!("{v} is negative"))),
        }
    }

    pub fn req_u64(&self, key: &str) -> Result<u64> {
        self.opt_u64(key)?
            .ok_or_else(|| self.key_error(key, "missing (required)"))
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        self.typed(key, "a float", Value::as_f64)
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        self.typed(key, "a bool", Value::as_bool)
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        self.typed(key, "a string", Value::as_str)
    }

    pub fn req_str(&self, key: &str) -> Result<&str> {
        self.opt_str(key)?
            .ok_or_else(|| self.key_error(key, "missing (required)"))
    }

    /// An optional array of strings.
    pub fn opt_str_array(&self, key: &str) -> Result<Option<Vec<&str>>> {
        let Some(items) = self.typed(key, "an array", Value::as_array)? else {
            return Ok(None);
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().ok_or_else(|| {
                    self.key_error(key, format!("item {i} is {}, not a string", v.type_name()))
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// An optional array of integers.
    pub fn opt_int_array(&self, key: &str) -> Result<Option<Vec<i128>>> {
        let Some(items) = self.typed(key, "an array", Value::as_array)? else {
            return Ok(None);
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_int().ok_or_else(|| {
                    self.key_error(
                        key,
                        format!("item {i} is {}, not an integer", v.type_name()),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// Opens the file again for reading tensor data.
    pub fn data(&self) -> Result<TensorData<'_>> {
        let file =
            File::open(&self.path).map_err(|e| GgufError::io(&self.path, "cannot open", e))?;
        Ok(TensorData { gguf: self, file })
    }
}

/// Reads slices of tensor data from a parsed file.
pub struct TensorData<'a> {
    gguf: &'a GgufFile,
    file: File,
}

impl TensorData<'_> {
    /// The raw bytes of `n_rows` rows of `tensor` starting at row `first`.
    pub fn rows(&mut self, tensor: &TensorInfo, first: u64, n_rows: u64) -> Result<Vec<u8>> {
        let path = self.gguf.path();
        let at = format!("tensor '{}'", tensor.name);
        if first
            .checked_add(n_rows)
            .is_none_or(|end| end > tensor.n_rows())
        {
            return Err(GgufError::invalid(
                path,
                at,
                format!(
                    "rows {first}..{} requested of {}",
                    first.saturating_add(n_rows),
                    tensor.n_rows()
                ),
            ));
        }
        let start = tensor.offset + first * tensor.row_bytes();
        let n = usize::try_from(n_rows * tensor.row_bytes())
            .map_err(|_| GgufError::invalid(path, &at, "too large for this machine"))?;
        let mut buf = vec![0u8; n];
        self.file
            .seek(SeekFrom::Start(start))
            .and_then(|_| self.file.read_exact(&mut buf))
            .map_err(|e| GgufError::io(path, format!("reading {at}"), e))?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Kv, TestGguf};

    fn parse(bytes: &[u8]) -> Result<GgufFile> {
        GgufFile::parse(Path::new("t.gguf"), bytes, bytes.len() as u64)
    }

    fn sample() -> TestGguf {
        let mut g = TestGguf::new();
        g.kv("general.architecture", Kv::Str("llama".into()));
        g.kv("a.u8", Kv::U8(7));
        g.kv("a.i8", Kv::I8(-7));
        g.kv("a.u16", Kv::U16(700));
        g.kv("a.i16", Kv::I16(-700));
        g.kv("a.u32", Kv::U32(70000));
        g.kv("a.i32", Kv::I32(-70000));
        g.kv("a.f32", Kv::F32(1.5));
        g.kv("a.bool", Kv::Bool(true));
        g.kv("a.u64", Kv::U64(1 << 40));
        g.kv("a.i64", Kv::I64(-(1 << 40)));
        g.kv("a.f64", Kv::F64(-2.25));
        g.kv(
            "a.strs",
            Kv::Array(vec![Kv::Str("x".into()), Kv::Str("héllo".into())]),
        );
        g.kv(
            "a.nested",
            Kv::Array(vec![
                Kv::Array(vec![Kv::I32(1), Kv::I32(2)]),
                Kv::Array(vec![]),
            ]),
        );
        g.tensor_f32("w", &[3, 2], &[1., 2., 3., 4., 5., 6.]);
        g.tensor_f32("b", &[5], &[0.5; 5]);
        g
    }

    #[test]
    fn reads_every_value_type_and_tensors() {
        for version in [2, 3] {
            let mut g = sample();
            g.version = version;
            let f = parse(&g.build()).unwrap();
            assert_eq!(f.version, version);
            assert_eq!(f.get("a.u8"), Some(&Value::U8(7)));
            assert_eq!(f.get("a.i8"), Some(&Value::I8(-7)));
            assert_eq!(f.get("a.u16"), Some(&Value::U16(700)));
            assert_eq!(f.get("a.i16"), Some(&Value::I16(-700)));
            assert_eq!(f.get("a.u32"), Some(&Value::U32(70000)));
            assert_eq!(f.get("a.i32"), Some(&Value::I32(-70000)));
            assert_eq!(f.get("a.f32"), Some(&Value::F32(1.5)));
            assert_eq!(f.get("a.bool"), Some(&Value::Bool(true)));
            assert_eq!(f.get("a.u64"), Some(&Value::U64(1 << 40)));
            assert_eq!(f.get("a.i64"), Some(&Value::I64(-(1 << 40))));
            assert_eq!(f.get("a.f64"), Some(&Value::F64(-2.25)));
            assert_eq!(f.opt_str_array("a.strs").unwrap(), Some(vec!["x", "héllo"]));
            assert_eq!(
                f.get("a.nested"),
                Some(&Value::Array(vec![
                    Value::Array(vec![Value::I32(1), Value::I32(2)]),
                    Value::Array(vec![])
                ]))
            );
            assert_eq!(f.req_u64("a.u16").unwrap(), 700);
            assert!(f
                .req_u64("a.i64")
                .unwrap_err()
                .to_string()
                .contains("negative"));
            assert!(f
                .req_u64("a.f32")
                .unwrap_err()
                .to_string()
                .contains("'a.f32': expected an integer, found float32"));
            assert_eq!(f.alignment, 32);
            assert_eq!(f.data_start % 32, 0);
            let w = f.tensor("w").unwrap();
            assert_eq!(w.dims, vec![3, 2]);
            assert_eq!(w.shape(), vec![2, 3]);
            assert_eq!(w.n_bytes, 24);
            assert_eq!(w.offset % 32, 0);
            assert_eq!(f.tensor("b").unwrap().offset, w.offset + 32);
        }
    }

    #[test]
    fn custom_alignment_is_honoured() {
        let mut g = sample();
        g.kv("general.alignment", Kv::U32(64));
        g.alignment = 64;
        let f = parse(&g.build()).unwrap();
        assert_eq!(f.alignment, 64);
        assert_eq!(f.data_start % 64, 0);
        assert_eq!(f.tensor("b").unwrap().offset % 64, 0);

        let mut g = sample();
        g.kv("general.alignment", Kv::U32(48));
        let e = parse(&g.build()).unwrap_err().to_string();
        assert!(
            e.contains("general.alignment") && e.contains("power of two"),
            "{e}"
        );
    }

    #[test]
    fn every_truncation_is_an_error_naming_the_place() {
        let bytes = sample().build();
        let f = parse(&bytes).unwrap();
        for cut in 0..bytes.len() {
            let e = match parse(&bytes[..cut]) {
                Ok(_) => panic!("truncated at {cut} of {} parsed", bytes.len()),
                Err(e) => e.to_string(),
            };
            assert!(e.starts_with("t.gguf: "), "{e}");
            if (cut as u64) < f.data_start {
                assert!(
                    e.contains("truncated") || e.contains("past the end"),
                    "cut {cut}: {e}"
                );
            } else {
                assert!(e.contains("past the end of the file"), "cut {cut}: {e}");
            }
        }
    }

    #[test]
    fn bad_magic_version_type_and_counts() {
        let good = sample().build();

        let mut b = good.clone();
        b[0] = b'X';
        let e = parse(&b).unwrap_err().to_string();
        assert!(e.contains("header") && e.contains("bad magic"), "{e}");

        let mut b = good.clone();
        b[4..8].copy_from_slice(&7u32.to_le_bytes());
        let e = parse(&b).unwrap_err();
        assert!(matches!(e, GgufError::Unsupported { .. }));
        assert!(e.to_string().contains("version 7"), "{e}");
        b[4..8].copy_from_slice(&3u32.to_be_bytes());
        assert!(parse(&b).unwrap_err().to_string().contains("big-endian"));

        // A huge key/value count or string length must not allocate; it is a truncation.
        let mut b = good.clone();
        b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse(&b).is_err());
        let mut b = good.clone();
        b[24..32].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        let e = parse(&b).unwrap_err().to_string();
        assert!(
            e.contains("metadata key #0") && e.contains("truncated"),
            "{e}"
        );

        let mut g = TestGguf::new();
        g.kv(
            "big",
            Kv::Raw(
                9,
                [4u32.to_le_bytes().to_vec(), u64::MAX.to_le_bytes().to_vec()].concat(),
            ),
        );
        let e = parse(&g.build()).unwrap_err().to_string();
        assert!(e.contains("'big'") && e.contains("truncated"), "{e}");

        let mut g = TestGguf::new();
        g.kv("odd", Kv::Raw(13, vec![]));
        let e = parse(&g.build()).unwrap_err().to_string();
        assert!(
            e.contains("'odd'") && e.contains("unknown value type 13"),
            "{e}"
        );

        let mut g = TestGguf::new();
        g.kv("flag", Kv::Raw(7, vec![2]));
        assert!(parse(&g.build())
            .unwrap_err()
            .to_string()
            .contains("bool byte 2"));

        let mut g = TestGguf::new();
        g.kv("dup", Kv::U8(1));
        g.kv("dup", Kv::U8(2));
        assert!(parse(&g.build()).unwrap_err().to_string().contains("twice"));

        let mut g = TestGguf::new();
        g.kv(
            "s",
            Kv::Raw(8, [2u64.to_le_bytes().to_vec(), vec![0xff, 0xfe]].concat()),
        );
        assert!(parse(&g.build()).unwrap_err().to_string().contains("UTF-8"));

        let mut deep = Kv::U8(0);
        for _ in 0..10 {
            deep = Kv::Array(vec![deep]);
        }
        let mut g = TestGguf::new();
        g.kv("deep", deep);
        assert!(parse(&g.build())
            .unwrap_err()
            .to_string()
            .contains("nested"));
    }

    #[test]
    fn bad_tensor_infos() {
        let mut g = TestGguf::new();
        g.raw_tensor("q", &[32, 2], 99, vec![0; 64]);
        let e = parse(&g.build()).unwrap_err();
        assert!(matches!(e, GgufError::Unsupported { .. }));
        assert!(
            e.to_string()
                .contains("tensor 'q': unknown ggml type id 99"),
            "{e}"
        );

        let mut g = TestGguf::new();
        g.raw_tensor("q", &[30, 2], GgmlType::Q8_0.id(), vec![0; 68]);
        let e = parse(&g.build()).unwrap_err().to_string();
        assert!(e.contains("'q'") && e.contains("not a multiple"), "{e}");

        let mut g = TestGguf::new();
        g.raw_tensor("q", &[1, 1, 1, 1, 1], 0, vec![0; 4]);
        assert!(parse(&g.build())
            .unwrap_err()
            .to_string()
            .contains("5 dimensions"));

        let mut g = TestGguf::new();
        g.raw_tensor("q", &[u64::MAX, 4], 0, vec![0; 4]);
        assert!(parse(&g.build())
            .unwrap_err()
            .to_string()
            .contains("overflows"));

        // The data of the second tensor claimed past the end.
        let mut g = TestGguf::new();
        g.tensor_f32("a", &[4], &[0.0; 4]);
        g.raw_tensor("b", &[1024], 0, vec![0; 16]);
        let e = parse(&g.build()).unwrap_err().to_string();
        assert!(
            e.contains("tensor 'b'") && e.contains("past the end"),
            "{e}"
        );

        let mut g = TestGguf::new();
        g.tensor_f32("a", &[4], &[0.0; 4]);
        g.tensor_f32("a", &[4], &[0.0; 4]);
        assert!(parse(&g.build()).unwrap_err().to_string().contains("twice"));

        let mut g = TestGguf::new();
        g.tensor_f32("a", &[4], &[0.0; 4]);
        g.misalign = 4;
        assert!(parse(&g.build())
            .unwrap_err()
            .to_string()
            .contains("not a multiple of the alignment"));
    }

    #[test]
    fn reads_rows_of_tensor_data() {
        let dir = std::env::temp_dir().join(format!("vla-gguf-reader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rows.gguf");
        let mut g = TestGguf::new();
        g.tensor_f32("w", &[2, 3], &[1., 2., 3., 4., 5., 6.]);
        std::fs::write(&path, g.build()).unwrap();
        let f = GgufFile::open(&path).unwrap();
        let w = f.tensor("w").unwrap().clone();
        let mut data = f.data().unwrap();
        let bytes = data.rows(&w, 1, 2).unwrap();
        let vals: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(vals, [3., 4., 5., 6.]);
        assert!(data.rows(&w, 2, 2).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
