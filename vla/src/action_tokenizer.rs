//! Continuous actions ↔ discrete action tokens (RT-2 / OpenVLA style).
//!
//! Per dimension, `[q01, q99]` of the training actions maps linearly to `[-1, 1]` (values
//! outside are clipped) and `[-1, 1]` is cut into `num_bins` (256) uniform bins. Decoding
//! returns the bin centre, un-normalised — so the round-trip error of an in-range value is at
//! most half a bin width. Quantiles rather than min/max keep rare outliers from wasting bins.
//!
//! **Token ids.** Unlike OpenVLA, which overwrites the 256 least-used ids of the Llama
//! vocabulary, this model *appends* 256 new ids after the text vocabulary: bin `b` is token
//! `text.vocab_size + b`. Text and action tokens can never collide, and a retrained text
//! tokenizer never silently reassigns action ids.
//!
//! **Gripper.** The gripper dimension (`action.gripper_dim`, index 6) is binary: "close"
//! (value ≥ 0.5) is bin `num_bins - 1`, "open" bin 0, and it decodes to exactly 1.0 / 0.0.
//! Its statistics are not used. Generation restricts that step to those two tokens.
//!
//! The statistics live in the run's `config.json` (`norm_stats.action`), so a checkpoint
//! carries everything needed to un-normalise — there is no separate un-normalisation key.

use serde::{Deserialize, Serialize};

use crate::config::VlaConfig;
use crate::error::{Result, VlaError};

/// Per-dimension 1st and 99th percentiles of the training actions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionStats {
    pub q01: Vec<f32>,
    pub q99: Vec<f32>,
}

/// Per-dimension mean and standard deviation of the proprioceptive state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateStats {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// Dataset statistics stored with every checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NormStats {
    pub action: ActionStats,
    pub state: StateStats,
}

/// Linear-interpolated quantile of sorted data (numpy's default method).
fn quantile(sorted: &[f32], q: f64) -> f32 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = (pos - lo as f64) as f32;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

impl ActionStats {
    /// q01/q99 per dimension of `actions` (rows of length `dim`).
    pub fn from_actions<A: AsRef<[f32]>>(actions: &[A], dim: usize) -> Result<Self> {
        if actions.is_empty() {
            return Err(VlaError::Input(
                "no actions to compute statistics from".into(),
            ));
        }
        let mut q01 = Vec::with_capacity(dim);
        let mut q99 = Vec::with_capacity(dim);
        for d in 0..dim {
            let mut col = Vec::with_capacity(actions.len());
            for (i, a) in actions.iter().enumerate() {
                let a = a.as_ref();
                let v = *a.get(d).ok_or_else(|| {
                    VlaError::Input(format!("action {i} has {} values, expected {dim}", a.len()))
                })?;
                if !v.is_finite() {
                    return Err(VlaError::Input(format!("action {i} dim {d} is {v}")));
                }
                col.push(v);
            }
            col.sort_by(f32::total_cmp);
            q01.push(quantile(&col, 0.01));
            q99.push(quantile(&col, 0.99));
        }
        Ok(ActionStats { q01, q99 })
    }
}

impl StateStats {
    /// Mean/std per dimension; std is floored so constant dimensions do not blow up.
    pub fn from_states<S: AsRef<[f32]>>(states: &[S], dim: usize) -> Result<Self> {
        if states.is_empty() {
            return Err(VlaError::Input(
                "no states to compute statistics from".into(),
            ));
        }
        let n = states.len() as f64;
        let mut mean = vec![0f64; dim];
        for (i, s) in states.iter().enumerate() {
            let s = s.as_ref();
            if s.len() != dim {
                return Err(VlaError::Input(format!(
                    "state {i} has {} values, expected {dim}",
                    s.len()
                )));
            }
            for d in 0..dim {
                mean[d] += s[d] as f64 / n;
            }
        }
        let mut var = vec![0f64; dim];
        for s in states {
            for d in 0..dim {
                var[d] += (s.as_ref()[d] as f64 - mean[d]).powi(2) / n;
            }
        }
        Ok(StateStats {
            mean: mean.iter().map(|m| *m as f32).collect(),
            std: var.iter().map(|v| (v.sqrt() as f32).max(1e-3)).collect(),
        })
    }

    /// Identity normalisation (used before statistics are known, e.g. in tests).
    pub fn identity(dim: usize) -> Self {
        StateStats {
            mean: vec![0.0; dim],
            std: vec![1.0; dim],
        }
    }
}

