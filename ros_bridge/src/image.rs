//! Camera messages to the policy's RGB images. Every malformed message becomes a typed
//! [`ImageError`] (the caller drops and counts it); nothing here panics on outside data.

use image::imageops::{resize, FilterType};
use vla_core::RgbImage;

use crate::msg::{CompressedImage, Image};

/// Why a camera message cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImageError {
    #[error("unsupported encoding {0:?} (supported: rgb8, bgr8, rgba8, bgra8, mono8)")]
    UnknownEncoding(String),
    #[error("empty image: width {width}, height {height}, {bytes} data bytes")]
    Empty {
        width: u32,
        height: u32,
        bytes: usize,
    },
    #[error("step {step} is less than width {width} × {channels} channels")]
    StepTooSmall {
        step: u32,
        width: u32,
        channels: u32,
    },
    #[error("data has {got} bytes but step {step} × height {height} = {expected}")]
    SizeMismatch {
        got: usize,
        step: u32,
        height: u32,
        expected: u64,
    },
    #[error("image of {width}×{height} is larger than the 16384×16384 limit")]
    TooLarge { width: u32, height: u32 },
    #[error("unsupported compressed format {0:?} (supported: jpeg, png)")]
    UnknownFormat(String),
    #[error("cannot decode {format} data: {cause}")]
    Undecodable { format: String, cause: String },
}

impl ImageError {
    /// Short machine-readable reason, used as a diagnostics counter key.
    pub fn kind(&self) -> &'static str {
        match self {
            ImageError::UnknownEncoding(_) => "unknown_encoding",
            ImageError::Empty { .. } => "empty",
            ImageError::StepTooSmall { .. } => "step_too_small",
            ImageError::SizeMismatch { .. } => "size_mismatch",
            ImageError::TooLarge { .. } => "too_large",
            ImageError::UnknownFormat(_) => "unknown_format",
            ImageError::Undecodable { .. } => "undecodable",
        }
    }
}

/// Largest side accepted, so a hostile header cannot make us allocate gigabytes.
const MAX_SIDE: u32 = 16384;

/// Every check of [`decode_raw`] that needs no pixel work (O(1)), so a receiver can reject
/// malformed messages immediately; returns (channels, R/G/B byte order).
pub fn validate_raw(msg: &Image) -> Result<(u32, [usize; 3]), ImageError> {
    let encoding = msg.encoding.trim().to_ascii_lowercase();
    // (channels, index of R, G, B in a pixel)
    let (channels, order): (u32, [usize; 3]) = match encoding.as_str() {
        "rgb8" => (3, [0, 1, 2]),
        "bgr8" => (3, [2, 1, 0]),
        "rgba8" => (4, [0, 1, 2]),
        "bgra8" => (4, [2, 1, 0]),
        "mono8" | "8uc1" => (1, [0, 0, 0]),
        _ => return Err(ImageError::UnknownEncoding(msg.encoding.clone())),
    };
    let (w, h) = (msg.width, msg.height);
    if w == 0 || h == 0 || msg.data.is_empty() {
        return Err(ImageError::Empty {
            width: w,
            height: h,
            bytes: msg.data.len(),
        });
    }
    if w > MAX_SIDE || h > MAX_SIDE {
        return Err(ImageError::TooLarge {
            width: w,
            height: h,
        });
    }
    let row_bytes = w as u64 * channels as u64;
    if (msg.step as u64) < row_bytes {
        return Err(ImageError::StepTooSmall {
            step: msg.step,
            width: w,
            channels,
        });
    }
    let expected = msg.step as u64 * h as u64;
    if msg.data.len() as u64 != expected {
        return Err(ImageError::SizeMismatch {
            got: msg.data.len(),
            step: msg.step,
            height: h,
            expected,
        });
    }
    Ok((channels, order))
}

