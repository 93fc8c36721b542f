//! Declarations of the shim's C ABI (cpp/vla_dist.h). Every function that can fail
//! reports through `err`: a malloc'ed message the caller frees with
//! [`vla_dist_string_free`]. No C++ exception crosses this boundary.
use std::ffi::{c_char, c_int};

use torch_sys::C_tensor;

/// `vla_dist_store`: owns a `c10::intrusive_ptr<c10d::Store>`.
#[repr(C)]
pub(crate) struct Store {
    _opaque: [u8; 0],
}

/// `vla_dist_backend`: owns a `c10::intrusive_ptr<c10d::Backend>`.
#[repr(C)]
pub(crate) struct Backend {
    _opaque: [u8; 0],
}

/// `vla_dist_reducer`: owns a `c10d::Reducer` and the `c10d::ProcessGroup` it speaks to.
#[repr(C)]
pub(crate) struct Reducer {
    _opaque: [u8; 0],
}

extern "C" {
    pub(crate) fn vla_dist_reducer_new(
        backend: *mut Backend,
        params: *const *mut C_tensor,
        n: usize,
        bucket_bytes: i64,
        first_bucket_bytes: i64,
        find_unused: c_int,
        err: *mut *mut c_char,
    ) -> *mut Reducer;

    pub(crate) fn vla_dist_reducer_prepare_for_backward(
        reducer: *mut Reducer,
        outputs: *const *mut C_tensor,
        n: usize,
        err: *mut *mut c_char,
    ) -> c_int;

    pub(crate) fn vla_dist_reducer_free(reducer: *mut Reducer);

    pub(crate) fn vla_dist_string_free(s: *mut c_char);

    pub(crate) fn vla_dist_tcp_store_new(
        host: *const c_char,
        port: u16,
        is_server: c_int,
        listen_fd: c_int,
        world_size: i64,
        timeout_ms: i64,
        err: *mut *mut c_char,
    ) -> *mut Store;
    pub(crate) fn vla_dist_store_free(store: *mut Store);

    pub(crate) fn vla_dist_gloo_new(
        store: *mut Store,
        rank: c_int,
        world_size: c_int,
        hostname: *const c_char,
        timeout_ms: i64,
        err: *mut *mut c_char,
    ) -> *mut Backend;

    #[cfg(feature = "nccl")]
    pub(crate) fn vla_dist_nccl_new(
        store: *mut Store,
        rank: c_int,
        world_size: c_int,
        device_index: c_int,
        timeout_ms: i64,
        err: *mut *mut c_char,
    ) -> *mut Backend;

    pub(crate) fn vla_dist_backend_free(backend: *mut Backend);

    pub(crate) fn vla_dist_all_reduce_sum(
        backend: *mut Backend,
        tensors: *const *mut C_tensor,
        n: usize,
        err: *mut *mut c_char,
    ) -> c_int;

    pub(crate) fn vla_dist_broadcast(
        backend: *mut Backend,
        tensors: *const *mut C_tensor,
        n: usize,
        root: c_int,
        err: *mut *mut c_char,
    ) -> c_int;

    pub(crate) fn vla_dist_barrier(backend: *mut Backend, err: *mut *mut c_char) -> c_int;
}

/// Takes ownership of a message the shim allocated (null: the shim could not allocate).
///
/// # Safety
/// `s` is null or a pointer from the shim that has not been freed yet.
pub(crate) unsafe fn take_message(s: *mut c_char) -> String {
    if s.is_null() {
        return "unknown error (the C++ shim returned no message)".to_owned();
    }
    // SAFETY: per the contract, `s` is a live NUL-terminated string from the shim.
    let message = unsafe { std::ffi::CStr::from_ptr(s) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: freed once, by the allocator that made it.
    unsafe { vla_dist_string_free(s) };
    message
}
