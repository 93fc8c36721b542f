//! ggml tensor types and their block dequantisers.
//!
//! Each dequantiser follows ggml's `dequantize_row_*` block layout and performs the same f32
//! operations in the same order as gguf-py's `quants.py` (which transformers' GGUF loader uses),
//! so the results are bit-identical to it: Rust never fuses `a * b + c` into an FMA.

use half::f16;

/// A ggml tensor type: every type GGUF files may name, with ggml's numeric id, so that the
/// reader can size any tensor, even one whose dequantiser is missing here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    Iq2Xxs,
    Iq2Xs,
    Iq3Xxs,
    Iq1S,
    Iq4Nl,
    Iq3S,
    Iq2S,
    Iq4Xs,
    I8,
    I16,
    I32,
    I64,
    F64,
    Iq1M,
    BF16,
    Tq1_0,
    Tq2_0,
    Mxfp4,
    Nvfp4,
    Q1_0,
}

const QK_K: usize = 256;

/// `(type, ggml id, ggml name, elements per block, bytes per block)`, as gguf-py's
/// `GGML_QUANT_SIZES` and ggml's `type_traits` define them.
const TABLE: &[(GgmlType, u32, &str, usize, usize)] = &[
    (GgmlType::F32, 0, "F32", 1, 4),
    (GgmlType::F16, 1, "F16", 1, 2),
    (GgmlType::Q4_0, 2, "Q4_0", 32, 2 + 16),
    (GgmlType::Q4_1, 3, "Q4_1", 32, 2 + 2 + 16),
    (GgmlType::Q5_0, 6, "Q5_0", 32, 2 + 4 + 16),
    (GgmlType::Q5_1, 7, "Q5_1", 32, 2 + 2 + 4 + 16),
    (GgmlType::Q8_0, 8, "Q8_0", 32, 2 + 32),
    (GgmlType::Q8_1, 9, "Q8_1", 32, 4 + 4 + 32),
    (
        GgmlType::Q2K,
        10,
        "Q2_K",
        QK_K,
        2 + 2 + QK_K / 16 + QK_K / 4,
    ),
    (
        GgmlType::Q3K,
        11,
        "Q3_K",
        QK_K,
        2 + QK_K / 4 + QK_K / 8 + 12,
    ),
    (GgmlType::Q4K, 12, "Q4_K", QK_K, 2 + 2 + QK_K / 2 + 12),
    (
        GgmlType::Q5K,
        13,
        "Q5_K",
        QK_K,
        2 + 2 + QK_K / 2 + QK_K / 8 + 12,
    ),
    (
        GgmlType::Q6K,
        14,
        "Q6_K",
        QK_K,
        2 + QK_K / 2 + QK_K / 4 + QK_K / 16,
    ),
    (GgmlType::Q8K, 15, "Q8_K", QK_K, 4 + QK_K + QK_K / 8),
    (GgmlType::Iq2Xxs, 16, "IQ2_XXS", QK_K, 2 + QK_K / 4),
    (
        GgmlType::Iq2Xs,
        17,
        "IQ2_XS",
        QK_K,
        2 + QK_K / 4 + QK_K / 32,
    ),
    (
        GgmlType::Iq3Xxs,
        18,
        "IQ3_XXS",
        QK_K,
        2 + QK_K / 4 + QK_K / 8,
    ),
    (GgmlType::Iq1S, 19, "IQ1_S", QK_K, 2 + QK_K / 8 + QK_K / 16),
    (GgmlType::Iq4Nl, 20, "IQ4_NL", 32, 2 + 16),
    (
        GgmlType::Iq3S,
        21,
        "IQ3_S",
        QK_K,
        2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4,
    ),
    (GgmlType::Iq2S, 22, "IQ2_S", QK_K, 2 + QK_K / 4 + QK_K / 16),
    (
        GgmlType::Iq4Xs,
        23,
        "IQ4_XS",
        QK_K,
        2 + 2 + QK_K / 2 + QK_K / 64,
    ),
    (GgmlType::I8, 24, "I8", 1, 1),
    (GgmlType::I16, 25, "I16", 1, 2),
    (GgmlType::I32, 26, "I32", 1, 4),
    (GgmlType::I64, 27, "I64", 1, 8),
    (GgmlType::F64, 28, "F64", 1, 8),
    (
        GgmlType::Iq1M,
        29,
        "IQ1_M",
        QK_K,
        QK_K / 8 + QK_K / 16 + QK_K / 32,
    ),
    (GgmlType::BF16, 30, "BF16", 1, 2),
    (GgmlType::Tq1_0, 34, "TQ1_0", QK_K, 2 + 4 * 13),
    (GgmlType::Tq2_0, 35, "TQ2_0", QK_K, 2 + 64),
    (GgmlType::Mxfp4, 39, "MXFP4", 32, 1 + 16),
    (GgmlType::Nvfp4, 40, "NVFP4", 64, 4 + 32),
    (GgmlType::Q1_0, 41, "Q1_0", 128, 2 + 16),
];