/// Decode a `sensor_msgs/Image` into RGB8.
pub fn decode_raw(msg: &Image) -> Result<RgbImage, ImageError> {
    let (channels, order) = validate_raw(msg)?;
    let encoding = msg.encoding.trim().to_ascii_lowercase();
    let (w, h) = (msg.width, msg.height);
    let expected = msg.step as u64 * h as u64;
    let step = msg.step as usize;
    let c = channels as usize;
    if encoding == "rgb8" && step == 3 * w as usize {
        // Fast path: already the layout we want.
        return RgbImage::from_raw(w, h, msg.data.clone()).ok_or(ImageError::SizeMismatch {
            got: msg.data.len(),
            step: msg.step,
            height: h,
            expected,
        });
    }
    let mut out = Vec::with_capacity(w as usize * h as usize * 3);
    for row in msg.data.chunks_exact(step) {
        for px in row[..w as usize * c].chunks_exact(c) {
            out.extend_from_slice(&[px[order[0]], px[order[1]], px[order[2]]]);
        }
    }
    RgbImage::from_raw(w, h, out).ok_or(ImageError::SizeMismatch {
        got: msg.data.len(),
        step: msg.step,
        height: h,
        expected,
    })
}

/// The codec a `CompressedImage` names in `format` (JPEG or PNG) and its magic bytes; an
/// unknown format or empty data is an error.
fn compressed_codec(
    msg: &CompressedImage,
) -> Result<(image::ImageFormat, &'static [u8]), ImageError> {
    let format = msg.format.to_ascii_lowercase();
    let codec: (image::ImageFormat, &'static [u8]) =
        if format.contains("jpeg") || format.contains("jpg") {
            (image::ImageFormat::Jpeg, &[0xFF, 0xD8])
        } else if format.contains("png") {
            (image::ImageFormat::Png, &[0x89, 0x50, 0x4E, 0x47])
        } else {
            return Err(ImageError::UnknownFormat(msg.format.clone()));
        };
    if msg.data.is_empty() {
        return Err(ImageError::Empty {
            width: 0,
            height: 0,
            bytes: 0,
        });
    }
    Ok(codec)
}

/// The cheap checks of [`decode_compressed`]: known format, data present, and the codec's
/// magic bytes (JPEG `FF D8`, PNG `89 50 4E 47`).
pub fn validate_compressed(msg: &CompressedImage) -> Result<(), ImageError> {
    let (_, magic) = compressed_codec(msg)?;
    if !msg.data.starts_with(magic) {
        return Err(ImageError::Undecodable {
            format: msg.format.clone(),
            cause: "data does not start with the format's signature".into(),
        });
    }
    Ok(())
}

/// Decode a `sensor_msgs/CompressedImage` (JPEG or PNG) into RGB8.
///
/// `format` follows image_transport: `jpeg`, `png`, or `rgb8; jpeg compressed bgr8`; the
/// codec is taken from the format and must match the data's magic bytes.
pub fn decode_compressed(msg: &CompressedImage) -> Result<RgbImage, ImageError> {
    let (wanted, _) = compressed_codec(msg)?;
    let undecodable = |cause: String| ImageError::Undecodable {
        format: msg.format.clone(),
        cause,
    };
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(&msg.data), wanted);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(512 * 1024 * 1024);
    reader.limits(limits);
    let decoded = reader.decode().map_err(|e| undecodable(e.to_string()))?;
    if decoded.width() == 0 || decoded.height() == 0 {
        return Err(ImageError::Empty {
            width: decoded.width(),
            height: decoded.height(),
            bytes: msg.data.len(),
        });
    }
    Ok(decoded.to_rgb8())
}

