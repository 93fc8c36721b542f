// ProcessGroupNCCL construction, compiled only with the crate's `nccl` feature: its
// header pulls in the CUDA runtime and NCCL headers, which a CPU-only build lacks.
#include <chrono>
#include <utility>

#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include "vla_dist_internal.hpp"

extern "C" {

vla_dist_backend* vla_dist_nccl_new(
    vla_dist_store* store,
    int rank,
    int world_size,
    int device_index,
    int64_t timeout_ms,
    char** err) {
  vla_dist_backend* out = nullptr;
  vla_dist::guarded(err, [&] {
    TORCH_CHECK(store != nullptr, "store is a null pointer");
    TORCH_CHECK(device_index >= 0, "CUDA device index must be >= 0, got ", device_index);
    auto options = c10d::ProcessGroupNCCL::Options::create();
    // Like init_process_group's timeout: it bounds each collective (watchdog).
    options->timeout = std::chrono::milliseconds(timeout_ms);
    auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(
        store->store, rank, world_size, options);
    const auto device = c10::DeviceIndex(device_index);
    // Binding the device tells c10d which GPU this rank drives (barrier, communicator
    // creation) instead of guessing it from the rank.
    pg->setBoundDeviceId(at::Device(at::kCUDA, device));
    out = new vla_dist_backend{
        c10::static_intrusive_pointer_cast<c10d::Backend>(std::move(pg)), device};
  });
  return out;
}

} // extern "C"
