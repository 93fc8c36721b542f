// The vla-dist shim: a C ABI over c10d's TCPStore, ProcessGroupGloo and the
// collectives of c10d::Backend. All communication is c10d's own; this file only
// translates arguments, waits on c10d::Work and turns exceptions into messages.
#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

#include "vla_dist_internal.hpp"

namespace {

// Waits for every work item in order. If one fails, the rest are still waited for, so
// no c10d work is left writing into caller-visible tensors after we return, and the
// first failure is rethrown.
void wait_all(std::vector<c10::intrusive_ptr<c10d::Work>>& works) {
  std::exception_ptr first;
  for (auto& work : works) {
    try {
      work->wait();
    } catch (...) {
      if (!first) {
        first = std::current_exception();
      }
    }
  }
  if (first) {
    std::rethrow_exception(first);
  }
}

// Issues collectives through `issue` and waits for all of them; if issuing throws,
// waits for the ones already in flight before rethrowing.
template <typename Issue>
void issue_then_wait(std::vector<c10::intrusive_ptr<c10d::Work>>& works, Issue&& issue) {
  try {
    issue();
  } catch (...) {
    try {
      wait_all(works);
    } catch (...) {
    }
    throw;
  }
  wait_all(works);
}

std::vector<at::Tensor> collect(vla_dist_tensor const* tensors, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    TORCH_CHECK(tensors[i] != nullptr, "tensor ", i, " is a null pointer");
    TORCH_CHECK(tensors[i]->defined(), "tensor ", i, " is undefined");
    // A copy of at::Tensor shares its storage: the collective still works in place.
    out.push_back(*tensors[i]);
  }
  return out;
}

} // namespace

extern "C" {

void vla_dist_string_free(char* s) {
  std::free(s);
}

vla_dist_store* vla_dist_tcp_store_new(
    const char* host,
    uint16_t port,
    int is_server,
    int listen_fd,
    int64_t world_size,
    int64_t timeout_ms,
    char** err) {
  vla_dist_store* out = nullptr;
  vla_dist::guarded(err, [&] {
    TORCH_CHECK(host != nullptr, "host is a null pointer");
    TORCH_CHECK(world_size > 0, "world size must be positive, got ", world_size);
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = is_server != 0;
    opts.numWorkers = static_cast<std::size_t>(world_size);
    opts.waitWorkers = true;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    if (opts.isServer && listen_fd >= 0) {
      opts.masterListenFd = listen_fd;
    }
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    out = new vla_dist_store{std::move(store)};
  });
  return out;
}

void vla_dist_store_free(vla_dist_store* store) {
  // Destructors can throw in principle (socket shutdown); never let that unwind into Rust.
  vla_dist::guarded(nullptr, [&] { delete store; });
}

vla_dist_backend* vla_dist_gloo_new(
    vla_dist_store* store,
    int rank,
    int world_size,
    const char* hostname,
    int64_t timeout_ms,
    char** err) {
  vla_dist_backend* out = nullptr;
  vla_dist::guarded(err, [&] {
    TORCH_CHECK(store != nullptr, "store is a null pointer");
    TORCH_CHECK(hostname != nullptr, "hostname is a null pointer");
    const auto timeout = std::chrono::milliseconds(timeout_ms);
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    // One TCP device bound to the given address only (not create_default's guess from
    // this machine's hostname); eager connection (lazyInit = false), so a missing peer
    // shows up here as a rendezvous timeout instead of in the first collective.
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(
        std::string(hostname), /*lazyInit=*/false));
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(
        store->store, rank, world_size, options);
    out = new vla_dist_backend{
        c10::static_intrusive_pointer_cast<c10d::Backend>(std::move(pg)),
        std::nullopt};
  });
  return out;
}

void vla_dist_backend_free(vla_dist_backend* backend) {
  vla_dist::guarded(nullptr, [&] { delete backend; });
}

int vla_dist_all_reduce_sum(
    vla_dist_backend* backend,
    vla_dist_tensor const* tensors,
    size_t n,
    char** err) {
  const bool ok = vla_dist::guarded(err, [&] {
    TORCH_CHECK(backend != nullptr, "backend is a null pointer");
    auto all = collect(tensors, n);
    // c10d's Backend::allreduce treats a vector as copies of ONE tensor (one per local
    // device) and sums across the vector as well: it rejects differing shapes and would
    // silently mix equal-shaped tensors. allreduce_coalesced is c10d's coalescing of
    // distinct tensors, but needs one dtype and one device per call, so the tensors are
    // grouped by (dtype, device) in order of first appearance: identical on every rank
    // given the same tensor list. A group of one takes plain allreduce (no flatten copy).
    std::vector<std::pair<std::pair<at::ScalarType, at::Device>, std::vector<at::Tensor>>>
        groups;
    for (auto& t : all) {
      const auto key = std::make_pair(t.scalar_type(), t.device());
      auto it = groups.begin();
      while (it != groups.end() && it->first != key) {
        ++it;
      }
      if (it == groups.end()) {
        groups.emplace_back(key, std::vector<at::Tensor>{t});
      } else {
        it->second.push_back(t);
      }
    }
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    issue_then_wait(works, [&] {
      for (auto& group : groups) {
        auto& ts = group.second;
        if (ts.size() == 1) {
          c10d::AllreduceOptions opts;
          opts.reduceOp = c10d::ReduceOp::SUM;
          works.push_back(backend->backend->allreduce(ts, opts));
        } else {
          c10d::AllreduceCoalescedOptions opts;
          opts.reduceOp = c10d::ReduceOp::SUM;
          works.push_back(backend->backend->allreduce_coalesced(ts, opts));
        }
      }
    });
  });
  return ok ? 0 : 1;
}

int vla_dist_broadcast(
    vla_dist_backend* backend,
    vla_dist_tensor const* tensors,
    size_t n,
    int root,
    char** err) {
  const bool ok = vla_dist::guarded(err, [&] {
    TORCH_CHECK(backend != nullptr, "backend is a null pointer");
    TORCH_CHECK(
        root >= 0 && root < backend->backend->getSize(),
        "root rank ",
        root,
        " is outside the group of ",
        backend->backend->getSize());
    auto all = collect(tensors, n);
    // As with allreduce, a vector passed to c10d's broadcast means copies of one tensor,
    // so each tensor is its own broadcast; all are issued before waiting on any.
    std::vector<std::vector<at::Tensor>> singles;
    singles.reserve(all.size());
    for (auto& t : all) {
      singles.push_back(std::vector<at::Tensor>{t});
    }
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    issue_then_wait(works, [&] {
      for (auto& single : singles) {
        c10d::BroadcastOptions opts;
        opts.rootRank = root;
        opts.rootTensor = 0;
        works.push_back(backend->backend->broadcast(single, opts));
      }
    });
  });
  return ok ? 0 : 1;
}

int vla_dist_barrier(vla_dist_backend* backend, char** err) {
  const bool ok = vla_dist::guarded(err, [&] {
    TORCH_CHECK(backend != nullptr, "backend is a null pointer");
    c10d::BarrierOptions opts;
    if (backend->cuda_device.has_value()) {
      // NCCL's barrier is an allreduce on a device; name ours rather than let c10d
      // guess it from the rank.
      opts.device_ids = {static_cast<int64_t>(*backend->cuda_device)};
    }
    auto work = backend->backend->barrier(opts);
    work->wait();
  });
  return ok ? 0 : 1;
}

} // extern "C"