/// Resize to `size × size` unless it already is.
///
/// Shrinking by more than 2× (a 640×480 camera for a 224 or 64 px policy) uses area
/// resampling (OpenCV's `INTER_AREA`): every output pixel is the mean of the source pixels
/// under its footprint, which is what the triangle filter converges to at large factors, at
/// a fifth of its cost (one multiply-add per source byte). Up to 2×, and enlarging, use the
/// bilinear (triangle) filter, as the policy's own preprocessing does: the simulator's
/// 128 px frames reach a 64 px policy exactly as in training.
pub fn fit(img: RgbImage, size: u32) -> RgbImage {
    if size == 0 || (img.width() == size && img.height() == size) {
        return img;
    }
    if area_applies(img.width(), img.height(), size) {
        let (w, h) = img.dimensions();
        let step = w as usize * 3;
        if let Some(out) = area_resize(img.as_raw(), [w, h], step, (3, [0, 1, 2]), size) {
            return out;
        }
    }
    resize(&img, size, size, FilterType::Triangle)
}

/// Whether [`fit`] area-resamples a `w × h` frame to `size`: shrinking by more than 2×.
fn area_applies(w: u32, h: u32, size: u32) -> bool {
    size > 0 && w / 2 > size && h / 2 > size
}

/// [`decode_raw`] then [`fit`], without the intermediate full-size copy: a camera frame
/// more than twice the policy's input is area-resampled straight from the message buffer,
/// with the channel reordering (bgr8, rgba8, mono8, …) folded into the same pass.
pub fn decode_raw_fit(msg: &Image, size: u32) -> Result<RgbImage, ImageError> {
    let (channels, order) = validate_raw(msg)?;
    if area_applies(msg.width, msg.height, size) {
        let (w, h) = (msg.width, msg.height);
        let layout = (channels as usize, order);
        if let Some(out) = area_resize(&msg.data, [w, h], msg.step as usize, layout, size) {
            return Ok(out);
        }
    }
    decode_raw(msg).map(|img| fit(img, size))
}

/// [`decode_compressed`] then [`fit`]; a JPEG at least twice the policy's size is decoded
/// at reduced scale straight away (see [`decode_jpeg_reduced`]).
pub fn decode_compressed_fit(msg: &CompressedImage, size: u32) -> Result<RgbImage, ImageError> {
    let (format, _) = compressed_codec(msg)?;
    if format == image::ImageFormat::Jpeg && size > 0 {
        if let Some(img) = decode_jpeg_reduced(msg, size)? {
            return Ok(img);
        }
    }
    decode_compressed(msg).map(|img| fit(img, size))
}

/// A JPEG decoded at the smallest of 1/1, 1/2, 1/4, 1/8 scale that is still at least
/// `size` on both sides (the IDCT computes only the low frequencies it needs), then
/// area-resampled: a 640×480 frame for a 64×64 policy is decoded at 160×120, a sixteenth of
/// the colour conversion and most of the IDCT saved. `None` when this path does not apply
/// (a frame smaller than `size`, CMYK or 16-bit data): the general decoder takes those.
fn decode_jpeg_reduced(msg: &CompressedImage, size: u32) -> Result<Option<RgbImage>, ImageError> {
    let undecodable = |cause: String| ImageError::Undecodable {
        format: msg.format.clone(),
        cause,
    };
    let mut decoder = jpeg_decoder::Decoder::new(msg.data.as_slice());
    decoder.set_max_decoding_buffer_size(512 * 1024 * 1024);
    decoder
        .read_info()
        .map_err(|e| undecodable(e.to_string()))?;
    let Some(info) = decoder.info() else {
        return Ok(None);
    };
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    if width == 0 || height == 0 {
        return Err(ImageError::Empty {
            width,
            height,
            bytes: msg.data.len(),
        });
    }
    let layout = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => (3, [0, 1, 2]),
        jpeg_decoder::PixelFormat::L8 => (1, [0, 0, 0]),
        _ => return Ok(None),
    };
    if width < size || height < size {
        return Ok(None);
    }
    // `scale` settles for the first scale where *either* side reaches the request: ask on
    // the shorter side only (the other request can never be met), so both sides reach it.
    let request = size.min(u32::from(u16::MAX)) as u16;
    let (request_w, request_h) = if width <= height {
        (request, u16::MAX)
    } else {
        (u16::MAX, request)
    };
    let (w, h) = decoder
        .scale(request_w, request_h)
        .map_err(|e| undecodable(e.to_string()))?;
    let pixels = decoder.decode().map_err(|e| undecodable(e.to_string()))?;
    let (w, h) = (u32::from(w), u32::from(h));
    if pixels.len() != w as usize * h as usize * layout.0 {
        return Err(undecodable(format!(
            "decoder returned {} bytes for {w}×{h}",
            pixels.len()
        )));
    }
    // Area resampling at any factor (at 1:1 it is an exact copy, grey expanded to RGB): a
    // lossy JPEG cannot match the training preprocessing bit for bit anyway, and the
    // triangle filter from 320×240 to 224 would cost 4 ms.
    Ok(area_resize(
        &pixels,
        [w, h],
        w as usize * layout.0,
        layout,
        size,
    ))
}

