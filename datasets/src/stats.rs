//! Normalisation statistics (`meta/stats.json` and the per-episode `stats/...` columns).
//!
//! Each feature has `min`, `max`, `mean`, `std`, `count` and the quantiles `q01`, `q10`,
//! `q50`, `q90`, `q99`. Vector features have shape `[n]`; images have one value per channel,
//! scaled to `[0, 1]`, with shape `[3, 1, 1]` (lerobot's layout); `count` has shape `[1]`.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{AtPath, DatasetError, Result};
use crate::format::{write_atomic, STATS_PATH};

/// Quantiles stored next to min/max/mean/std, with their JSON names.
pub const QUANTILES: [(&str, f64); 5] = [
    ("q01", 0.01),
    ("q10", 0.10),
    ("q50", 0.50),
    ("q90", 0.90),
    ("q99", 0.99),
];

/// Statistics of one feature, flattened (row-major) to `shape`.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureStats {
    pub shape: Vec<usize>,
    pub min: Vec<f64>,
    pub max: Vec<f64>,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub count: u64,
    /// Quantiles keyed by name (`"q01"`, ..., `"q99"`); absent in older datasets.
    pub quantiles: BTreeMap<String, Vec<f64>>,
}

impl FeatureStats {
    pub fn q01(&self) -> Option<&[f64]> {
        self.quantiles.get("q01").map(Vec::as_slice)
    }

    pub fn q99(&self) -> Option<&[f64]> {
        self.quantiles.get("q99").map(Vec::as_slice)
    }

    /// Statistics of `dim`-wide vectors given row-major `values` (`values.len() / dim` rows).
    pub fn from_vectors(values: &[f32], dim: usize) -> Self {
        let rows = values.len().checked_div(dim).unwrap_or(0);
        let mut s = FeatureStats::empty(vec![dim]);
        s.count = rows as u64;
        let mut column = Vec::with_capacity(rows);
        let mut quantiles: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for d in 0..dim {
            column.clear();
            column.extend((0..rows).map(|r| f64::from(values[r * dim + d])));
            column.sort_by(f64::total_cmp);
            let n = column.len().max(1) as f64;
            let mean = column.iter().sum::<f64>() / n;
            let var = column.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            s.min.push(column.first().copied().unwrap_or(0.0));
            s.max.push(column.last().copied().unwrap_or(0.0));
            s.mean.push(mean);
            s.std.push(var.sqrt());
            for (name, q) in QUANTILES {
                let v = sorted_quantile(column.len(), q, |k| column[k]);
                quantiles.entry(name.to_string()).or_default().push(v);
            }
        }
        s.quantiles = quantiles;
        s
    }

    /// Statistics of `images` RGB8 images from their per-channel 256-bin histograms (values
    /// scaled to [0, 1]). `count` is the number of images, as in lerobot.
    pub fn from_histograms(hist: &[[u64; 256]; 3], images: u64) -> Self {
        let mut s = FeatureStats::empty(vec![3, 1, 1]);
        let mut quantiles: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for h in hist {
            let n: u64 = h.iter().sum();
            let nf = n.max(1) as f64;
            let mean = h
                .iter()
                .enumerate()
                .map(|(v, &c)| v as f64 / 255.0 * c as f64)
                .sum::<f64>()
                / nf;
            let var = h
                .iter()
                .enumerate()
                .map(|(v, &c)| (v as f64 / 255.0 - mean).powi(2) * c as f64)
                .sum::<f64>()
                / nf;
            let min = h.iter().position(|&c| c > 0).unwrap_or(0) as f64 / 255.0;
            let max = h.iter().rposition(|&c| c > 0).unwrap_or(0) as f64 / 255.0;
            s.min.push(min);
            s.max.push(max);
            s.mean.push(mean);
            s.std.push(var.sqrt());
            // k-th smallest pixel value, from the cumulative histogram.
            let kth = |k: usize| -> f64 {
                let mut acc = 0u64;
                for (v, &c) in h.iter().enumerate() {
                    acc += c;
                    if acc > k as u64 {
                        return v as f64 / 255.0;
                    }
                }
                max
            };
            for (name, q) in QUANTILES {
                quantiles
                    .entry(name.to_string())
                    .or_default()
                    .push(sorted_quantile(n as usize, q, kth));
            }
        }
        s.count = images;
        s.quantiles = quantiles;
        s
    }

