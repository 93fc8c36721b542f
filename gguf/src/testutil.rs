//! A minimal GGUF writer for unit tests: files built in memory, including malformed ones.

use crate::quant::GgmlType;

/// A metadata value to write; `Raw` writes a type id and bytes as given.
#[derive(Clone, Debug)]
pub enum Kv {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Array(Vec<Kv>),
    U64(u64),
    I64(i64),
    F64(f64),
    Raw(u32, Vec<u8>),
}

impl Kv {
    fn type_id(&self) -> u32 {
        match self {
            Kv::U8(_) => 0,
            Kv::I8(_) => 1,
            Kv::U16(_) => 2,
            Kv::I16(_) => 3,
            Kv::U32(_) => 4,
            Kv::I32(_) => 5,
            Kv::F32(_) => 6,
            Kv::Bool(_) => 7,
            Kv::Str(_) => 8,
            Kv::Array(_) => 9,
            Kv::U64(_) => 10,
            Kv::I64(_) => 11,
            Kv::F64(_) => 12,
            Kv::Raw(t, _) => *t,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Kv::U8(v) => out.extend(v.to_le_bytes()),
            Kv::I8(v) => out.extend(v.to_le_bytes()),
            Kv::U16(v) => out.extend(v.to_le_bytes()),
            Kv::I16(v) => out.extend(v.to_le_bytes()),
            Kv::U32(v) => out.extend(v.to_le_bytes()),
            Kv::I32(v) => out.extend(v.to_le_bytes()),
            Kv::F32(v) => out.extend(v.to_le_bytes()),
            Kv::Bool(v) => out.push(u8::from(*v)),
            Kv::Str(s) => write_str(out, s),
            Kv::Array(items) => {
                // An empty array is written as an array of u8.
                let ty = items.first().map_or(0, Kv::type_id);
                out.extend(ty.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for item in items {
                    item.write(out);
                }
            }
            Kv::U64(v) => out.extend(v.to_le_bytes()),
            Kv::I64(v) => out.extend(v.to_le_bytes()),
            Kv::F64(v) => out.extend(v.to_le_bytes()),
            Kv::Raw(_, bytes) => out.extend(bytes),
        }
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

pub struct TestGguf {
    pub version: u32,
    pub alignment: usize,
    /// Added to every tensor's stored offset, to make misaligned files.
    pub misalign: u64,
    kvs: Vec<(String, Kv)>,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

impl TestGguf {
    pub fn new() -> Self {
        TestGguf {
            version: 3,
            alignment: 32,
            misalign: 0,
            kvs: Vec::new(),
            tensors: Vec::new(),
        }
    }

    pub fn kv(&mut self, key: &str, value: Kv) -> &mut Self {
        self.kvs.push((key.to_string(), value));
        self
    }

    /// Replaces (or adds) a key's value.
    pub fn set(&mut self, key: &str, value: Kv) -> &mut Self {
        self.kvs.retain(|(k, _)| k != key);
        self.kv(key, value)
    }

    pub fn remove(&mut self, key: &str) -> &mut Self {
        self.kvs.retain(|(k, _)| k != key);
        self
    }

    pub fn raw_tensor(&mut self, name: &str, dims: &[u64], ty: u32, data: Vec<u8>) -> &mut Self {
        self.tensors
            .push((name.to_string(), dims.to_vec(), ty, data));
        self
    }

    pub fn remove_tensor(&mut self, name: &str) -> &mut Self {
        self.tensors.retain(|t| t.0 != name);
        self
    }

    /// An F32 tensor; `dims` fastest-varying first, as GGUF stores them.
    pub fn tensor_f32(&mut self, name: &str, dims: &[u64], values: &[f32]) -> &mut Self {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.raw_tensor(name, dims, GgmlType::F32.id(), data)
    }

    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(b"GGUF");
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kvs.len() as u64).to_le_bytes());
        for (key, value) in &self.kvs {
            write_str(&mut out, key);
            out.extend(value.type_id().to_le_bytes());
            value.write(&mut out);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (name, dims, ty, data) in &self.tensors {
            write_str(&mut out, name);
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(ty.to_le_bytes());
            out.extend((offset + self.misalign).to_le_bytes());
            offsets.push(offset);
            offset = (offset + data.len() as u64).next_multiple_of(self.alignment as u64);
        }
        out.resize(out.len().next_multiple_of(self.alignment), 0);
        let start = out.len();
        for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
            out.resize(start + off as usize, 0);
            out.extend(data);
        }
        out
    }
}
