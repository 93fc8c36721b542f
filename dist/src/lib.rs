//! Multi-process collectives for training, from PyTorch's own distributed engine (c10d).
//!
//! Rank 0 serves a c10d `TCPStore` that every rank meets at (the rendezvous), then each
//! rank builds a c10d backend over it: `ProcessGroupGloo` for CPU tensors, or
//! `ProcessGroupNCCL` for CUDA tensors (with the `nccl` feature). The collectives are
//! c10d's, reached through a thin C++ shim (cpp/); nothing here moves tensor data itself.
//!
//! Launch one process per rank with torchrun, `srun` or `mpirun`;
//! [`Rendezvous::from_env`] reads their variables.
#![deny(unsafe_op_in_unsafe_fn)]

mod ffi;
mod rendezvous;

use std::ffi::{c_char, c_int, CString};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, ToSocketAddrs, UdpSocket};
use std::os::fd::IntoRawFd;
use std::ptr::{self, NonNull};
use std::str::FromStr;
use std::time::Duration;

use tch::{Device, Tensor};

pub use rendezvous::{Rendezvous, DEFAULT_MASTER_PORT};

/// What can go wrong; every message names the operation, the peer and the rank.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// A launcher variable holds a value that cannot be used.
    #[error("environment variable {var}={value:?} {reason}")]
    Env {
        var: &'static str,
        value: String,
        reason: String,
    },
    /// One launcher variable is set without its companion.
    #[error("environment variable {var} is unset while {set_var} is set")]
    MissingEnv {
        var: &'static str,
        set_var: &'static str,
    },
    #[error("unknown distributed backend {0:?} (expected \"gloo\" or \"nccl\")")]
    UnknownBackend(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The NCCL backend was asked for, but this build does not contain it.
    #[error(
        "the NCCL backend is not in this build of vla-dist: rebuild with `--features nccl` \
         (it needs the CUDA and NCCL headers), or use the gloo backend"
    )]
    NoNccl,
    /// Rank 0 could not listen on the master address for the TCPStore.
    #[error("rank 0 cannot listen on {addr}:{port} for the rendezvous store: {source}")]
    Listen {
        addr: String,
        port: u16,
        source: io::Error,
    },
    /// No local address to give gloo: the master address does not resolve or route.
    #[error("cannot find this host's address towards {addr}:{port} for gloo: {source}")]
    LocalAddress {
        addr: String,
        port: u16,
        source: io::Error,
    },
    /// Peers did not all arrive within the timeout.
    #[error(
        "rendezvous ({stage}) with {addr}:{port} as rank {rank} of {world_size} timed out \
         after {}: {message}", secs(.timeout)
    )]
    Timeout {
        stage: &'static str,
        addr: String,
        port: u16,
        rank: usize,
        world_size: usize,
        timeout: Duration,
        message: String,
    },
    /// The rendezvous failed for another reason than the timeout.
    #[error(
        "rendezvous ({stage}) with {addr}:{port} as rank {rank} of {world_size} failed: \
         {message}"
    )]
    Rendezvous {
        stage: &'static str,
        addr: String,
        port: u16,
        rank: usize,
        world_size: usize,
        message: String,
    },
    /// A collective failed (c10d's message: a peer gone, a timeout, a bad tensor).
    #[error("{op} on rank {rank} of {world_size} ({backend}) failed: {message}")]
    Collective {
        op: &'static str,
        backend: Backend,
        rank: usize,
        world_size: usize,
        message: String,
    },
    #[error(transparent)]
    Tensor(#[from] tch::TchError),
}

fn secs(d: &Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.3} s", d.as_secs_f64())
    }
}

pub type Result<T, E = DistError> = std::result::Result<T, E>;

/// Which c10d backend carries the collectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// `ProcessGroupGloo`: CPU tensors over TCP.
    Gloo,
    /// `ProcessGroupNCCL`: CUDA tensors (needs the `nccl` feature).
    Nccl,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Backend {
    type Err = DistError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "gloo" => Ok(Backend::Gloo),
            "nccl" => Ok(Backend::Nccl),
            _ => Err(DistError::UnknownBackend(s.to_owned())),
        }
    }
}