impl NormStats {
    /// Computes action quantiles and state moments from training data.
    pub fn from_data<A: AsRef<[f32]>, S: AsRef<[f32]>>(
        actions: &[A],
        states: &[S],
        config: &VlaConfig,
    ) -> Result<Self> {
        Ok(NormStats {
            action: ActionStats::from_actions(actions, config.action.action_dim)?,
            state: StateStats::from_states(states, config.action.state_dim)?,
        })
    }

    /// Statistics that map `[-1, 1]` actions and leave states unchanged.
    pub fn unit(config: &VlaConfig) -> Self {
        let d = config.action.action_dim;
        NormStats {
            action: ActionStats {
                q01: vec![-1.0; d],
                q99: vec![1.0; d],
            },
            state: StateStats::identity(config.action.state_dim),
        }
    }

    /// Checks lengths and finiteness against the config.
    pub fn validate(&self, config: &VlaConfig) -> Result<()> {
        let a = config.action.action_dim;
        let s = config.action.state_dim;
        let checks = [
            ("norm_stats.action.q01", &self.action.q01, a),
            ("norm_stats.action.q99", &self.action.q99, a),
            ("norm_stats.state.mean", &self.state.mean, s),
            ("norm_stats.state.std", &self.state.std, s),
        ];
        for (field, values, len) in checks {
            if values.len() != len {
                return Err(VlaError::invalid(
                    field,
                    format!("has {} values, expected {len}", values.len()),
                ));
            }
            if let Some(v) = values.iter().find(|v| !v.is_finite()) {
                return Err(VlaError::invalid(field, format!("contains {v}")));
            }
        }
        if let Some(v) = self.state.std.iter().find(|v| **v <= 0.0) {
            return Err(VlaError::invalid(
                "norm_stats.state.std",
                format!("contains {v} (must be > 0)"),
            ));
        }
        Ok(())
    }
}

/// Maps actions to bins/tokens and back.
#[derive(Clone, Debug)]
pub struct ActionTokenizer {
    stats: ActionStats,
    num_bins: usize,
    token_offset: i64,
    gripper_dim: Option<usize>,
}

impl ActionTokenizer {
    pub fn new(config: &VlaConfig, stats: ActionStats) -> Result<Self> {
        let d = config.action.action_dim;
        if stats.q01.len() != d || stats.q99.len() != d {
            return Err(VlaError::invalid(
                "norm_stats.action",
                format!(
                    "statistics have {}/{} dims, expected {d}",
                    stats.q01.len(),
                    stats.q99.len()
                ),
            ));
        }
        Ok(ActionTokenizer {
            stats,
            num_bins: config.action.num_bins,
            token_offset: config.action_token_offset() as i64,
            gripper_dim: config.action.gripper_dim,
        })
    }

    pub fn stats(&self) -> &ActionStats {
        &self.stats
    }

    pub fn num_bins(&self) -> usize {
        self.num_bins
    }

    pub fn action_dim(&self) -> usize {
        self.stats.q01.len()
    }

    /// Token id of the first bin.
    pub fn token_offset(&self) -> i64 {
        self.token_offset
    }

    /// Width of one bin in the normalised `[-1, 1]` space.
    pub fn bin_width(&self) -> f32 {
        2.0 / self.num_bins as f32
    }

    fn range(&self, dim: usize) -> (f32, f32) {
        let lo = self.stats.q01[dim];
        // A constant dimension (q01 == q99) still needs a non-zero span.
        let span = (self.stats.q99[dim] - lo).max(1e-6);
        (lo, span)
    }

    /// Value → normalised `[-1, 1]` (clipped).
    pub fn normalize(&self, dim: usize, value: f32) -> f32 {
        let (lo, span) = self.range(dim);
        (2.0 * (value - lo) / span - 1.0).clamp(-1.0, 1.0)
    }

    /// Normalised value → original units.
    pub fn unnormalize(&self, dim: usize, norm: f32) -> f32 {
        let (lo, span) = self.range(dim);
        lo + (norm + 1.0) * 0.5 * span
    }