/// The types [`dequantize`] handles: the float formats and the legacy and k-quant blocks that
/// llama.cpp's common `Q*_0/1`, `Q*_K_S/M` files are made of.
pub const SUPPORTED: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

impl GgmlType {
    fn row(self) -> &'static (GgmlType, u32, &'static str, usize, usize) {
        // Every variant has exactly one table row (checked by a unit test); the fallback is
        // never taken but keeps this total without a panic.
        TABLE.iter().find(|r| r.0 == self).unwrap_or(&TABLE[0])
    }

    /// The type with ggml id `id`, if ggml defines one.
    pub fn from_id(id: u32) -> Option<Self> {
        TABLE.iter().find(|r| r.1 == id).map(|r| r.0)
    }

    pub fn id(self) -> u32 {
        self.row().1
    }

    /// ggml's name for the type (`Q4_K`, `BF16`).
    pub fn name(self) -> &'static str {
        self.row().2
    }

    /// Elements per block.
    pub fn block_size(self) -> usize {
        self.row().3
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.row().4
    }

    /// Whether [`dequantize`] handles this type.
    pub fn is_supported(self) -> bool {
        SUPPORTED.contains(&self)
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a buffer could not be dequantised.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DequantError {
    #[error("ggml type {0} cannot be dequantised here (supported: {list})", list = supported_list())]
    Unsupported(GgmlType),
    #[error("{ty}: {bytes} bytes do not make {elements} elements ({block} per {size}-byte block)")]
    Length {
        ty: GgmlType,
        bytes: usize,
        elements: usize,
        block: usize,
        size: usize,
    },
}

fn supported_list() -> String {
    SUPPORTED
        .iter()
        .map(|t| t.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Dequantises `src`, whole blocks of type `ty`, into `dst` (one f32 per element).
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), DequantError> {
    let (block, size) = (ty.block_size(), ty.type_size());
    let length_error = || DequantError::Length {
        ty,
        bytes: src.len(),
        elements: dst.len(),
        block,
        size,
    };
    if !dst.len().is_multiple_of(block)
        || !src.len().is_multiple_of(size)
        || src.len() / size != dst.len() / block
    {
        return Err(length_error());
    }
    let f: fn(&[u8], &mut [f32]) = match ty {
        GgmlType::F32 => f32_block,
        GgmlType::F16 => f16_block,
        GgmlType::BF16 => bf16_block,
        GgmlType::Q4_0 => q4_0,
        GgmlType::Q4_1 => q4_1,
        GgmlType::Q5_0 => q5_0,
        GgmlType::Q5_1 => q5_1,
        GgmlType::Q8_0 => q8_0,
        GgmlType::Q2K => q2_k,
        GgmlType::Q3K => q3_k,
        GgmlType::Q4K => q4_k,
        GgmlType::Q5K => q5_k,
        GgmlType::Q6K => q6_k,
        other => return Err(DequantError::Unsupported(other)),
    };
    for (b, out) in src.chunks_exact(size).zip(dst.chunks_exact_mut(block)) {
        f(b, out);
    }
    Ok(())
}

// Each block function gets exactly `type_size` bytes and `block_size` outputs (`chunks_exact`),
// so the constant indices below are always in range.

fn half_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

fn f32_block(b: &[u8], out: &mut [f32]) {
    out[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
}

fn f16_block(b: &[u8], out: &mut [f32]) {
    out[0] = half_at(b, 0);
}

fn bf16_block(b: &[u8], out: &mut [f32]) {
    out[0] = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
}

/// `block_q4_0`: f16 d, 16 bytes of nibbles; element j < 16 is the low nibble of byte j,
/// element j + 16 its high nibble; value d * (q - 8).
fn q4_0(b: &[u8], out: &mut [f32]) {
    let d = half_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        out[j] = d * f32::from((qs[j] & 0x0F) as i8 - 8);
        out[j + 16] = d * f32::from((qs[j] >> 4) as i8 - 8);
    }
}

/// `block_q4_1`: f16 d, f16 m, 16 bytes of nibbles (layout as Q4_0); value d * q + m.
fn q4_1(b: &[u8], out: &mut [f32]) {
    let d = half_at(b, 0);
    let m = half_at(b, 2);
    let qs = &b[4..20];
    for j in 0..16 {
        out[j] = d * f32::from(qs[j] & 0x0F) + m;
        out[j + 16] = d * f32::from(qs[j] >> 4) + m;
    }
}

/// `block_q5_0`: f16 d, 32 high bits (u32 LE, bit j for element j), 16 bytes of low nibbles;
/// value d * (q - 16).
fn q5_0(b: &[u8], out: &mut [f32]) {
    let d = half_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for j in 0..16 {
        let lo = (qs[j] & 0x0F) | ((((qh >> j) & 1) as u8) << 4);
        let hi = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
        out[j] = d * f32::from(lo as i8 - 16);
        out[j + 16] = d * f32::from(hi as i8 - 16);
    }
}

/// `block_q5_1`: f16 d, f16 m, 32 high bits, 16 bytes of low nibbles; value d * q + m.
fn q5_1(b: &[u8], out: &mut [f32]) {
    let d = half_at(b, 0);
    let m = half_at(b, 2);
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for j in 0..16 {
        let lo = (qs[j] & 0x0F) | ((((qh >> j) & 1) as u8) << 4);
        let hi = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
        out[j] = d * f32::from(lo) + m;
        out[j + 16] = d * f32::from(hi) + m;
    }
}

/// `block_q8_0`: f16 d, 32 signed bytes; value q * d.
fn q8_0(b: &[u8], out: &mut [f32]) {
    let d = half_at(b, 0);
    for (o, &q) in out.iter_mut().zip(&b[2..34]) {
        *o = f32::from(q as i8) * d;
    }
}

/// `block_q2_K`: 16 scale bytes (low nibble scale, high nibble min), 64 bytes of 2-bit values,
/// f16 d, f16 dmin. Element e: half h = e / 128, shift s = (e % 128) / 32, l = e % 32 reads bits
/// 2s of byte 32h + l; sub-block e / 16. Value (d * sc) * q - dmin * m.
fn q2_k(b: &[u8], out: &mut [f32]) {
    let scales = &b[0..16];
    let qs = &b[16..80];
    let d = half_at(b, 80);
    let dmin = half_at(b, 82);
    for (e, o) in out.iter_mut().enumerate() {
        let sc = scales[e / 16];
        let dl = d * f32::from(sc & 0x0F);
        let ml = dmin * f32::from(sc >> 4);
        let (h, s, l) = (e / 128, (e % 128) / 32, e % 32);
        let q = (qs[32 * h + l] >> (2 * s)) & 3;
        *o = dl * f32::from(q) - ml;
    }
}

/// `block_q3_K`: 32 bytes of high-bit masks, 64 bytes of 2-bit values, 12 bytes of 6-bit scales,
/// f16 d. Element e: low bits as Q2_K, high bit (e / 32) of mask byte e % 32, *set* meaning no
/// offset and clear meaning -4; scale e / 16 stored minus 32. Value (d * scale) * q.
fn q3_k(b: &[u8], out: &mut [f32]) {
    let hmask = &b[0..32];
    let qs = &b[32..96];
    let sc = &b[96..108];
    let d = half_at(b, 108);
    let mut scales = [0f32; 16];
    for (i, s) in scales.iter_mut().enumerate() {
        let low = (sc[i % 8] >> (4 * (i / 8))) & 0x0F;
        let high = (sc[8 + i % 4] >> (2 * (i / 4))) & 0x03;
        *s = f32::from(((low | (high << 4)) as i8) - 32);
    }
    for (e, o) in out.iter_mut().enumerate() {
        let dl = d * scales[e / 16];
        let (h, s, l) = (e / 128, (e % 128) / 32, e % 32);
        let low = ((qs[32 * h + l] >> (2 * s)) & 3) as i8;
        let high = ((hmask[l] >> (e / 32)) & 1) ^ 1;
        *o = dl * f32::from(low - ((high << 2) as i8));
    }
}

/// The 8 six-bit scales and mins of Q4_K/Q5_K, packed in 12 bytes (ggml `get_scale_min_k4`).
fn scale_min_k4(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
    for j in 0..4 {
        sc[j] = s[j] & 0x3F;
        mn[j] = s[j + 4] & 0x3F;
        sc[j + 4] = (s[j + 8] & 0x0F) | ((s[j] >> 2) & 0x30);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 2) & 0x30);
    }
    (sc, mn)
}