/// A c10d process group: the rendezvous store plus one backend over it.
///
/// Every rank must call the same collectives in the same order with tensors of the same
/// shapes and dtypes. The group is `Send` but not `Sync`: c10d matches collectives by
/// issue order, so one thread at a time must drive it.
pub struct ProcessGroup {
    backend: NonNull<ffi::Backend>,
    /// Held for its Drop, which runs after the backend's (fields drop after `drop`).
    _store: StoreHandle,
    kind: Backend,
    rank: usize,
    world_size: usize,
    local_rank: usize,
}

// SAFETY: the handles own c10d objects (refcounted, internally synchronised); nothing
// ties them to the creating thread. Not Sync: see the type's documentation.
unsafe impl Send for ProcessGroup {}

/// Owns the shim's store handle, so a failed backend construction still frees it.
struct StoreHandle(NonNull<ffi::Store>);

impl Drop for StoreHandle {
    fn drop(&mut self) {
        // SAFETY: the pointer came from vla_dist_tcp_store_new and is freed once, here.
        unsafe { ffi::vla_dist_store_free(self.0.as_ptr()) }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // The backend goes first (it holds the store); the store handle follows as a field.
        // SAFETY: the pointer came from the shim and is freed once, here.
        unsafe { ffi::vla_dist_backend_free(self.backend.as_ptr()) }
    }
}

impl fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessGroup")
            .field("backend", &self.kind)
            .field("rank", &self.rank)
            .field("world_size", &self.world_size)
            .field("local_rank", &self.local_rank)
            .finish()
    }
}

impl ProcessGroup {
    /// Joins the job described by `rv`: rank 0 serves a TCPStore on
    /// `master_addr:master_port` (bound to that address only), every rank waits there for
    /// all `world_size` ranks, then builds the backend and connects to its peers.
    ///
    /// `timeout` bounds the rendezvous and, as with PyTorch's `init_process_group`,
    /// every later collective. Gloo binds this host's address towards the master (the
    /// loopback address when the master is on loopback), never a wildcard. NCCL drives
    /// `cuda:{local_rank}`.
    pub fn new(rv: &Rendezvous, backend: Backend, timeout: Duration) -> Result<Self> {
        if rv.world_size == 0 || rv.rank >= rv.world_size {
            return Err(DistError::InvalidArgument(format!(
                "rank {} is not within a world of {}",
                rv.rank, rv.world_size
            )));
        }
        let world_size_c = c_int::try_from(rv.world_size).map_err(|_| {
            DistError::InvalidArgument(format!("world size {} is too large", rv.world_size))
        })?;
        // rank < world_size, so it fits too.
        let rank_c = rv.rank as c_int;
        if timeout.is_zero() {
            return Err(DistError::InvalidArgument(
                "timeout must be positive".into(),
            ));
        }
        let timeout_ms = i64::try_from(timeout.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        // Checked before the rendezvous, so a misconfigured rank fails at once instead of
        // leaving its peers waiting.
        if backend == Backend::Nccl && !cfg!(feature = "nccl") {
            return Err(DistError::NoNccl);
        }
        let host = CString::new(rv.master_addr.as_str()).map_err(|_| {
            DistError::InvalidArgument(format!("master address {:?} contains NUL", rv.master_addr))
        })?;

        // Resolved before the rendezvous too: failing after it would leave peers waiting.
        let gloo_host = match backend {
            Backend::Gloo => {
                let ip = gloo_address(&rv.master_addr, rv.master_port).map_err(|source| {
                    DistError::LocalAddress {
                        addr: rv.master_addr.clone(),
                        port: rv.master_port,
                        source,
                    }
                })?;
                Some(CString::new(ip.to_string()).map_err(|_| {
                    DistError::InvalidArgument(format!("address {ip} contains NUL"))
                })?)
            }
            Backend::Nccl => None,
        };

        let fail = |stage: &'static str, message: String| {
            let lower = message.to_ascii_lowercase();
            if lower.contains("timed out") || lower.contains("timeout") {
                DistError::Timeout {
                    stage,
                    addr: rv.master_addr.clone(),
                    port: rv.master_port,
                    rank: rv.rank,
                    world_size: rv.world_size,
                    timeout,
                    message,
                }
            } else {
                DistError::Rendezvous {
                    stage,
                    addr: rv.master_addr.clone(),
                    port: rv.master_port,
                    rank: rv.rank,
                    world_size: rv.world_size,
                    message,
                }
            }
        };

        // Rank 0 binds the store's socket itself: c10d's own server would listen on every
        // interface, this one only on the master address. The fd moves into the store
        // (c10d checks it is bound to master_port); should the store fail before taking
        // it, one fd leaks on that error path rather than risking a double close.
        let listen_fd =
            if rv.rank == 0 {
                let listener = TcpListener::bind((rv.master_addr.as_str(), rv.master_port))
                    .map_err(|source| DistError::Listen {
                        addr: rv.master_addr.clone(),
                        port: rv.master_port,
                        source,
                    })?;
                listener.into_raw_fd()
            } else {
                -1
            };
        let mut err: *mut c_char = ptr::null_mut();
        // SAFETY: `host` outlives the call; `err` is a valid out-pointer.
        let store = unsafe {
            ffi::vla_dist_tcp_store_new(
                host.as_ptr(),
                rv.master_port,
                c_int::from(rv.rank == 0),
                listen_fd,
                rv.world_size as i64,
                timeout_ms,
                &mut err,
            )
        };
        let store = match NonNull::new(store) {
            Some(store) => StoreHandle(store),
            // SAFETY: on failure the shim set `err` (or left it null).
            None => return Err(fail("TCPStore", unsafe { ffi::take_message(err) })),
        };

        let (raw, stage) = match backend {
            Backend::Gloo => {
                let hostname = gloo_host.as_ref().ok_or_else(|| {
                    DistError::InvalidArgument("no gloo address was resolved".into())
                })?;
                // SAFETY: live store handle, `hostname` outlives the call.
                let raw = unsafe {
                    ffi::vla_dist_gloo_new(
                        store.0.as_ptr(),
                        rank_c,
                        world_size_c,
                        hostname.as_ptr(),
                        timeout_ms,
                        &mut err,
                    )
                };
                (raw, "gloo connect")
            }
            Backend::Nccl => (
                nccl_new(&store, rv, rank_c, world_size_c, timeout_ms, &mut err)?,
                "nccl init",
            ),
        };
        let Some(raw) = NonNull::new(raw) else {
            // SAFETY: on failure the shim set `err` (or left it null).
            return Err(fail(stage, unsafe { ffi::take_message(err) }));
        };
        Ok(Self {
            backend: raw,
            _store: store,
            kind: backend,
            rank: rv.rank,
            world_size: rv.world_size,
            local_rank: rv.local_rank,
        })
    }