/// Fixed-point scale of the area weights of one axis (both axes: 255 × 2¹² × 2¹² < 2³²).
const AREA_ONE: u32 = 1 << 12;

/// For each output index of an axis shrunk from `src` to `dst` samples: the first source
/// index and the weights of the source samples its footprint covers, summing to
/// [`AREA_ONE`] exactly.
fn area_weights(src: u32, dst: u32) -> Vec<(usize, Vec<u32>)> {
    let scale = f64::from(src) / f64::from(dst);
    (0..dst)
        .map(|i| {
            let (a, b) = (f64::from(i) * scale, f64::from(i + 1) * scale);
            let first = a.floor() as usize;
            let last = (b.ceil() as usize).min(src as usize).max(first + 1);
            let mut weights: Vec<u32> = (first..last)
                .map(|j| {
                    let overlap = b.min(j as f64 + 1.0) - a.max(j as f64);
                    (overlap.max(0.0) / scale * f64::from(AREA_ONE)).round() as u32
                })
                .collect();
            // Rounding may leave the sum off by a few units: the largest weight absorbs it.
            let sum: u32 = weights.iter().sum();
            if let Some(max) = weights.iter_mut().max() {
                *max = (*max + AREA_ONE).saturating_sub(sum);
            }
            (first, weights)
        })
        .collect()
}

/// Area resampling of a `width × height` buffer with rows `step` bytes apart and `channels`
/// bytes per pixel (R, G, B at `order`) to `size × size` RGB8. `None` when the buffer is too
/// short for the layout (callers validate first; this never panics either way).
fn area_resize(
    data: &[u8],
    [width, height]: [u32; 2],
    step: usize,
    (channels, order): (usize, [usize; 3]),
    size: u32,
) -> Option<RgbImage> {
    let (w, h, n) = (width as usize, height as usize, size as usize);
    if n == 0 || w < n || h < n || channels == 0 || order.iter().any(|&o| o >= channels) {
        return None;
    }
    if step < w * channels || data.len() < step * (h - 1) + w * channels {
        return None;
    }
    let columns = area_weights(width, size);
    let rows = area_weights(height, size);
    // Horizontal pass: every source row to `size` pixels (scaled by AREA_ONE).
    let mut narrow = vec![0u32; h * n * 3];
    for (y, out) in narrow.chunks_exact_mut(n * 3).enumerate() {
        let row = data.get(y * step..y * step + w * channels)?;
        for ((first, weights), px) in columns.iter().zip(out.chunks_exact_mut(3)) {
            let src = row.get(first * channels..(first + weights.len()) * channels)?;
            let mut acc = [0u32; 3];
            for (wt, s) in weights.iter().zip(src.chunks_exact(channels)) {
                acc[0] += wt * u32::from(s[order[0]]);
                acc[1] += wt * u32::from(s[order[1]]);
                acc[2] += wt * u32::from(s[order[2]]);
            }
            px.copy_from_slice(&acc);
        }
    }
    // Vertical pass.
    let mut out = Vec::with_capacity(n * n * 3);
    let mut acc = vec![0u32; n * 3];
    let (one, half) = (AREA_ONE * AREA_ONE, AREA_ONE * AREA_ONE / 2);
    for (first, weights) in &rows {
        acc.iter_mut().for_each(|a| *a = 0);
        for (k, wt) in weights.iter().enumerate() {
            let src = narrow.get((first + k) * n * 3..(first + k + 1) * n * 3)?;
            for (a, s) in acc.iter_mut().zip(src) {
                *a += wt * s;
            }
        }
        out.extend(
            acc.iter()
                .map(|a| (a.saturating_add(half) / one).min(255) as u8),
        );
    }
    RgbImage::from_raw(size, size, out)
}