    fn empty(shape: Vec<usize>) -> Self {
        FeatureStats {
            shape,
            min: vec![],
            max: vec![],
            mean: vec![],
            std: vec![],
            count: 0,
            quantiles: BTreeMap::new(),
        }
    }

    /// Combine the statistics of two disjoint sets of samples, as lerobot's
    /// `aggregate_feature_stats` does: exact min/max/mean/std, count-weighted quantiles.
    pub fn merge(&self, other: &FeatureStats) -> FeatureStats {
        if self.count == 0 {
            return other.clone();
        }
        if other.count == 0 {
            return self.clone();
        }
        let (na, nb) = (self.count as f64, other.count as f64);
        let n = na + nb;
        let mut out = FeatureStats::empty(self.shape.clone());
        out.count = self.count + other.count;
        for i in 0..self.mean.len().min(other.mean.len()) {
            let mean = (self.mean[i] * na + other.mean[i] * nb) / n;
            let var = (na * (self.std[i].powi(2) + (self.mean[i] - mean).powi(2))
                + nb * (other.std[i].powi(2) + (other.mean[i] - mean).powi(2)))
                / n;
            out.min.push(self.min[i].min(other.min[i]));
            out.max.push(self.max[i].max(other.max[i]));
            out.mean.push(mean);
            out.std.push(var.max(0.0).sqrt());
        }
        for (name, a) in &self.quantiles {
            if let Some(b) = other.quantiles.get(name) {
                let q = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (x * na + y * nb) / n)
                    .collect();
                out.quantiles.insert(name.clone(), q);
            }
        }
        out
    }

    /// JSON object as lerobot writes it (nested to `shape`).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("min".into(), nest(&self.min, &self.shape));
        m.insert("max".into(), nest(&self.max, &self.shape));
        m.insert("mean".into(), nest(&self.mean, &self.shape));
        m.insert("std".into(), nest(&self.std, &self.shape));
        m.insert("count".into(), Value::from(vec![self.count]));
        for (name, _) in QUANTILES {
            if let Some(q) = self.quantiles.get(name) {
                m.insert(name.into(), nest(q, &self.shape));
            }
        }
        Value::Object(m)
    }

    fn from_json(path: &Path, key: &str, value: &Value) -> Result<Self> {
        let obj = value.as_object().ok_or_else(|| {
            DatasetError::schema(path, format!("stats of {key:?} are not an object"))
        })?;
        let get = |name: &str| -> Result<(Vec<f64>, Vec<usize>)> {
            let v = obj.get(name).ok_or_else(|| {
                DatasetError::schema(path, format!("stats of {key:?} lack {name:?}"))
            })?;
            flatten(v).ok_or_else(|| {
                DatasetError::schema(path, format!("stats {key:?}/{name:?} are not numeric"))
            })
        };
        let (mean, shape) = get("mean")?;
        let mut s = FeatureStats::empty(shape);
        s.mean = mean;
        s.std = get("std")?.0;
        s.min = get("min")?.0;
        s.max = get("max")?.0;
        s.count = obj
            .get("count")
            .and_then(flatten)
            .and_then(|(c, _)| c.first().copied())
            .unwrap_or(0.0) as u64;
        for (name, _) in QUANTILES {
            if obj.contains_key(name) {
                s.quantiles.insert(name.to_string(), get(name)?.0);
            }
        }
        let n = s.mean.len();
        if [s.std.len(), s.min.len(), s.max.len()]
            .iter()
            .chain(
                s.quantiles
                    .values()
                    .map(Vec::len)
                    .collect::<Vec<_>>()
                    .iter(),
            )
            .any(|&l| l != n)
        {
            return Err(DatasetError::schema(
                path,
                format!("stats of {key:?} have inconsistent lengths"),
            ));
        }
        Ok(s)
    }
}

