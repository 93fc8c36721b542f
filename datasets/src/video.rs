//! Video features (LeRobot v3.0 `dtype: "video"`): camera streams stored as MP4 files under
//! `videos/<key>/chunk-XXX/file-YYY.mp4`, several episodes back to back in one file, each
//! episode found at `videos/<key>/from_timestamp` in it (lerobot 0.4.4's layout).
//!
//! Coding goes through the system FFmpeg libraries (libavformat, libavcodec with libdav1d /
//! libaom / libsvtav1 / libx264, libswscale), which `make setup` installs; nothing here is a
//! codec of its own. Frames are found as lerobot finds them: the decoded frame whose
//! presentation time is within [`TIMESTAMP_TOLERANCE_S`] of `from_timestamp + timestamp`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ffmpeg::codec::{self, Parameters};
use ffmpeg::format::Pixel;
use ffmpeg::software::scaling;
use ffmpeg::{Dictionary, Packet, Rational};
use ffmpeg_next as ffmpeg;
use image::RgbImage;
use serde_json::{json, Value};

use crate::error::{AtPath, DatasetError, Result};
use crate::format::{commit_tmp, tmp_path};

/// How far a decoded frame's presentation time may be from the requested one (lerobot's
/// default `tolerance_s`).
pub const TIMESTAMP_TOLERANCE_S: f64 = 1e-4;
/// Template of video file paths, relative to the dataset root (lerobot `DEFAULT_VIDEO_PATH`).
pub const DEFAULT_VIDEO_PATH: &str =
    "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4";
/// Directory of the video files.
pub const VIDEOS_DIR: &str = "videos";

/// A requested frame at most this many frames after the last decoded one is reached by
/// decoding on rather than seeking (a seek restarts at a key frame and costs a decoder flush).
const DECODE_ON_FRAMES: f64 = 8.0;
/// Opened decoders a dataset keeps for reuse between reads.
const DECODER_POOL: usize = 16;

/// Expand a lerobot video path template (`{video_key}`, `{chunk_index:03d}`,
/// `{file_index:03d}`).
pub fn format_video_path(template: &str, key: &str, chunk: usize, file: usize) -> String {
    crate::format::format_path(&template.replace("{video_key}", key), chunk, file)
}

/// Make FFmpeg ready (once per process) and keep its logging to errors.
fn init() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        // `init` only registers formats on old FFmpeg versions and cannot fail on 5.x.
        let _ = ffmpeg::init();
        ffmpeg::log::set_level(ffmpeg::log::Level::Error);
        // SVT-AV1 prints a 20-line banner at every encoder start unless its own log level
        // (read from the environment, there is no API) says otherwise: warnings and errors
        // only, unless the user chose a level. Set before any encoder exists: every coding
        // path waits for this `init` first.
        if std::env::var_os("SVT_LOG").is_none() {
            std::env::set_var("SVT_LOG", "2");
        }
    });
}

/// A video codec family; the encoder is the first of its libraries the installed libavcodec
/// has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoCodec {
    /// AV1 (lerobot's default): libsvtav1, else libaom-av1.
    Av1,
    /// H.264: libx264.
    H264,
}

impl VideoCodec {
    /// Encoder libraries of this codec, in order of preference.
    pub fn encoders(self) -> &'static [&'static str] {
        match self {
            VideoCodec::Av1 => &["libsvtav1", "libaom-av1"],
            VideoCodec::H264 => &["libx264"],
        }
    }

    /// The first encoder of [`VideoCodec::encoders`] the installed libavcodec offers.
    pub fn encoder(self) -> Option<&'static str> {
        init();
        self.encoders()
            .iter()
            .copied()
            .find(|name| ffmpeg::encoder::find_by_name(name).is_some())
    }

    /// The name `info.json` gives the codec (`video.codec`, FFmpeg's canonical name).
    pub fn name(self) -> &'static str {
        match self {
            VideoCodec::Av1 => "av1",
            VideoCodec::H264 => "h264",
        }
    }

    /// The codec of a `video.codec` name (`av1`, `h264`), if this crate can encode it.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "av1" | "libsvtav1" | "libaom-av1" | "libdav1d" => Some(VideoCodec::Av1),
            "h264" | "libx264" => Some(VideoCodec::H264),
            _ => None,
        }
    }
}