/// Encode RGB8 as a raw `sensor_msgs/Image` (rgb8, tightly packed).
pub fn encode_raw(img: &RgbImage, header: crate::msg::Header) -> Image {
    Image {
        header,
        height: img.height(),
        width: img.width(),
        encoding: "rgb8".into(),
        is_bigendian: 0,
        step: img.width() * 3,
        data: img.as_raw().clone(),
    }
}

/// Encode RGB8 as JPEG for a `sensor_msgs/CompressedImage`.
pub fn encode_jpeg(
    img: &RgbImage,
    quality: u8,
    header: crate::msg::Header,
) -> Result<CompressedImage, ImageError> {
    let mut data = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut data, quality)
        .encode_image(img)
        .map_err(|e| ImageError::Undecodable {
            format: "jpeg".into(),
            cause: e.to_string(),
        })?;
    Ok(CompressedImage {
        header,
        format: "jpeg".into(),
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::Header;

    fn sample(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x as u8).wrapping_mul(10), (y as u8).wrapping_mul(20), 7])
        })
    }

    /// A smooth 640×480 scene with a 40-px red "object", like a camera frame.
    fn camera_frame() -> RgbImage {
        RgbImage::from_fn(640, 480, |x, y| {
            if (300..340).contains(&x) && (200..240).contains(&y) {
                image::Rgb([220, 30, 30])
            } else {
                image::Rgb([(x * 255 / 640) as u8, (y * 255 / 480) as u8, 128])
            }
        })
    }

    fn mean_abs_difference(a: &RgbImage, b: &RgbImage) -> f64 {
        let sum: f64 = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs())
            .sum();
        sum / a.as_raw().len().max(1) as f64
    }

    fn raw(img: &RgbImage, encoding: &str, pad: u32) -> Image {
        let (w, h) = img.dimensions();
        let c: u32 = match encoding {
            "mono8" => 1,
            "rgba8" | "bgra8" => 4,
            _ => 3,
        };
        let step = w * c + pad;
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let [r, g, b] = img.get_pixel(x, y).0;
                match encoding {
                    "rgb8" => data.extend([r, g, b]),
                    "bgr8" => data.extend([b, g, r]),
                    "rgba8" => data.extend([r, g, b, 255]),
                    "bgra8" => data.extend([b, g, r, 255]),
                    _ => data.push(r),
                }
            }
            data.extend(std::iter::repeat_n(0xEE, pad as usize));
        }
        Image {
            header: Header::default(),
            height: h,
            width: w,
            encoding: encoding.into(),
            is_bigendian: 0,
            step,
            data,
        }
    }

    #[test]
    fn every_encoding_decodes_to_the_same_rgb() {
        let img = sample(5, 4);
        for enc in ["rgb8", "bgr8", "rgba8", "bgra8"] {
            for pad in [0, 3] {
                let out = decode_raw(&raw(&img, enc, pad)).expect(enc);
                assert_eq!(out, img, "{enc} pad {pad}");
            }
        }
        let mono = decode_raw(&raw(&img, "mono8", 1)).expect("mono8");
        assert_eq!(mono.get_pixel(2, 3).0, [20, 20, 20]);
    }

    #[test]
    fn malformed_raw_images_are_typed_errors() {
        let good = raw(&sample(4, 4), "rgb8", 0);
        let mut m = good.clone();
        m.encoding = "yuv422".into();
        assert_eq!(
            decode_raw(&m).map_err(|e| e.kind()),
            Err("unknown_encoding")
        );
        let mut m = good.clone();
        m.data.clear();
        assert_eq!(decode_raw(&m).map_err(|e| e.kind()), Err("empty"));
        let mut m = good.clone();
        m.width = 0;
        assert_eq!(decode_raw(&m).map_err(|e| e.kind()), Err("empty"));
        let mut m = good.clone();
        m.step = 11;
        assert_eq!(decode_raw(&m).map_err(|e| e.kind()), Err("step_too_small"));
        let mut m = good.clone();
        m.data.pop();
        assert_eq!(decode_raw(&m).map_err(|e| e.kind()), Err("size_mismatch"));
        let mut m = good.clone();
        m.height = 5;
        assert_eq!(decode_raw(&m).map_err(|e| e.kind()), Err("size_mismatch"));
        let mut m = good;
        m.width = u32::MAX;
        m.step = u32::MAX;
        assert_eq!(decode_raw(&m).map_err(|e| e.kind()), Err("too_large"));
    }

    #[test]
    fn jpeg_and_png_decode_and_garbage_does_not() {
        let img = sample(16, 8);
        let jpeg = encode_jpeg(&img, 95, Header::default()).expect("encodes");
        let out = decode_compressed(&jpeg).expect("jpeg decodes");
        assert_eq!(out.dimensions(), (16, 8));
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .expect("png encodes");
        let msg = CompressedImage {
            header: Header::default(),
            format: "rgb8; png compressed rgb8".into(),
            data: png,
        };
        assert_eq!(decode_compressed(&msg).expect("png decodes"), img);

        let mut bad = jpeg.clone();
        bad.data.truncate(20);
        assert_eq!(
            decode_compressed(&bad).map_err(|e| e.kind()),
            Err("undecodable")
        );
        let mut bad = jpeg.clone();
        bad.data = vec![1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(
            decode_compressed(&bad).map_err(|e| e.kind()),
            Err("undecodable")
        );
        let mut bad = jpeg.clone();
        bad.data.clear();
        assert_eq!(decode_compressed(&bad).map_err(|e| e.kind()), Err("empty"));
        let mut bad = jpeg;
        bad.format = "tiff".into();
        assert_eq!(
            decode_compressed(&bad).map_err(|e| e.kind()),
            Err("unknown_format")
        );
    }

    #[test]
    fn fit_resizes_to_the_policy_size() {
        assert_eq!(fit(sample(64, 48), 32).dimensions(), (32, 32));
        assert_eq!(fit(sample(32, 32), 32).dimensions(), (32, 32));
        assert_eq!(
            fit(sample(20, 30), 32).dimensions(),
            (32, 32),
            "enlarges too"
        );
        // A large frame takes the area path and lands near the triangle filter, which
        // averages over the same footprint with tapered weights. A smooth scene with a
        // 40-px red "object", like a camera frame.
        let big = camera_frame();
        for size in [64, 224] {
            let fast = fit(big.clone(), size);
            let plain = resize(&big, size, size, FilterType::Triangle);
            assert_eq!(fast.dimensions(), (size, size));
            let diff = mean_abs_difference(&fast, &plain);
            assert!(diff < 2.0, "{size}: mean difference {diff}");
        }
    }

    #[test]
    fn area_resize_is_the_mean_over_each_footprint() {
        // Integer factor: each output pixel is its block's mean.
        let mut img = RgbImage::new(4, 2);
        for (x, y, p) in img.enumerate_pixels_mut() {
            *p = image::Rgb([if x < 2 { 10 } else { 30 }, (y * 100) as u8, 7]);
        }
        let raw = img.as_raw();
        let small = area_resize(raw, [4, 2], 12, (3, [0, 1, 2]), 1).expect("resizes");
        assert_eq!(small.get_pixel(0, 0).0, [20, 50, 7]);
        // Fractional factor 3 → 2: the middle column counts half for each output column.
        let row = RgbImage::from_fn(3, 3, |x, _| image::Rgb([[0, 90, 180][x as usize], 0, 0]));
        let out = area_resize(row.as_raw(), [3, 3], 9, (3, [0, 1, 2]), 2).expect("resizes");
        assert_eq!(out.get_pixel(0, 0).0[0], 30, "(0 + 0.5·90) / 1.5");
        assert_eq!(out.get_pixel(1, 1).0[0], 150, "(0.5·90 + 180) / 1.5");
        // A constant image stays constant at every factor (weights sum to one exactly).
        let flat = RgbImage::from_pixel(97, 61, image::Rgb([255, 128, 1]));
        for size in [1, 7, 13, 60, 61] {
            let out =
                area_resize(flat.as_raw(), [97, 61], 291, (3, [0, 1, 2]), size).expect("resizes");
            assert!(out.pixels().all(|p| p.0 == [255, 128, 1]), "size {size}");
        }
        // Too short a buffer is refused, not a panic.
        assert!(area_resize(&raw[..10], [4, 2], 12, (3, [0, 1, 2]), 1).is_none());
    }

    #[test]
    fn reduced_jpeg_decoding_matches_full_decoding_then_fit() {
        let img = camera_frame();
        let jpeg = encode_jpeg(&img, 90, Header::default()).expect("encodes");
        for size in [64, 100, 224, 480] {
            // The reduced-scale path itself, not the fallback to a full decode.
            assert!(
                decode_jpeg_reduced(&jpeg, size).expect("decodes").is_some(),
                "{size}"
            );
            let reduced = decode_compressed_fit(&jpeg, size).expect("decodes");
            let full = fit(decode_compressed(&jpeg).expect("decodes"), size);
            assert_eq!(reduced.dimensions(), (size, size));
            let diff = mean_abs_difference(&reduced, &full);
            assert!(diff < 2.0, "{size}: mean difference {diff}");
        }
        // Smaller than the policy's input: the general path enlarges it.
        let small = encode_jpeg(&sample(40, 30), 90, Header::default()).expect("encodes");
        assert_eq!(
            decode_compressed_fit(&small, 64)
                .expect("decodes")
                .dimensions(),
            (64, 64)
        );
        // Truncated data is an error, not a panic.
        let mut cut = jpeg.clone();
        cut.data.truncate(200);
        assert!(decode_compressed_fit(&cut, 64).is_err());
    }

    #[test]
    fn decode_raw_fit_equals_decode_then_fit_for_every_encoding() {
        let img = RgbImage::from_fn(160, 120, |x, y| {
            image::Rgb([
                (x * 3 % 256) as u8,
                (y * 5 % 256) as u8,
                ((x + y) % 256) as u8,
            ])
        });
        for (enc, pad) in [
            ("rgb8", 0),
            ("bgr8", 4),
            ("rgba8", 0),
            ("bgra8", 8),
            ("mono8", 3),
        ] {
            let msg = raw(&img, enc, pad);
            // 32: area resampling from the buffer; 64 (within 2×) and 200: the triangle filter.
            for size in [32, 64, 200] {
                let direct = decode_raw_fit(&msg, size).expect(enc);
                let two_step = fit(decode_raw(&msg).expect(enc), size);
                assert_eq!(direct, two_step, "{enc} to {size}");
            }
        }
        // Within 2×, `fit` is the training preprocessing's triangle filter exactly.
        let sim = sample(128, 128);
        assert_eq!(
            fit(sim.clone(), 64),
            resize(&sim, 64, 64, FilterType::Triangle)
        );
        let mut bad = raw(&img, "rgb8", 0);
        bad.data.truncate(100);
        assert_eq!(
            decode_raw_fit(&bad, 64).map_err(|e| e.kind()),
            Err("size_mismatch")
        );
    }
}