/// How [`FeatureStats::normalize`] maps values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormMode {
    /// `(x - mean) / std`.
    MeanStd,
    /// `[min, max]` → `[-1, 1]`.
    MinMax,
    /// `[q01, q99]` → `[-1, 1]` (robust to outliers; falls back to min/max without quantiles).
    Quantiles,
}

impl FeatureStats {
    fn affine(&self, mode: NormMode) -> Vec<(f64, f64)> {
        const EPS: f64 = 1e-8;
        let bounds = |lo: &[f64], hi: &[f64]| -> Vec<(f64, f64)> {
            lo.iter()
                .zip(hi)
                .map(|(&l, &h)| ((l + h) / 2.0, ((h - l) / 2.0).max(EPS)))
                .collect()
        };
        match mode {
            NormMode::MeanStd => self
                .mean
                .iter()
                .zip(&self.std)
                .map(|(&m, &s)| (m, s.max(EPS)))
                .collect(),
            NormMode::MinMax => bounds(&self.min, &self.max),
            NormMode::Quantiles => match (self.q01(), self.q99()) {
                (Some(lo), Some(hi)) => bounds(lo, hi),
                _ => bounds(&self.min, &self.max),
            },
        }
    }

    /// Normalise `values` in place. `values` holds whole vectors of this feature's width (or,
    /// for per-channel image stats, `C` planes: every value of plane `c` uses channel `c`).
    pub fn normalize(&self, values: &mut [f32], mode: NormMode) {
        let a = self.affine(mode);
        self.apply(values, |i, v| ((f64::from(v) - a[i].0) / a[i].1) as f32);
    }

    /// Inverse of [`FeatureStats::normalize`].
    pub fn unnormalize(&self, values: &mut [f32], mode: NormMode) {
        let a = self.affine(mode);
        self.apply(values, |i, v| (f64::from(v) * a[i].1 + a[i].0) as f32);
    }

    fn apply(&self, values: &mut [f32], f: impl Fn(usize, f32) -> f32) {
        let n = self.mean.len();
        if n == 0 {
            return;
        }
        if self.shape.len() == 3 {
            // Channel planes (C, H, W): plane size = len / C.
            let plane = (values.len() / n).max(1);
            for (k, v) in values.iter_mut().enumerate() {
                *v = f((k / plane).min(n - 1), *v);
            }
        } else {
            for (k, v) in values.iter_mut().enumerate() {
                *v = f(k % n, *v);
            }
        }
    }
}

/// numpy's default ("linear") quantile of `n` sorted values accessed through `kth`.
fn sorted_quantile(n: usize, q: f64, kth: impl Fn(usize) -> f64) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let h = (n - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    let a = kth(lo);
    let b = if hi == lo { a } else { kth(hi) };
    a + (h - lo as f64) * (b - a)
}

fn nest(values: &[f64], shape: &[usize]) -> Value {
    // Only the shapes lerobot uses: [n] and [c, 1, 1] (and [1]).
    if shape.len() == 3 && shape[1] == 1 && shape[2] == 1 {
        Value::from(
            values
                .iter()
                .map(|v| Value::from(vec![vec![*v]]))
                .collect::<Vec<_>>(),
        )
    } else {
        Value::from(values.to_vec())
    }
}

/// Flatten a (nested) JSON number array; returns the values and the shape.
fn flatten(v: &Value) -> Option<(Vec<f64>, Vec<usize>)> {
    match v {
        Value::Number(n) => Some((vec![n.as_f64()?], vec![])),
        Value::Array(items) => {
            let mut values = Vec::new();
            let mut inner: Option<Vec<usize>> = None;
            for item in items {
                let (vals, shape) = flatten(item)?;
                if inner.as_ref().is_some_and(|s| *s != shape) {
                    return None;
                }
                inner = Some(shape);
                values.extend(vals);
            }
            let mut shape = vec![items.len()];
            shape.extend(inner.unwrap_or_default());
            Some((values, shape))
        }
        _ => None,
    }
}

