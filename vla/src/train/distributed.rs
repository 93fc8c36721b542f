//! Data-parallel training on c10d, DDP's scheme: every rank holds the whole model, takes its
//! slice of each global batch, and averages gradients with the others before the update, so
//! N ranks at global batch B step as one process at batch B does.
//!
//! The collectives are PyTorch's own (Gloo on CPU, NCCL on CUDA, through `vla-dist`); this
//! module only decides what is reduced, in which buckets, and what must agree across ranks.

use std::ops::Range;
use std::rc::Rc;

use tch::{Kind, Tensor};
use vla_dist::ProcessGroup;

use crate::error::{Result, VlaError};

/// Gradients travel in flat buckets of about this many bytes: DDP's default `bucket_cap_mb`.
/// Fewer, larger messages amortise each collective's latency.
const BUCKET_BYTES: usize = 25 << 20;
/// The first bucket is small, so its all-reduce starts early in backward: DDP's
/// `_DEFAULT_FIRST_BUCKET_BYTES`.
const FIRST_BUCKET_BYTES: usize = 1 << 20;

/// One process's place in a data-parallel run. Shared within the training thread only: c10d
/// matches collectives by the order ranks issue them, so one thread issues them all.
#[derive(Clone)]
pub struct DataParallel {
    pg: Rc<ProcessGroup>,
}

impl std::fmt::Debug for DataParallel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataParallel")
            .field("rank", &self.rank())
            .field("world_size", &self.world_size())
            .finish()
    }
}

impl DataParallel {
    pub fn new(pg: ProcessGroup) -> Self {
        DataParallel { pg: Rc::new(pg) }
    }

    pub fn rank(&self) -> usize {
        self.pg.rank()
    }

    pub fn world_size(&self) -> usize {
        self.pg.world_size()
    }

    /// Rank 0 writes metrics, plots and checkpoints; the others only compute.
    pub fn is_main(&self) -> bool {
        self.rank() == 0
    }

    /// This rank's contiguous part of `n` items (a global batch, the validation frames): the
    /// first `n % world` ranks take one more, so every item is someone's exactly once.
    pub fn shard(&self, n: usize) -> Range<usize> {
        shard(n, self.rank(), self.world_size())
    }

    /// DDP's gradient engine over `params` (the trainable tensors, in the same order on every
    /// rank): during each backward armed by [`vla_dist::Reducer::prepare_for_backward`] it
    /// averages their gradients in buckets of [`BUCKET_BYTES`] (the first of
    /// [`FIRST_BUCKET_BYTES`], as DDP), each bucket's all-reduce overlapping the backward
    /// of the layers before it. Parameters a step does not use get a zero gradient (DDP's
    /// `find_unused_parameters`): which heads and losses a step has depends on its data.
    pub fn reducer(&self, params: &[Tensor]) -> Result<vla_dist::Reducer> {
        Ok(self
            .pg
            .reducer(params, BUCKET_BYTES, FIRST_BUCKET_BYTES, true)?)
    }

    /// Replaces every tensor by the mean over ranks (in place; gradients after backward).
    pub fn average(&self, tensors: &[Tensor]) -> Result<()> {
        let world = self.world_size() as f64;
        self.reduce_buckets(tensors, |flat| {
            self.pg.all_reduce_sum(std::slice::from_mut(flat))?;
            let _ = flat.g_div_scalar_(world);
            Ok(())
        })
    }

    /// Overwrites every tensor with rank 0's (parameters and optimiser moments at start and
    /// after a resume, so all ranks step from the same point).
    pub fn broadcast_from_main(&self, tensors: &[Tensor]) -> Result<()> {
        self.reduce_buckets(tensors, |flat| {
            self.pg.broadcast(std::slice::from_mut(flat), 0)?;
            Ok(())
        })
    }

    /// Overwrites every variable of `model` with rank 0's, in name order (the same on every
    /// rank), so all ranks start from one set of weights.
    pub fn broadcast_model(&self, model: &crate::model::VlaModel) -> Result<()> {
        let mut variables: Vec<(String, Tensor)> =
            model.var_store().variables().into_iter().collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        let tensors: Vec<Tensor> = variables.into_iter().map(|(_, t)| t).collect();
        self.broadcast_from_main(&tensors)
    }

    /// Elementwise sum over ranks of a few host numbers (validation tallies, logged losses).
    pub fn sum(&self, values: &mut [f64]) -> Result<()> {
        Ok(self.pg.all_reduce_f64(values)?)
    }

