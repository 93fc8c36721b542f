//! Small PNG line plots (loss curves) drawn with the `image` crate and an 8×8 bitmap font,
//! so reports need no system fonts or plotting stack.

use std::path::Path;

use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};

/// One named polyline of (x, y) points.
pub struct Series<'a> {
    pub label: &'a str,
    pub color: [u8; 3],
    pub points: Vec<(f64, f64)>,
}

const W: u32 = 720;
const H: u32 = 420;
const LEFT: u32 = 70;
const RIGHT: u32 = 20;
const TOP: u32 = 36;
const BOTTOM: u32 = 44;

/// Plots the series on a log-scale y axis (losses span decades) and writes a PNG.
pub fn line_plot(path: &Path, title: &str, x_label: &str, series: &[Series]) -> anyhow::Result<()> {
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    let pts = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(_, y)| *y > 0.0 && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y.log10());
        y1 = y1.max(y.log10());
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, -1.0, 0.0);
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    y0 = y0.floor();
    y1 = y1.ceil().max(y0 + 1.0);
    let (pw, ph) = ((W - LEFT - RIGHT) as f64, (H - TOP - BOTTOM) as f64);
    let to_px = |x: f64, y: f64| -> (f64, f64) {
        (
            LEFT as f64 + (x - x0) / (x1 - x0) * pw,
            TOP as f64 + (1.0 - (y.log10() - y0) / (y1 - y0)) * ph,
        )
    };
    let grey = Rgb([210, 210, 210]);
    let black = Rgb([0, 0, 0]);
    // Decade grid lines and labels.
    let mut d = y0;
    while d <= y1 + 1e-9 {
        let (_, py) = to_px(x0, 10f64.powf(d));
        line(&mut img, (LEFT as f64, py), ((W - RIGHT) as f64, py), grey);
        text(
            &mut img,
            4,
            py as i32 - 4,
            &format!("1e{}", d as i32),
            black,
        );
        d += 1.0;
    }
    for k in 0..=4 {
        let x = x0 + (x1 - x0) * k as f64 / 4.0;
        let (px, _) = to_px(x, 10f64.powf(y0));
        line(&mut img, (px, TOP as f64), (px, (H - BOTTOM) as f64), grey);
        let label = format!("{x:.0}");
        text(
            &mut img,
            px as i32 - 4 * label.len() as i32,
            (H - BOTTOM + 6) as i32,
            &label,
            black,
        );
    }
    rect(&mut img, LEFT, TOP, W - RIGHT, H - BOTTOM, black);
    text(&mut img, LEFT as i32, 12, title, black);
    text(
        &mut img,
        (W / 2) as i32 - 4 * x_label.len() as i32,
        (H - 16) as i32,
        x_label,
        black,
    );
    for (k, s) in series.iter().enumerate() {
        let c = Rgb(s.color);
        let valid: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|(_, y)| *y > 0.0 && y.is_finite())
            .collect();
        for w in valid.windows(2) {
            line(&mut img, to_px(w[0].0, w[0].1), to_px(w[1].0, w[1].1), c);
        }
        if valid.len() == 1 {
            let (px, py) = to_px(valid[0].0, valid[0].1);
            line(&mut img, (px - 2.0, py), (px + 2.0, py), c);
        }
        // Legend, top right.
        let ly = TOP as i32 + 8 + 12 * k as i32;
        let lx = (W - RIGHT - 170) as i32;
        for dx in 0..16 {
            put(&mut img, lx + dx, ly + 3, c);
            put(&mut img, lx + dx, ly + 4, c);
        }
        text(&mut img, lx + 22, ly, s.label, black);
    }
    img.save(path)
        .map_err(|e| anyhow::anyhow!("cannot write plot {}: {e}", path.display()))
}

fn put(img: &mut RgbImage, x: i32, y: i32, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

fn line(img: &mut RgbImage, a: (f64, f64), b: (f64, f64), c: Rgb<u8>) {
    let n = ((b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil() as usize).max(1);
    for i in 0..=n {
        let t = i as f64 / n as f64;
        let (x, y) = (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t);
        put(img, x.round() as i32, y.round() as i32, c);
    }
}

fn rect(img: &mut RgbImage, x0: u32, y0: u32, x1: u32, y1: u32, c: Rgb<u8>) {
    let (x0, y0, x1, y1) = (x0 as f64, y0 as f64, x1 as f64, y1 as f64);
    line(img, (x0, y0), (x1, y0), c);
    line(img, (x0, y1), (x1, y1), c);
    line(img, (x0, y0), (x0, y1), c);
    line(img, (x1, y0), (x1, y1), c);
}

fn text(img: &mut RgbImage, x: i32, y: i32, s: &str, c: Rgb<u8>) {
    for (i, ch) in s.chars().enumerate() {
        let Some(glyph) = font8x8::BASIC_FONTS.get(ch) else {
            continue;
        };
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    put(img, x + 8 * i as i32 + col, y + row as i32, c);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plot_draws_series_pixels() {
        let dir = std::env::temp_dir().join(format!("vla-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.png");
        let s = Series {
            label: "train",
            color: [200, 0, 0],
            points: (1..100).map(|i| (i as f64, 5.0 / i as f64)).collect(),
        };
        line_plot(&path, "loss", "step", &[s]).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        let red = img.pixels().filter(|p| p.0 == [200, 0, 0]).count();
        assert!(red > 300, "{red} red pixels");
        std::fs::remove_dir_all(&dir).ok();
    }
}