    /// Bin index of `value` in dimension `dim`.
    pub fn bin(&self, dim: usize, value: f32) -> usize {
        if Some(dim) == self.gripper_dim {
            return if value >= 0.5 { self.num_bins - 1 } else { 0 };
        }
        let x = if value.is_finite() {
            self.normalize(dim, value)
        } else {
            0.0
        };
        let b = ((x + 1.0) / self.bin_width()).floor() as isize;
        b.clamp(0, self.num_bins as isize - 1) as usize
    }

    /// Value at the centre of bin `bin` of dimension `dim`.
    pub fn bin_value(&self, dim: usize, bin: usize) -> f32 {
        if Some(dim) == self.gripper_dim {
            return if bin >= self.num_bins / 2 { 1.0 } else { 0.0 };
        }
        let centre = -1.0 + (bin as f32 + 0.5) * self.bin_width();
        self.unnormalize(dim, centre)
    }

    /// One action → its `action_dim` token ids.
    pub fn encode(&self, action: &[f32]) -> Result<Vec<i64>> {
        if action.len() != self.action_dim() {
            return Err(VlaError::Input(format!(
                "action has {} values, expected {}",
                action.len(),
                self.action_dim()
            )));
        }
        Ok(action
            .iter()
            .enumerate()
            .map(|(d, v)| self.token_offset + self.bin(d, *v) as i64)
            .collect())
    }

    /// Token ids → action; errors on ids outside the action range.
    pub fn decode(&self, tokens: &[i64]) -> Result<Vec<f32>> {
        if tokens.len() != self.action_dim() {
            return Err(VlaError::Input(format!(
                "got {} action tokens, expected {}",
                tokens.len(),
                self.action_dim()
            )));
        }
        tokens
            .iter()
            .enumerate()
            .map(|(d, t)| {
                let bin = t - self.token_offset;
                if bin < 0 || bin >= self.num_bins as i64 {
                    return Err(VlaError::Input(format!("token {t} is not an action token")));
                }
                Ok(self.bin_value(d, bin as usize))
            })
            .collect()
    }

    /// Which bins generation may emit for dimension `dim` (all, or the two gripper bins).
    pub fn allowed_bins(&self, dim: usize) -> Vec<usize> {
        if Some(dim) == self.gripper_dim {
            vec![0, self.num_bins - 1]
        } else {
            (0..self.num_bins).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> (ActionTokenizer, Vec<[f32; 7]>) {
        let cfg = VlaConfig::test_tiny();
        // Deterministic pseudo-random actions with different scales per dimension.
        let actions: Vec<[f32; 7]> = (0..500)
            .map(|i| {
                let f = |k: u32| ((i as f32 * 0.618 + k as f32 * 0.31).fract() - 0.5) * 2.0;
                [
                    0.01 * f(1),
                    0.02 * f(2),
                    0.005 * f(3),
                    0.1 * f(4),
                    0.05 * f(5),
                    0.2 * f(6),
                    if i % 3 == 0 { 1.0 } else { 0.0 },
                ]
            })
            .collect();
        let stats = ActionStats::from_actions(&actions, 7).unwrap();
        (ActionTokenizer::new(&cfg, stats).unwrap(), actions)
    }

    #[test]
    fn round_trip_within_half_a_bin() {
        let (tok, actions) = tokenizer();
        for a in &actions {
            let ids = tok.encode(a).unwrap();
            assert!(ids.iter().all(|t| *t >= 300 && *t < 300 + 256));
            let back = tok.decode(&ids).unwrap();
            for d in 0..6 {
                let (lo, hi) = (tok.stats().q01[d], tok.stats().q99[d]);
                let half_bin = (hi - lo) / 256.0 / 2.0;
                let expected = a[d].clamp(lo, hi);
                assert!(
                    (back[d] - expected).abs() <= half_bin * 1.001 + 1e-7,
                    "dim {d}: {} -> {} (half bin {half_bin})",
                    a[d],
                    back[d]
                );
            }
            assert_eq!(back[6], a[6], "gripper is exact");
        }
    }

    #[test]
    fn out_of_range_values_clip_and_gripper_uses_edge_bins() {
        let (tok, _) = tokenizer();
        assert_eq!(tok.bin(0, 10.0), 255);
        assert_eq!(tok.bin(0, -10.0), 0);
        assert_eq!(tok.bin(6, 0.9), 255);
        assert_eq!(tok.bin(6, 0.1), 0);
        assert_eq!(tok.allowed_bins(6), vec![0, 255]);
        assert!(tok.decode(&[0; 7]).is_err());
    }
}