/// `block_q4_K`: f16 d, f16 dmin, 12 bytes of scales/mins, 128 bytes of nibbles. Sub-block g of
/// 32: chunk g / 2 of 32 bytes, low nibbles for even g, high for odd. Value (d*sc)*q - dmin*m.
fn q4_k(b: &[u8], out: &mut [f32]) {
    let d = half_at(b, 0);
    let dmin = half_at(b, 2);
    let (sc, mn) = scale_min_k4(&b[4..16]);
    let qs = &b[16..144];
    for (g, chunk) in out.chunks_exact_mut(32).enumerate() {
        let dl = d * f32::from(sc[g]);
        let ml = dmin * f32::from(mn[g]);
        let (c, shift) = (g / 2, 4 * (g % 2));
        for (l, o) in chunk.iter_mut().enumerate() {
            let q = (qs[32 * c + l] >> shift) & 0x0F;
            *o = dl * f32::from(q) - ml;
        }
    }
}

/// `block_q5_K`: as Q4_K plus 32 bytes of high bits between scales and nibbles: bit g of byte l
/// is the fifth bit of element l of sub-block g.
fn q5_k(b: &[u8], out: &mut [f32]) {
    let d = half_at(b, 0);
    let dmin = half_at(b, 2);
    let (sc, mn) = scale_min_k4(&b[4..16]);
    let qh = &b[16..48];
    let qs = &b[48..176];
    for (g, chunk) in out.chunks_exact_mut(32).enumerate() {
        let dl = d * f32::from(sc[g]);
        let ml = dmin * f32::from(mn[g]);
        let (c, shift) = (g / 2, 4 * (g % 2));
        for (l, o) in chunk.iter_mut().enumerate() {
            let q = ((qs[32 * c + l] >> shift) & 0x0F) | (((qh[l] >> g) & 1) << 4);
            *o = dl * f32::from(q) - ml;
        }
    }
}

