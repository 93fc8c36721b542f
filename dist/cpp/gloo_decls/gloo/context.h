// Declaration-only stand-in (see ../README.md), written for vla-dist.
//
// ProcessGroupGloo.hpp holds contexts through std::shared_ptr (which needs no complete
// type) and its inline `setTimeout` override calls `Context::setTimeout`, so that one
// member must be declared for the header to parse. The shim never calls it, so the
// declaration is never referenced by generated code.
#pragma once

#include <chrono>

namespace gloo {

class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};

} // namespace gloo
