// C ABI of the vla-dist shim over PyTorch's c10d (TCPStore, ProcessGroupGloo,
// ProcessGroupNCCL). Rust declares the same functions in src/ffi.rs.
//
// Conventions: no C++ exception crosses this boundary. A function that can fail takes
// `char** err` as its last argument; on failure it returns NULL (constructors) or a
// non-zero value (everything else) and stores a malloc'ed, NUL-terminated message in
// *err, which the caller releases with vla_dist_string_free.
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
namespace at {
class Tensor;
}
typedef at::Tensor* vla_dist_tensor; // torch-sys's `tensor` (torch::Tensor*).
extern "C" {
#else
typedef void* vla_dist_tensor;
#endif

typedef struct vla_dist_store vla_dist_store;
typedef struct vla_dist_backend vla_dist_backend;
typedef struct vla_dist_reducer vla_dist_reducer;

void vla_dist_string_free(char* s);

// c10d::TCPStore at host:port. The server (rank 0) passes the fd of a socket it has
// already bound and put into listening state (ownership moves to the store), or -1 to
// let c10d bind the port on every interface. Blocks until `world_size` ranks joined,
// or throws after `timeout_ms`.
vla_dist_store* vla_dist_tcp_store_new(
    const char* host,
    uint16_t port,
    int is_server,
    int listen_fd,
    int64_t world_size,
    int64_t timeout_ms,
    char** err);
void vla_dist_store_free(vla_dist_store* store);

// c10d::ProcessGroupGloo with one TCP device bound to `hostname` (an address of this
// host), connected to all peers before returning.
vla_dist_backend* vla_dist_gloo_new(
    vla_dist_store* store,
    int rank,
    int world_size,
    const char* hostname,
    int64_t timeout_ms,
    char** err);

// c10d::ProcessGroupNCCL bound to cuda:`device_index`. Only linked with the crate's
// `nccl` feature (cpp/nccl.cpp).
vla_dist_backend* vla_dist_nccl_new(
    vla_dist_store* store,
    int rank,
    int world_size,
    int device_index,
    int64_t timeout_ms,
    char** err);

void vla_dist_backend_free(vla_dist_backend* backend);

// In-place sum over all ranks of each tensor; blocks until done.
int vla_dist_all_reduce_sum(
    vla_dist_backend* backend,
    vla_dist_tensor const* tensors,
    size_t n,
    char** err);

// In-place broadcast of each tensor from `root`; blocks until done.
int vla_dist_broadcast(
    vla_dist_backend* backend,
    vla_dist_tensor const* tensors,
    size_t n,
    int root,
    char** err);

int vla_dist_barrier(vla_dist_backend* backend, char** err);

// c10d::Reducer (DDP's gradient engine) over `params`, all-reducing through `backend` in
// buckets of `bucket_bytes` (the first one `first_bucket_bytes`) while backward runs.
// With `find_unused`, parameters that a step's graph does not reach count as ready with a
// zero gradient (DDP's find_unused_parameters).
vla_dist_reducer* vla_dist_reducer_new(
    vla_dist_backend* backend,
    vla_dist_tensor const* params,
    size_t n,
    int64_t bucket_bytes,
    int64_t first_bucket_bytes,
    int find_unused,
    char** err);

// Before each backward: arms the reducer's hooks; `outputs` are the roots backward starts
// from (the loss), searched for unused parameters.
int vla_dist_reducer_prepare_for_backward(
    vla_dist_reducer* reducer,
    vla_dist_tensor const* outputs,
    size_t n,
    char** err);

void vla_dist_reducer_free(vla_dist_reducer* reducer);

#ifdef __cplusplus
} // extern "C"
#endif