/// `block_q6_K`: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 signed scales, f16 d.
/// Element e: half h = e / 128; low nibble (e % 128) / 64 of byte 64h + e % 64; high bits
/// 2 * ((e % 128) / 32) of byte 32h + e % 32. Value (d * scale[e / 16]) * (q - 32).
fn q6_k(b: &[u8], out: &mut [f32]) {
    let ql = &b[0..128];
    let qh = &b[128..192];
    let scales = &b[192..208];
    let d = half_at(b, 208);
    for (e, o) in out.iter_mut().enumerate() {
        let (h, r) = (e / 128, e % 128);
        let low = (ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0F;
        let high = (qh[32 * h + r % 32] >> (2 * (r / 32))) & 0x03;
        let q = ((low | (high << 4)) as i8) - 32;
        let dl = d * f32::from(scales[e / 16] as i8);
        *o = dl * f32::from(q);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn table_covers_every_type_once() {
        for row in TABLE {
            assert_eq!(TABLE.iter().filter(|r| r.0 == row.0).count(), 1);
            assert_eq!(TABLE.iter().filter(|r| r.1 == row.1).count(), 1);
            assert_eq!(GgmlType::from_id(row.1), Some(row.0));
            assert_eq!(row.0.name(), row.2);
        }
        assert_eq!(
            GgmlType::from_id(4),
            None,
            "ids 4 and 5 (Q4_2, Q4_3) were removed"
        );
        assert_eq!(GgmlType::Q6K.type_size(), 210);
        assert_eq!(GgmlType::Q4K.type_size(), 144);
        assert_eq!(GgmlType::Q3K.type_size(), 110);
        assert_eq!(GgmlType::Q2K.type_size(), 84);
        assert_eq!(GgmlType::Q5K.type_size(), 176);
    }

    #[test]
    fn q8_0_known_block() {
        let mut b = Vec::from(h(0.5));
        b.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let mut out = [0f32; 32];
        dequantize(GgmlType::Q8_0, &b, &mut out).unwrap();
        for (i, v) in out.iter().enumerate() {
            assert_eq!(*v, (i as f32 - 16.0) * 0.5);
        }
    }

    #[test]
    fn q4_1_low_nibbles_first_then_high() {
        // byte j holds element j (low nibble) and element j + 16 (high nibble).
        let mut b = Vec::from(h(0.25));
        b.extend(h(-1.0));
        b.extend((0..16u8).map(|j| (j & 0x0F) | ((15 - j) << 4)));
        let mut out = [0f32; 32];
        dequantize(GgmlType::Q4_1, &b, &mut out).unwrap();
        for j in 0..16 {
            assert_eq!(out[j], 0.25 * j as f32 - 1.0, "element {j}");
            assert_eq!(
                out[j + 16],
                0.25 * (15 - j) as f32 - 1.0,
                "element {}",
                j + 16
            );
        }
    }

    #[test]
    fn q4_0_is_offset_by_eight() {
        let mut b = Vec::from(h(2.0));
        b.extend([0x80u8; 16]); // low nibble 0 → -8, high nibble 8 → 0
        let mut out = [1f32; 32];
        dequantize(GgmlType::Q4_0, &b, &mut out).unwrap();
        assert!(out[..16].iter().all(|&v| v == -16.0));
        assert!(out[16..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn q5_high_bits_come_from_the_u32() {
        // qh = bit 0 and bit 17 set: element 0 gets +16, element 17 gets +16.
        let qh: u32 = 1 | (1 << 17);
        let mut b = Vec::from(h(1.0));
        b.extend(qh.to_le_bytes());
        b.extend([0x21u8; 16]); // low nibbles 1, high nibbles 2
        let mut out = [0f32; 32];
        dequantize(GgmlType::Q5_0, &b, &mut out).unwrap();
        assert_eq!(out[0], 1.0); // 1 | 16 = 17, minus 16
        assert_eq!(out[1], -15.0);
        assert_eq!(out[16], -14.0);
        assert_eq!(out[17], 2.0); // 2 | 16 = 18, minus 16

        let mut b = Vec::from(h(0.5));
        b.extend(h(3.0));
        b.extend(qh.to_le_bytes());
        b.extend([0x21u8; 16]);
        dequantize(GgmlType::Q5_1, &b, &mut out).unwrap();
        assert_eq!(out[0], 0.5 * 17.0 + 3.0);
        assert_eq!(out[1], 0.5 + 3.0);
        assert_eq!(out[17], 0.5 * 18.0 + 3.0);
    }

    #[test]
    fn float_formats() {
        let mut out = [0f32; 3];
        let src: Vec<u8> = [1.5f32, -2.0, 1e-3]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        dequantize(GgmlType::F32, &src, &mut out).unwrap();
        assert_eq!(out, [1.5, -2.0, 1e-3]);
        let src: Vec<u8> = [1.5f32, -2.0, 65504.0].iter().flat_map(|&v| h(v)).collect();
        dequantize(GgmlType::F16, &src, &mut out).unwrap();
        assert_eq!(out, [1.5, -2.0, 65504.0]);
        // bf16 is the top half of an f32.
        let src: Vec<u8> = [1.5f32, -2.0, 3.0e38]
            .iter()
            .flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
            .collect();
        dequantize(GgmlType::BF16, &src, &mut out).unwrap();
        assert_eq!(out[..2], [1.5, -2.0]);
        assert_eq!(out[2].to_bits(), 3.0e38f32.to_bits() & 0xFFFF_0000);
    }

    #[test]
    fn q6_k_known_values() {
        // All quants 33 (low nibble 1, high bits 2) → q = 1; scales 1..=16, d = 0.5.
        let mut b = vec![0x11u8; 128];
        b.extend([0xAAu8; 64]); // 2-bit fields all 2
        b.extend((1..=16i8).map(|s| s as u8));
        b.extend(h(0.5));
        assert_eq!(b.len(), 210);
        let mut out = [0f32; 256];
        dequantize(GgmlType::Q6K, &b, &mut out).unwrap();
        for (e, v) in out.iter().enumerate() {
            assert_eq!(*v, 0.5 * (e / 16 + 1) as f32, "element {e}");
        }
    }

    #[test]
    fn q4_k_scale_packing() {
        // Scales 1..8, mins 0 except sub-block 5; quants = sub-block index for the low nibble.
        let mut s = [0u8; 12];
        let sc = [1u8, 2, 3, 4, 45, 6, 7, 8];
        let mn = [0u8, 0, 0, 0, 0, 33, 0, 0];
        for j in 0..4 {
            s[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
            s[j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6);
            s[j + 8] = (sc[j + 4] & 0x0F) | ((mn[j + 4] & 0x0F) << 4);
        }
        assert_eq!(scale_min_k4(&s), (sc, mn));
        let mut b = Vec::from(h(1.0));
        b.extend(h(0.5));
        b.extend(s);
        b.extend([0x73u8; 128]); // low nibble 3, high nibble 7
        let mut out = [0f32; 256];
        dequantize(GgmlType::Q4K, &b, &mut out).unwrap();
        for (e, v) in out.iter().enumerate() {
            let g = e / 32;
            let q = if g % 2 == 0 { 3.0 } else { 7.0 };
            assert_eq!(*v, sc[g] as f32 * q - 0.5 * mn[g] as f32, "element {e}");
        }
    }

    #[test]
    fn length_mismatch_and_unsupported_are_errors() {
        let mut out = [0f32; 32];
        assert!(matches!(
            dequantize(GgmlType::Q8_0, &[0u8; 33], &mut out),
            Err(DequantError::Length { .. })
        ));
        assert!(matches!(
            dequantize(GgmlType::Q8_0, &[0u8; 34], &mut out[..31]),
            Err(DequantError::Length { .. })
        ));
        assert_eq!(
            dequantize(GgmlType::Iq2Xxs, &[0u8; 66], &mut [0f32; 256]),
            Err(DequantError::Unsupported(GgmlType::Iq2Xxs))
        );
        let msg = DequantError::Unsupported(GgmlType::Iq2Xxs).to_string();
        assert!(msg.contains("IQ2_XXS") && msg.contains("Q4_1"), "{msg}");
    }
}