    /// This process's global rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks in the group.
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// Rank on this node (the CUDA device index for NCCL).
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    pub fn backend(&self) -> Backend {
        self.kind
    }

    /// Where this group's tensors must live: CPU for Gloo, `cuda:{local_rank}` for NCCL.
    pub fn device(&self) -> Device {
        match self.kind {
            Backend::Gloo => Device::Cpu,
            Backend::Nccl => Device::Cuda(self.local_rank),
        }
    }

    /// Sums each tensor over all ranks, in place, and blocks until done.
    ///
    /// Tensors may differ in shape and dtype: those sharing a dtype and device go to one
    /// c10d `allreduce_coalesced` (c10d flattens them into one buffer); a tensor alone in
    /// its dtype takes a plain `allreduce`. Groups are formed in order of first
    /// appearance, so every rank must pass the same sequence of shapes and dtypes. With
    /// NCCL, "done" is c10d's `Work::wait`: the current CUDA stream is ordered after the
    /// collective, which is what later kernels and copies see.
    pub fn all_reduce_sum(&self, tensors: &mut [Tensor]) -> Result<()> {
        if tensors.is_empty() {
            return Ok(());
        }
        let ptrs: Vec<_> = tensors.iter_mut().map(|t| t.as_mut_ptr()).collect();
        self.call("all_reduce_sum", |err| {
            // SAFETY: live backend; `ptrs` are live tensors borrowed mutably for the call.
            unsafe {
                ffi::vla_dist_all_reduce_sum(self.backend.as_ptr(), ptrs.as_ptr(), ptrs.len(), err)
            }
        })
    }

