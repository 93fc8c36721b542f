// Internals shared by shim.cpp and nccl.cpp: the handle structs and the exception
// barrier every extern "C" entry point goes through.
#pragma once

#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <string>

#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include "vla_dist.h"

struct vla_dist_store {
  c10::intrusive_ptr<c10d::Store> store;
};

struct vla_dist_backend {
  c10::intrusive_ptr<c10d::Backend> backend;
  // The CUDA device an NCCL backend is bound to; unset for Gloo.
  std::optional<c10::DeviceIndex> cuda_device;
};

namespace vla_dist {

inline void set_error(char** err, const char* msg) {
  if (err == nullptr) {
    return;
  }
  const size_t len = std::strlen(msg);
  char* copy = static_cast<char*>(std::malloc(len + 1));
  if (copy != nullptr) {
    std::memcpy(copy, msg, len + 1);
  }
  *err = copy;
}

// Runs `f`, turning any exception into a message in *err. Returns true on success.
// c10::Error's what() carries a C++ backtrace; the message without it is what a Rust
// error should show.
template <typename F>
bool guarded(char** err, F&& f) noexcept {
  try {
    f();
    return true;
  } catch (const c10::Error& e) {
    set_error(err, e.what_without_backtrace());
  } catch (const std::exception& e) {
    set_error(err, e.what());
  } catch (...) {
    set_error(err, "unknown C++ exception");
  }
  return false;
}

} // namespace vla_dist
