//! Recording episodes to animated GIF (front and wrist cameras side by side).

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use image::codecs::gif::{GifEncoder, Repeat};
use image::{Delay, Frame, RgbaImage};
use vla_core::{Observation, RgbImage};

use crate::error::SimError;

/// Collects frames and writes them as one GIF.
#[derive(Default)]
pub struct GifRecorder {
    frames: Vec<RgbImage>,
}

impl GifRecorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add an observation: front | wrist, side by side.
    pub fn push(&mut self, obs: &Observation) {
        if obs.front.width() == 0 {
            return;
        }
        let (w, h) = (obs.front.width(), obs.front.height());
        let mut canvas = RgbImage::new(w + obs.wrist.width(), h.max(obs.wrist.height()));
        image::imageops::replace(&mut canvas, &obs.front, 0, 0);
        image::imageops::replace(&mut canvas, &obs.wrist, w as i64, 0);
        self.frames.push(canvas);
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Write the GIF at `fps` frames per second (written to a temporary name, then renamed).
    pub fn save(&self, path: &Path, fps: f32) -> Result<(), SimError> {
        write_gif(&self.frames, path, fps)
    }
}

pub fn write_gif(frames: &[RgbImage], path: &Path, fps: f32) -> Result<(), SimError> {
    let io = |e: String| SimError::Io {
        path: path.to_path_buf(),
        cause: e,
    };
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent).map_err(|e| io(e.to_string()))?;
        }
    }
    let tmp = path.with_extension("gif.tmp");
    {
        let file = File::create(&tmp).map_err(|e| io(e.to_string()))?;
        let mut encoder = GifEncoder::new_with_speed(BufWriter::new(file), 10);
        encoder
            .set_repeat(Repeat::Infinite)
            .map_err(|e| io(e.to_string()))?;
        let delay = Delay::from_numer_denom_ms(1000, fps.max(1.0) as u32);
        for f in frames {
            let rgba: RgbaImage = image::DynamicImage::ImageRgb8(f.clone()).to_rgba8();
            encoder
                .encode_frame(Frame::from_parts(rgba, 0, 0, delay))
                .map_err(|e| io(e.to_string()))?;
        }
    }
    std::fs::rename(&tmp, path).map_err(|e| io(e.to_string()))
}
