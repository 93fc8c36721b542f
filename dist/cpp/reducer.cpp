// DDP's gradient engine for vla-dist: c10d::Reducer, the C++ object that
// torch.nn.parallel.DistributedDataParallel drives. It registers a hook on every
// parameter's gradient accumulator; as backward produces gradients it copies them
// (divided by the world size) into flat buckets and starts each bucket's all-reduce as
// soon as the bucket is full, while backward goes on computing the rest; at the end of
// backward it waits for the buckets and writes the averaged gradients back.
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>

#include "vla_dist_internal.hpp"

struct vla_dist_reducer {
  c10::intrusive_ptr<c10d::ProcessGroup> group;
  std::unique_ptr<c10d::Reducer> reducer;
};

extern "C" {

vla_dist_reducer* vla_dist_reducer_new(
    vla_dist_backend* backend,
    vla_dist_tensor const* params,
    size_t n,
    int64_t bucket_bytes,
    int64_t first_bucket_bytes,
    int find_unused,
    char** err) {
  vla_dist_reducer* out = nullptr;
  vla_dist::guarded(err, [&] {
    TORCH_CHECK(backend != nullptr, "backend is a null pointer");
    TORCH_CHECK(n > 0, "a reducer needs at least one parameter");
    std::vector<at::Tensor> tensors;
    tensors.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      TORCH_CHECK(params[i] != nullptr && params[i]->defined(), "parameter ", i, " is undefined");
      TORCH_CHECK(params[i]->requires_grad(), "parameter ", i, " does not require grad");
      tensors.push_back(*params[i]);
    }
    // The Reducer speaks to a ProcessGroup, which routes each collective to the backend
    // registered for the tensors' device type.
    auto& b = backend->backend;
    auto group = c10::make_intrusive<c10d::ProcessGroup>(b->getRank(), b->getSize());
    const bool cuda = backend->cuda_device.has_value();
    const auto type = cuda ? c10d::ProcessGroup::BackendType::NCCL
                           : c10d::ProcessGroup::BackendType::GLOO;
    group->setBackend(cuda ? c10::DeviceType::CUDA : c10::DeviceType::CPU, type, b);
    group->setDefaultBackend(type);
    // DDP's own bucket assignment: a small first bucket (its all-reduce starts early),
    // then buckets up to `bucket_bytes`.
    std::vector<size_t> limits = {
        static_cast<size_t>(first_bucket_bytes), static_cast<size_t>(bucket_bytes)};
    auto [buckets, per_bucket_limits] =
        c10d::compute_bucket_assignment_by_size(tensors, limits);
    (void)per_bucket_limits;
    auto reducer = std::make_unique<c10d::Reducer>(
        tensors,
        std::move(buckets),
        group,
        std::vector<bool>(n, false),
        bucket_bytes,
        find_unused != 0,
        /*gradient_as_bucket_view=*/false,
        std::unordered_map<size_t, std::string>{},
        first_bucket_bytes,
        /*skip_all_reduce_unused_params=*/false,
        /*use_python_reducer=*/false,
        std::vector<int64_t>{});
    out = new vla_dist_reducer{std::move(group), std::move(reducer)};
  });
  return out;
}

int vla_dist_reducer_prepare_for_backward(
    vla_dist_reducer* reducer,
    vla_dist_tensor const* outputs,
    size_t n,
    char** err) {
  const bool ok = vla_dist::guarded(err, [&] {
    TORCH_CHECK(reducer != nullptr, "reducer is a null pointer");
    std::vector<at::Tensor> roots;
    for (size_t i = 0; i < n; ++i) {
      TORCH_CHECK(outputs[i] != nullptr && outputs[i]->defined(), "output ", i, " is undefined");
      roots.push_back(*outputs[i]);
    }
    reducer->reducer->prepare_for_forward();
    reducer->reducer->prepare_for_backward(roots);
  });
  return ok ? 0 : 1;
}

void vla_dist_reducer_free(vla_dist_reducer* reducer) {
  vla_dist::guarded(nullptr, [&] { delete reducer; });
}

} // extern "C"