impl std::fmt::Display for VideoCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How the writer encodes camera streams (see [`crate::DatasetSpec::video`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VideoSpec {
    pub codec: VideoCodec,
    /// Constant-quality factor (lower is better; lerobot's default 30).
    pub crf: u8,
    /// Frames between key frames (lerobot's default 2: any frame is at most one frame away
    /// from a seek point, which is what random access during training needs).
    pub gop: u32,
}

impl Default for VideoSpec {
    /// lerobot 0.4.4's settings: AV1 where the installed libavcodec can encode it, H.264
    /// otherwise; crf 30, a key frame every 2 frames, yuv420p.
    fn default() -> Self {
        let codec = if VideoCodec::Av1.encoder().is_some() {
            VideoCodec::Av1
        } else {
            VideoCodec::H264
        };
        VideoSpec {
            codec,
            crf: 30,
            gop: 2,
        }
    }
}

/// The encoders of [`VideoCodec`] the installed libavcodec offers (e.g. `["libaom-av1",
/// "libx264"]`).
pub fn available_encoders() -> Vec<&'static str> {
    init();
    [VideoCodec::Av1, VideoCodec::H264]
        .iter()
        .flat_map(|c| c.encoders().iter().copied())
        .filter(|name| ffmpeg::encoder::find_by_name(name).is_some())
        .collect()
}

/// lerobot's `info` block of a video feature (`features[key]["info"]`).
pub fn info_block(codec: VideoCodec, width: u32, height: u32, fps: u32) -> Value {
    json!({
        "video.height": height,
        "video.width": width,
        "video.codec": codec.name(),
        "video.pix_fmt": "yuv420p",
        "video.is_depth_map": false,
        "video.fps": fps,
        "video.channels": 3,
        "has_audio": false
    })
}

/// FFmpeg takes paths as C strings (and ffmpeg-next panics on others): refuse, naming the
/// file, a path that is not UTF-8 or holds a NUL byte.
fn c_path(path: &Path, key: &str) -> Result<()> {
    match path.to_str() {
        Some(s) if !s.contains('\0') => Ok(()),
        _ => Err(DatasetError::usage(
            path,
            format!("{key}: FFmpeg needs a UTF-8 file path without NUL bytes"),
        )),
    }
}

fn av_error(path: &Path, key: &str, what: &str, e: ffmpeg::Error) -> DatasetError {
    DatasetError::Video {
        path: path.to_path_buf(),
        detail: format!("{key}: {what}: {e}"),
    }
}

// ---------------------------------------------------------------------------------------
// Encoding

/// One compressed frame, timestamps in frames (time base 1/fps).
struct EncodedPacket {
    data: Vec<u8>,
    pts: i64,
    dts: i64,
    key: bool,
}

/// One episode of one camera, encoded and waiting to be written into a video file.
pub(crate) struct EncodedVideo {
    /// Codec parameters (with the sequence header) of the stream; behind a mutex only so that
    /// the writer stays `Sync`.
    params: Mutex<Parameters>,
    packets: Vec<EncodedPacket>,
    pub frames: usize,
    pub bytes: usize,
}

/// Encode the frames of one episode of camera `key` (all `width`×`height`) as one stream that
/// starts with a key frame. `path` is the dataset root, named in errors.
pub(crate) fn encode_episode(
    path: &Path,
    key: &str,
    spec: &VideoSpec,
    fps: u32,
    images: &[&RgbImage],
) -> Result<EncodedVideo> {
    init();
    let Some(first) = images.first() else {
        return Err(DatasetError::usage(
            path,
            format!("{key}: no frames to encode"),
        ));
    };
    let (width, height) = first.dimensions();
    if width % 2 != 0 || height % 2 != 0 {
        return Err(DatasetError::usage(
            path,
            format!("{key}: yuv420p video needs an even image size, not {width}x{height}"),
        ));
    }
    let name = spec.codec.encoder().ok_or_else(|| DatasetError::Video {
        path: path.to_path_buf(),
        detail: format!(
            "{key}: the installed libavcodec has no {} encoder (tried {})",
            spec.codec,
            spec.codec.encoders().join(", ")
        ),
    })?;
    let codec = ffmpeg::encoder::find_by_name(name).ok_or_else(|| DatasetError::Video {
        path: path.to_path_buf(),
        detail: format!("{key}: encoder {name} disappeared"),
    })?;
    let time_base = Rational::new(1, fps as i32);
    let mut ctx = codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(|e| av_error(path, key, name, e))?;
    ctx.set_width(width);
    ctx.set_height(height);
    ctx.set_format(Pixel::YUV420P);
    ctx.set_time_base(time_base);
    ctx.set_frame_rate(Some(Rational::new(fps as i32, 1)));
    ctx.set_gop(spec.gop.max(1));
    // No B-frames: decoding order is presentation order, so episodes concatenate cleanly.
    ctx.set_max_b_frames(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut opts = Dictionary::new();
    let crf = spec.crf.to_string();
    let gop = spec.gop.max(1).to_string();
    opts.set("crf", &crf);
    opts.set("g", &gop);
    match name {
        // lerobot's preset for libsvtav1.
        "libsvtav1" => opts.set("preset", "12"),
        // Real-time mode at its fastest speed: about as fast as libsvtav1's preset 12.
        "libaom-av1" => {
            opts.set("usage", "realtime");
            opts.set("cpu-used", "8");
            opts.set("row-mt", "1");
            opts.set("threads", &threads.to_string());
        }
        "libx264" => {
            opts.set("preset", "veryfast");
            opts.set("threads", &threads.to_string());
        }
        _ => {}
    }
    let mut encoder = ctx
        .open_as_with(codec, opts)
        .map_err(|e| av_error(path, key, &format!("opening encoder {name}"), e))?;

    let mut scaler = scaling::Context::get(
        Pixel::RGB24,
        width,
        height,
        Pixel::YUV420P,
        width,
        height,
        scaling::Flags::BILINEAR,
    )
    .map_err(|e| av_error(path, key, "creating the RGB to YUV converter", e))?;
    let mut rgb = ffmpeg::frame::Video::new(Pixel::RGB24, width, height);
    let mut yuv = ffmpeg::frame::Video::empty();
    let mut packets = Vec::with_capacity(images.len());
    let mut bytes = 0usize;
    let mut drain = |encoder: &mut ffmpeg::encoder::Video| -> Result<()> {
        let mut packet = Packet::empty();
        loop {
            match encoder.receive_packet(&mut packet) {
                Ok(()) => {
                    let data = packet.data().unwrap_or_default().to_vec();
                    bytes += data.len();
                    let pts = packet.pts().unwrap_or(packets.len() as i64);
                    packets.push(EncodedPacket {
                        data,
                        pts,
                        dts: packet.dts().unwrap_or(pts),
                        key: packet.is_key(),
                    });
                }
                Err(ffmpeg::Error::Eof) => return Ok(()),
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::error::EAGAIN => {
                    return Ok(())
                }
                Err(e) => return Err(av_error(path, key, "encoding", e)),
            }
        }
    };
    for (i, img) in images.iter().enumerate() {
        if img.dimensions() != (width, height) {
            return Err(DatasetError::usage(
                path,
                format!(
                    "{key}: frame {i} is {}x{}, the first is {width}x{height}",
                    img.width(),
                    img.height()
                ),
            ));
        }
        let stride = rgb.stride(0);
        let row = width as usize * 3;
        let plane = rgb.data_mut(0);
        for (y, src) in img.as_raw().chunks_exact(row).enumerate() {
            plane[y * stride..y * stride + row].copy_from_slice(src);
        }
        scaler
            .run(&rgb, &mut yuv)
            .map_err(|e| av_error(path, key, "converting RGB to YUV", e))?;
        yuv.set_pts(Some(i as i64));
        encoder
            .send_frame(&yuv)
            .map_err(|e| av_error(path, key, "encoding", e))?;
        drain(&mut encoder)?;
    }
    encoder
        .send_eof()
        .map_err(|e| av_error(path, key, "flushing the encoder", e))?;
    drain(&mut encoder)?;
    if packets.len() != images.len() {
        return Err(DatasetError::Video {
            path: path.to_path_buf(),
            detail: format!(
                "{key}: {name} gave {} packets for {} frames",
                packets.len(),
                images.len()
            ),
        });
    }
    Ok(EncodedVideo {
        params: Mutex::new(Parameters::from(&encoder)),
        packets,
        frames: images.len(),
        bytes,
    })
}

/// Write `episodes` (of camera `key`) back to back into the MP4 file `path`, under a temporary
/// name that is fsynced and renamed into place. Returns each episode's (from, to) timestamps
/// in the file.
pub(crate) fn write_video_file(
    path: &Path,
    key: &str,
    fps: u32,
    episodes: &[&EncodedVideo],
) -> Result<Vec<(f64, f64)>> {
    init();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).at(parent)?;
    }
    let tmp = tmp_path(path);
    c_path(&tmp, key)?;
    let result = write_mp4(&tmp, key, fps, episodes).and_then(|ranges| {
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .at(&tmp)?;
        Ok(ranges)
    });
    match result {
        Ok(ranges) => {
            commit_tmp(&tmp, path)?;
            Ok(ranges)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn write_mp4(
    path: &Path,
    key: &str,
    fps: u32,
    episodes: &[&EncodedVideo],
) -> Result<Vec<(f64, f64)>> {
    let Some(first) = episodes.first() else {
        return Err(DatasetError::usage(
            path,
            format!("{key}: no episodes to write"),
        ));
    };
    let params = first
        .params
        .lock()
        .map_err(|_| DatasetError::usage(path, format!("{key}: codec parameters poisoned")))?
        .clone();
    let mut out =
        ffmpeg::format::output_as(path, "mp4").map_err(|e| av_error(path, key, "creating", e))?;
    let frame_tb = Rational::new(1, fps as i32);
    {
        let mut stream = out
            .add_stream(ffmpeg::encoder::find(codec::Id::None))
            .map_err(|e| av_error(path, key, "adding the video stream", e))?;
        stream.set_parameters(params);
        stream.set_time_base(frame_tb);
        stream.set_avg_frame_rate(Rational::new(fps as i32, 1));
        stream.set_rate(Rational::new(fps as i32, 1));
    }
    let mut opts = Dictionary::new();
    // The index first, as lerobot's files have it: a reader starts without seeking to the end.
    opts.set("movflags", "faststart");
    out.write_header_with(opts)
        .map_err(|e| av_error(path, key, "writing the header", e))?;
    let stream_tb = out
        .stream(0)
        .map(|s| s.time_base())
        .ok_or_else(|| DatasetError::usage(path, format!("{key}: the stream vanished")))?;
    let mut ranges = Vec::with_capacity(episodes.len());
    let mut offset = 0i64;
    for episode in episodes {
        for p in &episode.packets {
            let mut packet = Packet::copy(&p.data);
            packet.set_pts(Some(offset + p.pts));
            packet.set_dts(Some(offset + p.dts));
            packet.set_duration(1);
            if p.key {
                packet.set_flags(codec::packet::Flags::KEY);
            }
            packet.set_stream(0);
            packet.rescale_ts(frame_tb, stream_tb);
            packet
                .write_interleaved(&mut out)
                .map_err(|e| av_error(path, key, "writing a packet", e))?;
        }
        let from = offset as f64 / f64::from(fps);
        offset += episode.frames as i64;
        ranges.push((from, offset as f64 / f64::from(fps)));
    }
    out.write_trailer()
        .map_err(|e| av_error(path, key, "writing the trailer", e))?;
    Ok(ranges)
}

// ---------------------------------------------------------------------------------------
// Decoding

/// What a video file says about its stream (see [`VideoDecoder::probe`]).
#[derive(Clone, Debug, PartialEq)]
pub struct VideoProbe {
    pub width: u32,
    pub height: u32,
    /// FFmpeg's canonical codec name (`av1`, `h264`, ...).
    pub codec: String,
    /// Frames the container lists (0 when it does not say).
    pub frames: i64,
    /// Nominal frame rate (0 when unknown).
    pub fps: f64,
}

/// An opened video file: demuxer, decoder and RGB converter, positioned after the last frame
/// it returned (so the next frame in order needs no seek).
pub struct VideoDecoder {
    path: PathBuf,
    key: String,
    input: ffmpeg::format::context::Input,
    stream: usize,
    time_base: f64,
    decoder: ffmpeg::decoder::Video,
    scaler: Option<(scaling::Context, Pixel, u32, u32)>,
    frame_duration: f64,
    /// Presentation time of the last frame the decoder returned.
    last: Option<f64>,
    eof_sent: bool,
    probe: VideoProbe,
}

// SAFETY: every FFmpeg object in here (demuxer, decoder, scaler) is owned by this value alone
// and only used through `&mut self`; FFmpeg contexts may move between threads.
unsafe impl Send for VideoDecoder {}

impl VideoDecoder {
    /// Open `path`, the video file of camera `key` (named in errors).
    pub fn open(path: &Path, key: &str) -> Result<Self> {
        init();
        if !path.exists() {
            return Err(DatasetError::Missing {
                path: path.to_path_buf(),
                what: format!("video file of {key}"),
            });
        }
        c_path(path, key)?;
        let input = ffmpeg::format::input(path).map_err(|e| av_error(path, key, "opening", e))?;
        let stream = input
            .streams()
            .best(ffmpeg::media::Type::Video)
            .ok_or_else(|| DatasetError::Video {
                path: path.to_path_buf(),
                detail: format!("{key}: the file has no video stream"),
            })?;
        let index = stream.index();
        let tb = stream.time_base();
        let time_base = f64::from(tb.numerator()) / f64::from(tb.denominator()).max(1.0);
        let rate = stream.avg_frame_rate();
        let fps = if rate.denominator() > 0 && rate.numerator() > 0 {
            f64::from(rate.numerator()) / f64::from(rate.denominator())
        } else {
            0.0
        };
        let frames = stream.frames();
        let ctx = codec::context::Context::from_parameters(stream.parameters())
            .map_err(|e| av_error(path, key, "reading the codec parameters", e))?;
        let id = ctx.id();
        // libdav1d is FFmpeg's AV1 software decoder; its native `av1` needs hardware.
        let preferred = (id == codec::Id::AV1)
            .then(|| ffmpeg::decoder::find_by_name("libdav1d"))
            .flatten();
        // As many threads as cores, of the kinds the decoder supports.
        let threads = || Dictionary::from_iter([("threads", "auto")]);
        let opened = match preferred {
            Some(c) => ctx.decoder().open_as_with(c, threads()),
            None => match ffmpeg::decoder::find(id) {
                Some(c) => ctx.decoder().open_as_with(c, threads()),
                None => ctx.decoder().open(),
            },
        }
        .map_err(|e| av_error(path, key, &format!("opening a {id:?} decoder"), e))?;
        let decoder = opened
            .video()
            .map_err(|e| av_error(path, key, "opening the video decoder", e))?;
        let codec = stream_codec_name(id);
        let probe = VideoProbe {
            width: decoder.width(),
            height: decoder.height(),
            codec,
            frames,
            fps,
        };
        Ok(VideoDecoder {
            path: path.to_path_buf(),
            key: key.to_string(),
            input,
            stream: index,
            time_base,
            decoder,
            scaler: None,
            frame_duration: if fps > 0.0 { 1.0 / fps } else { 1.0 / 30.0 },
            last: None,
            eof_sent: false,
            probe,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size, codec, frame count and rate of the stream, from the container.
    pub fn probe(&self) -> &VideoProbe {
        &self.probe
    }

    /// The frames at presentation times `times` (seconds in the file; ascending), each
    /// handed to `out` with its position in `times`. Runs of nearby times are decoded in one
    /// pass after one seek. Errors name the file, the key and the time that has no frame
    /// within [`TIMESTAMP_TOLERANCE_S`].
    pub fn decode_at(
        &mut self,
        times: &[f64],
        out: &mut dyn FnMut(usize, RgbImage) -> Result<()>,
    ) -> Result<()> {
        let tol = TIMESTAMP_TOLERANCE_S;
        for (j, &t) in times.iter().enumerate() {
            let decode_on = self.last.is_some_and(|last| {
                t > last + tol && t - last <= DECODE_ON_FRAMES * self.frame_duration
            });
            if !decode_on {
                self.seek(t)?;
            }
            loop {
                let Some(frame) = self.next_frame()? else {
                    let last = self.last.map_or("no frame".into(), |l| format!("{l:.6} s"));
                    return Err(DatasetError::Video {
                        path: self.path.clone(),
                        detail: format!(
                            "{}: no frame at t = {t:.6} s: the stream ends (last frame at {last})",
                            self.key
                        ),
                    });
                };
                let ft = frame
                    .timestamp()
                    .or(frame.pts())
                    .map_or(f64::NAN, |p| p as f64 * self.time_base);
                self.last = Some(ft);
                if ft < t - tol {
                    continue;
                }
                if (ft - t).abs() >= tol {
                    return Err(DatasetError::Video {
                        path: self.path.clone(),
                        detail: format!(
                            "{}: no frame within {tol} s of t = {t:.6} s (the nearest decoded \
                             frame after it is at {ft:.6} s)",
                            self.key
                        ),
                    });
                }
                let img = self.rgb_image(&frame)?;
                out(j, img)?;
                break;
            }
        }
        Ok(())
    }

    /// Position the demuxer on the last key frame at or before `t`.
    fn seek(&mut self, t: f64) -> Result<()> {
        let target = ((t + TIMESTAMP_TOLERANCE_S).max(0.0) * 1e6).floor() as i64;
        self.input
            .seek(target, ..target)
            .map_err(|e| av_error(&self.path, &self.key, &format!("seeking to {t:.6} s"), e))?;
        self.decoder.flush();
        self.last = None;
        self.eof_sent = false;
        Ok(())
    }

    /// The next decoded frame, or `None` at the end of the stream.
    fn next_frame(&mut self) -> Result<Option<ffmpeg::frame::Video>> {
        let mut frame = ffmpeg::frame::Video::empty();
        loop {
            match self.decoder.receive_frame(&mut frame) {
                Ok(()) => return Ok(Some(frame)),
                Err(ffmpeg::Error::Eof) => return Ok(None),
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::error::EAGAIN => {}
                Err(e) => return Err(av_error(&self.path, &self.key, "decoding", e)),
            }
            if self.eof_sent {
                return Ok(None);
            }
            // Feed the next packet of our stream.
            loop {
                let mut packet = Packet::empty();
                match packet.read(&mut self.input) {
                    Ok(()) if packet.stream() == self.stream => {
                        self.decoder
                            .send_packet(&packet)
                            .map_err(|e| av_error(&self.path, &self.key, "decoding", e))?;
                        break;
                    }
                    Ok(()) => continue,
                    Err(ffmpeg::Error::Eof) => {
                        self.decoder
                            .send_eof()
                            .map_err(|e| av_error(&self.path, &self.key, "decoding", e))?;
                        self.eof_sent = true;
                        break;
                    }
                    Err(e) => return Err(av_error(&self.path, &self.key, "reading", e)),
                }
            }
        }
    }

    fn rgb_image(&mut self, frame: &ffmpeg::frame::Video) -> Result<RgbImage> {
        let (format, width, height) = (frame.format(), frame.width(), frame.height());
        let reuse =
            matches!(&self.scaler, Some((_, f, w, h)) if (*f, *w, *h) == (format, width, height));
        if !reuse {
            let ctx = scaling::Context::get(
                format,
                width,
                height,
                Pixel::RGB24,
                width,
                height,
                scaling::Flags::BILINEAR,
            )
            .map_err(|e| {
                av_error(
                    &self.path,
                    &self.key,
                    "creating the YUV to RGB converter",
                    e,
                )
            })?;
            self.scaler = Some((ctx, format, width, height));
        }
        let Some((scaler, ..)) = self.scaler.as_mut() else {
            return Err(DatasetError::usage(&self.path, "no converter"));
        };
        let mut rgb = ffmpeg::frame::Video::empty();
        scaler
            .run(frame, &mut rgb)
            .map_err(|e| av_error(&self.path, &self.key, "converting YUV to RGB", e))?;
        let stride = rgb.stride(0);
        let row = width as usize * 3;
        let data = rgb.data(0);
        let mut pixels = Vec::with_capacity(row * height as usize);
        for y in 0..height as usize {
            let line =
                data.get(y * stride..y * stride + row)
                    .ok_or_else(|| DatasetError::Video {
                        path: self.path.clone(),
                        detail: format!(
                            "{}: converted frame is shorter than {width}x{height}",
                            self.key
                        ),
                    })?;
            pixels.extend_from_slice(line);
        }
        RgbImage::from_raw(width, height, pixels).ok_or_else(|| DatasetError::Video {
            path: self.path.clone(),
            detail: format!("{}: frame buffer does not match {width}x{height}", self.key),
        })
    }
}

fn stream_codec_name(id: codec::Id) -> String {
    match id {
        codec::Id::AV1 => "av1".into(),
        codec::Id::H264 => "h264".into(),
        codec::Id::HEVC => "hevc".into(),
        codec::Id::VP9 => "vp9".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Opened decoders kept between reads, so consecutive reads of one file continue where the
/// last stopped instead of reopening and seeking.
#[derive(Default)]
pub(crate) struct DecoderPool {
    idle: Mutex<Vec<VideoDecoder>>,
}

impl DecoderPool {
    /// An idle decoder of `path`, or a newly opened one.
    pub fn take(&self, path: &Path, key: &str) -> Result<VideoDecoder> {
        if let Ok(mut idle) = self.idle.lock() {
            if let Some(i) = idle.iter().position(|d| d.path == path && d.key == key) {
                return Ok(idle.swap_remove(i));
            }
        }
        VideoDecoder::open(path, key)
    }

    /// Keep `decoder` for a later read (the oldest idle one goes when the pool is full).
    pub fn give_back(&self, decoder: VideoDecoder) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() >= DECODER_POOL {
                idle.remove(0);
            }
            idle.push(decoder);
        }
    }
}
