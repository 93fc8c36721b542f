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

/// Resize to `size × size` (bilinear, as the policy's own preprocessing) unless it already is.
///
/// A camera frame many times the policy's size (640×480 → 64×64) is first averaged down by an
/// integer factor that leaves at least twice the target size, so the bilinear filter's last
/// step still sees what it sees in training (128 → 64 in the simulator). The bilinear filter's
/// cost grows with the scale factor; a block average costs one add per source byte.
pub fn fit(img: RgbImage, size: u32) -> RgbImage {
    if size == 0 || (img.width() == size && img.height() == size) {
        return img;
    }
    let factor = (img.width().min(img.height()) / size) / 2;
    let img = if factor >= 2 {
        box_downscale(&img, factor)
    } else {
        img
    };
    resize(&img, size, size, FilterType::Triangle)
}

/// Mean of each `factor × factor` block (the right and bottom remainders are dropped).
fn box_downscale(img: &RgbImage, factor: u32) -> RgbImage {
    let (w, h) = (img.width() / factor, img.height() / factor);
    let src = img.as_raw();
    let stride = img.width() as usize * 3;
    let f = factor as usize;
    let area = (f * f) as u32;
    let mut out = Vec::with_capacity(w as usize * h as usize * 3);
    let mut sums = vec![0u32; w as usize * 3];
    for by in 0..h as usize {
        sums.iter_mut().for_each(|s| *s = 0);
        for row in src[by * f * stride..].chunks_exact(stride).take(f) {
            for (bx, sum) in sums.chunks_exact_mut(3).enumerate() {
                for px in row[bx * f * 3..(bx + 1) * f * 3].chunks_exact(3) {
                    sum[0] += u32::from(px[0]);
                    sum[1] += u32::from(px[1]);
                    sum[2] += u32::from(px[2]);
                }
            }
        }
        out.extend(sums.iter().map(|s| ((s + area / 2) / area) as u8));
    }
    // The buffer has exactly w*h*3 bytes, so this cannot fail; fall back to a plain resize.
    RgbImage::from_raw(w, h, out).unwrap_or_else(|| resize(img, w, h, FilterType::Triangle))
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
        // A large frame takes the block-average path and still lands near the plain filter.
        // A smooth scene with a 40-px red "object", like a camera frame.
        let big = RgbImage::from_fn(640, 480, |x, y| {
            if (300..340).contains(&x) && (200..240).contains(&y) {
                image::Rgb([220, 30, 30])
            } else {
                image::Rgb([(x * 255 / 640) as u8, (y * 255 / 480) as u8, 128])
            }
        });
        let fast = fit(big.clone(), 64);
        let plain = resize(&big, 64, 64, FilterType::Triangle);
        assert_eq!(fast.dimensions(), (64, 64));
        let diff: f64 = fast
            .as_raw()
            .iter()
            .zip(plain.as_raw())
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
            .sum::<f64>()
            / fast.as_raw().len() as f64;
        assert!(diff < 2.0, "mean difference {diff}");
    }

    #[test]
    fn box_downscale_averages_blocks() {
        let mut img = RgbImage::new(4, 2);
        for (x, y, p) in img.enumerate_pixels_mut() {
            *p = image::Rgb([if x < 2 { 10 } else { 30 }, (y * 100) as u8, 7]);
        }
        let small = box_downscale(&img, 2);
        assert_eq!(small.dimensions(), (2, 1));
        assert_eq!(small.get_pixel(0, 0).0, [10, 50, 7]);
        assert_eq!(small.get_pixel(1, 0).0, [30, 50, 7]);
    }
}