    /// Whether every rank says yes: a stop asked for on one rank (Ctrl-C, a callback) stops
    /// all of them at the same step instead of leaving the others waiting in a collective.
    pub fn all(&self, yes: bool) -> Result<bool> {
        let mut v = [if yes { 0.0 } else { 1.0 }];
        self.sum(&mut v)?;
        Ok(v[0] == 0.0)
    }

    /// Rank 0's value of a host number, for checking that every rank agrees on it.
    pub fn main_value(&self, value: f64) -> Result<f64> {
        // NCCL moves only device tensors.
        let mut t = Tensor::from_slice(&[value]).to_device(self.pg.device());
        self.pg.broadcast(std::slice::from_mut(&mut t), 0)?;
        Ok(t.double_value(&[0]))
    }

    /// Runs `op` on flat copies of `tensors`, grouped in buckets of one kind and device, and
    /// copies the results back.
    fn reduce_buckets(
        &self,
        tensors: &[Tensor],
        mut op: impl FnMut(&mut Tensor) -> Result<()>,
    ) -> Result<()> {
        tch::no_grad(|| {
            for bucket in buckets(tensors) {
                let parts: Vec<Tensor> = bucket.iter().map(|t| t.detach().reshape([-1])).collect();
                let mut flat = Tensor::cat(&parts, 0);
                op(&mut flat)?;
                let mut offset = 0i64;
                for t in bucket {
                    let n = t.numel() as i64;
                    let mut dst = t.detach();
                    dst.copy_(&flat.narrow(0, offset, n).view_as(t));
                    offset += n;
                }
            }
            Ok(())
        })
    }
}

/// Consecutive tensors of one kind and device, about [`BUCKET_BYTES`] each.
fn buckets(tensors: &[Tensor]) -> Vec<Vec<&Tensor>> {
    let mut out: Vec<Vec<&Tensor>> = Vec::new();
    let mut bytes = 0usize;
    for t in tensors {
        let size = t.numel() * element_bytes(t.kind());
        let same = out
            .last()
            .and_then(|b| b.first())
            .is_some_and(|f| f.kind() == t.kind() && f.device() == t.device());
        if !same || bytes + size > BUCKET_BYTES {
            out.push(Vec::new());
            bytes = 0;
        }
        if let Some(b) = out.last_mut() {
            b.push(t);
        }
        bytes += size;
    }
    out
}

fn element_bytes(kind: Kind) -> usize {
    match kind {
        Kind::Double | Kind::Int64 => 8,
        Kind::Half | Kind::BFloat16 | Kind::Int16 => 2,
        Kind::Int8 | Kind::Uint8 | Kind::Bool => 1,
        _ => 4,
    }
}

/// Rank `rank`'s part of `n` items among `world` ranks.
pub fn shard(n: usize, rank: usize, world: usize) -> Range<usize> {
    let world = world.max(1);
    let base = n / world;
    let extra = n % world;
    let start = rank * base + rank.min(extra);
    let len = base + usize::from(rank < extra);
    start..(start + len).min(n)
}

/// A global batch must split evenly: the average of per-rank mean losses is the global mean
/// only when every rank holds the same number of samples.
pub fn check_batch(batch_size: usize, world: usize) -> Result<()> {
    if world > 1 && !batch_size.is_multiple_of(world) {
        return Err(VlaError::invalid(
            "train.batch_size",
            format!(
                "{batch_size} does not split evenly over {world} ranks: the global batch is \
                 divided among them, so choose a multiple of {world}"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_item_once() {
        for n in [0, 1, 5, 8, 33] {
            for world in 1..5 {
                let mut seen = Vec::new();
                for rank in 0..world {
                    seen.extend(shard(n, rank, world));
                }
                assert_eq!(seen, (0..n).collect::<Vec<_>>(), "n={n} world={world}");
            }
        }
    }

    #[test]
    fn buckets_split_by_kind_and_size() {
        let a = Tensor::zeros([4], (Kind::Float, tch::Device::Cpu));
        let b = Tensor::zeros([4], (Kind::Double, tch::Device::Cpu));
        let big = Tensor::zeros([(BUCKET_BYTES / 4) as i64], (Kind::Float, tch::Device::Cpu));
        let ts = [a.shallow_clone(), a.shallow_clone(), b, big, a];
        let sizes: Vec<usize> = buckets(&ts).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![2, 1, 1, 1]);
    }

    #[test]
    fn uneven_global_batch_is_refused() {
        assert!(check_batch(32, 2).is_ok());
        let err = check_batch(33, 2).unwrap_err().to_string();
        assert!(err.contains("train.batch_size"), "{err}");
    }
}