/// The statistics of every feature of a dataset (or of one episode).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub features: BTreeMap<String, FeatureStats>,
}

impl Stats {
    /// Read `meta/stats.json` of the dataset at `root`.
    pub fn load(root: &Path) -> Result<Self> {
        let path = root.join(STATS_PATH);
        let text = std::fs::read_to_string(&path).at(&path)?;
        let raw: Value = serde_json::from_str(&text).at(&path)?;
        let obj = raw
            .as_object()
            .ok_or_else(|| DatasetError::schema(&path, "stats.json is not an object"))?;
        let mut features = BTreeMap::new();
        for (key, value) in obj {
            features.insert(key.clone(), FeatureStats::from_json(&path, key, value)?);
        }
        Ok(Stats { features })
    }

    pub fn save(&self, root: &Path) -> Result<()> {
        let path = root.join(STATS_PATH);
        let text = serde_json::to_string_pretty(&self.to_json()).at(&path)?;
        write_atomic(&path, text.as_bytes())
    }

    pub fn to_json(&self) -> Value {
        Value::Object(
            self.features
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&FeatureStats> {
        self.features.get(key)
    }

    /// Merge another (disjoint) set of statistics into this one.
    pub fn merge(&mut self, other: &Stats) {
        for (key, s) in &other.features {
            let merged = match self.features.get(key) {
                Some(existing) => existing.merge(s),
                None => s.clone(),
            };
            self.features.insert(key.clone(), merged);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_stats_match_numpy() {
        let values: Vec<f32> = (0..101).map(|v| v as f32).collect();
        let s = FeatureStats::from_vectors(&values, 1);
        assert_eq!(s.count, 101);
        assert_eq!(s.min, vec![0.0]);
        assert_eq!(s.max, vec![100.0]);
        assert!((s.mean[0] - 50.0).abs() < 1e-9);
        assert!((s.q01().unwrap()[0] - 1.0).abs() < 1e-9);
        assert!((s.q99().unwrap()[0] - 99.0).abs() < 1e-9);
    }

    #[test]
    fn merge_equals_joint_mean_and_std() {
        let a: Vec<f32> = (0..10).map(|v| v as f32).collect();
        let b: Vec<f32> = (10..30).map(|v| v as f32 * 0.5).collect();
        let joint: Vec<f32> = a.iter().chain(&b).copied().collect();
        let m = FeatureStats::from_vectors(&a, 1).merge(&FeatureStats::from_vectors(&b, 1));
        let j = FeatureStats::from_vectors(&joint, 1);
        assert_eq!(m.count, j.count);
        assert!((m.mean[0] - j.mean[0]).abs() < 1e-9);
        assert!((m.std[0] - j.std[0]).abs() < 1e-9);
        assert_eq!(m.min, j.min);
        assert_eq!(m.max, j.max);
    }

    #[test]
    fn normalize_round_trips() {
        let values: Vec<f32> = (0..200).map(|v| v as f32 * 0.5 - 10.0).collect();
        let s = FeatureStats::from_vectors(&values, 2);
        for mode in [NormMode::MeanStd, NormMode::MinMax, NormMode::Quantiles] {
            let mut v = values.clone();
            s.normalize(&mut v, mode);
            if mode == NormMode::MinMax {
                assert!(v.iter().all(|x| (-1.0..=1.0).contains(x)));
            }
            s.unnormalize(&mut v, mode);
            for (a, b) in v.iter().zip(&values) {
                assert!((a - b).abs() < 1e-4, "{mode:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn image_stats_round_trip_json() {
        let mut hist = [[0u64; 256]; 3];
        hist[0][0] = 5;
        hist[0][255] = 5;
        hist[1][128] = 10;
        hist[2][255] = 10;
        let s = FeatureStats::from_histograms(&hist, 2);
        assert_eq!(s.shape, vec![3, 1, 1]);
        assert!((s.mean[0] - 0.5).abs() < 1e-9);
        assert_eq!(s.max[2], 1.0);
        let back = FeatureStats::from_json(Path::new("x"), "img", &s.to_json()).unwrap();
        assert_eq!(back, s);
    }
}
