//! Reading tensor values back to the host. On a GPU every read waits for all the kernels
//! queued before it (a host synchronisation), which stalls the queue the GPU works from, so
//! the training step reads nothing: its statistics stay on the device until a logged step
//! resolves them. Reads on the training path go through here, so that `vla bench train` can
//! count them per step.

use std::sync::atomic::{AtomicU64, Ordering};

use tch::Tensor;

static READS: AtomicU64 = AtomicU64::new(0);

/// Host reads of device values made through this module since the process started.
pub fn reads() -> u64 {
    READS.load(Ordering::Relaxed)
}

/// The value of a one-element tensor as `f64` (one host read).
pub fn f64_value(t: &Tensor) -> f64 {
    READS.fetch_add(1, Ordering::Relaxed);
    t.double_value(&[])
}

/// The value of a one-element tensor as `i64` (one host read).
pub fn i64_value(t: &Tensor) -> i64 {
    READS.fetch_add(1, Ordering::Relaxed);
    t.int64_value(&[])
}

/// Every element of `t` as `f64`, in row-major order (one host read).
pub fn f64_values(t: &Tensor) -> Result<Vec<f64>, tch::TchError> {
    READS.fetch_add(1, Ordering::Relaxed);
    Vec::<f64>::try_from(
        t.to_kind(tch::Kind::Double)
            .flatten(0, -1)
            .to_device(tch::Device::Cpu),
    )
}

/// `t` on `device`. A host tensor bound for a GPU is copied through page-locked (pinned)
/// memory without blocking: a plain copy from pageable memory makes libtorch wait for the
/// GPU to finish everything queued before it. libtorch's caching host allocator keeps the
/// pinned buffer alive until the copy has run.
pub fn upload(t: &Tensor, device: tch::Device) -> Tensor {
    match device {
        tch::Device::Cuda(_) if t.device() == tch::Device::Cpu => {
            t.pin_memory(device)
                .to_device_(device, t.kind(), true, false)
        }
        _ => t.to_device(device),
    }
}