    /// Overwrites each tensor with rank `root`'s, in place, and blocks until done (one c10d
    /// broadcast per tensor, all issued before waiting).
    pub fn broadcast(&self, tensors: &mut [Tensor], root: usize) -> Result<()> {
        if root >= self.world_size {
            return Err(DistError::InvalidArgument(format!(
                "broadcast root {root} is not within a world of {}",
                self.world_size
            )));
        }
        if tensors.is_empty() {
            return Ok(());
        }
        let ptrs: Vec<_> = tensors.iter_mut().map(|t| t.as_mut_ptr()).collect();
        // root < world_size, which fits a c_int (checked in new).
        let root = root as c_int;
        self.call("broadcast", |err| {
            // SAFETY: as in all_reduce_sum.
            unsafe {
                ffi::vla_dist_broadcast(self.backend.as_ptr(), ptrs.as_ptr(), ptrs.len(), root, err)
            }
        })
    }

    /// Returns once every rank has reached it.
    pub fn barrier(&self) -> Result<()> {
        self.call("barrier", |err| {
            // SAFETY: live backend, valid out-pointer.
            unsafe { ffi::vla_dist_barrier(self.backend.as_ptr(), err) }
        })
    }

    /// Sums plain numbers over all ranks (losses, counts, metrics), in place: one f64
    /// tensor on [`ProcessGroup::device`], summed, copied back.
    pub fn all_reduce_f64(&self, values: &mut [f64]) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        let tensor = Tensor::f_from_slice(values)?.f_to_device(self.device())?;
        let mut tensors = [tensor];
        self.all_reduce_sum(&mut tensors)?;
        let summed = tensors[0].f_to_device(Device::Cpu)?;
        summed.f_copy_data(values, values.len())?;
        Ok(())
    }

    fn call(&self, op: &'static str, f: impl FnOnce(*mut *mut c_char) -> c_int) -> Result<()> {
        let mut err: *mut c_char = ptr::null_mut();
        if f(&mut err) == 0 {
            return Ok(());
        }
        Err(shim_error(op, self.kind, self.rank, self.world_size, err))
    }
}

/// DDP's gradient engine: PyTorch's `c10d::Reducer`, as `DistributedDataParallel` drives it.
/// It hooks every parameter's gradient accumulator; during backward it copies each gradient
/// (divided by the world size) into flat buckets and starts a bucket's all-reduce as soon as
/// the bucket is complete, while backward computes the rest; when backward ends the
/// parameters' `.grad` hold the average over ranks.
///
/// Call [`Reducer::prepare_for_backward`] before every backward pass of the parameters it
/// was built over; a backward without it leaves the gradients local.
pub struct Reducer {
    ptr: NonNull<ffi::Reducer>,
    kind: Backend,
    rank: usize,
    world_size: usize,
}

// SAFETY: as for ProcessGroup: it owns refcounted c10d objects; the hooks it registers run
// on autograd's threads, which the Reducer synchronises itself.
unsafe impl Send for Reducer {}

impl Drop for Reducer {
    fn drop(&mut self) {
        // Removes the autograd hooks, then releases the group (and its reference to the
        // backend). SAFETY: from vla_dist_reducer_new, freed once, here.
        unsafe { ffi::vla_dist_reducer_free(self.ptr.as_ptr()) }
    }
}

impl fmt::Debug for Reducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reducer")
            .field("backend", &self.kind)
            .field("rank", &self.rank)
            .field("world_size", &self.world_size)
            .finish()
    }
}

impl ProcessGroup {
    /// A [`Reducer`] over `params` (leaf tensors that require grad, in the same order on
    /// every rank), with DDP's bucket sizes: the first bucket `first_bucket_bytes` (so its
    /// all-reduce starts early), the rest up to `bucket_bytes`. `find_unused`: parameters a
    /// step's graph does not reach count as ready with zero gradient (DDP's
    /// `find_unused_parameters`), so models whose steps use different parts still work.
    pub fn reducer(
        &self,
        params: &[Tensor],
        bucket_bytes: usize,
        first_bucket_bytes: usize,
        find_unused: bool,
    ) -> Result<Reducer> {
        let mut owned: Vec<Tensor> = params.iter().map(Tensor::shallow_clone).collect();
        let ptrs: Vec<_> = owned.iter_mut().map(|t| t.as_mut_ptr()).collect();
        let mut err: *mut c_char = ptr::null_mut();
        // SAFETY: live backend; `ptrs` are live tensors for the duration of the call (the
        // reducer keeps its own references).
        let raw = unsafe {
            ffi::vla_dist_reducer_new(
                self.backend.as_ptr(),
                ptrs.as_ptr(),
                ptrs.len(),
                i64::try_from(bucket_bytes).unwrap_or(i64::MAX),
                i64::try_from(first_bucket_bytes).unwrap_or(i64::MAX),
                c_int::from(find_unused),
                &mut err,
            )
        };
        let ptr = NonNull::new(raw)
            .ok_or_else(|| shim_error("reducer", self.kind, self.rank, self.world_size, err))?;
        Ok(Reducer {
            ptr,
            kind: self.kind,
            rank: self.rank,
            world_size: self.world_size,
        })
    }
}

/// The error of a failed shim call: c10d's message, with the operation and the caller's place.
fn shim_error(
    op: &'static str,
    kind: Backend,
    rank: usize,
    world_size: usize,
    err: *mut c_char,
) -> DistError {
    DistError::Collective {
        op,
        backend: kind,
        rank,
        world_size,
        // SAFETY: the shim set `err` on failure (or left it null), and nothing freed it.
        message: unsafe { ffi::take_message(err) },
    }
}

impl Reducer {
    /// Arms the hooks for the next backward pass, which starts from `outputs` (the loss);
    /// with `find_unused`, the graph behind them is searched for parameters it skips.
    pub fn prepare_for_backward(&self, outputs: &[Tensor]) -> Result<()> {
        let mut owned: Vec<Tensor> = outputs.iter().map(Tensor::shallow_clone).collect();
        let ptrs: Vec<_> = owned.iter_mut().map(|t| t.as_mut_ptr()).collect();
        let mut err: *mut c_char = ptr::null_mut();
        // SAFETY: live reducer; `ptrs` are live tensors for the call.
        let rc = unsafe {
            ffi::vla_dist_reducer_prepare_for_backward(
                self.ptr.as_ptr(),
                ptrs.as_ptr(),
                ptrs.len(),
                &mut err,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        Err(shim_error(
            "prepare_for_backward",
            self.kind,
            self.rank,
            self.world_size,
            err,
        ))
    }
}

#[cfg(feature = "nccl")]
fn nccl_new(
    store: &StoreHandle,
    rv: &Rendezvous,
    rank: c_int,
    world_size: c_int,
    timeout_ms: i64,
    err: &mut *mut c_char,
) -> Result<*mut ffi::Backend> {
    let device = c_int::try_from(rv.local_rank).map_err(|_| {
        DistError::InvalidArgument(format!("local rank {} is too large", rv.local_rank))
    })?;
    // SAFETY: live store handle, valid out-pointer.
    Ok(unsafe {
        ffi::vla_dist_nccl_new(store.0.as_ptr(), rank, world_size, device, timeout_ms, err)
    })
}

#[cfg(not(feature = "nccl"))]
fn nccl_new(
    _store: &StoreHandle,
    _rv: &Rendezvous,
    _rank: c_int,
    _world_size: c_int,
    _timeout_ms: i64,
    _err: &mut *mut c_char,
) -> Result<*mut ffi::Backend> {
    Err(DistError::NoNccl)
}

/// The address of this host that gloo should bind: loopback when the master is on
/// loopback (a single-host job), else the local address the kernel would use to reach the
/// master (found by connecting a UDP socket, which sends nothing). Peers reach each other
/// on the same network they reach the master on.
fn gloo_address(master_addr: &str, port: u16) -> io::Result<IpAddr> {
    let targets: Vec<SocketAddr> = (master_addr, port).to_socket_addrs()?.collect();
    if let Some(lo) = targets.iter().find(|a| a.ip().is_loopback()) {
        return Ok(lo.ip());
    }
    let target = targets.first().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{master_addr} resolves to no address"),
        )
    })?;
    let any: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let probe = UdpSocket::bind(any)?;
    probe.connect(target)?;
    Ok(probe.local_addr()?.ip())
}
