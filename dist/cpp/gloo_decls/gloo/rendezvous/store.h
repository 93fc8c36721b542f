// Declaration-only stand-in (see ../../README.md), written for vla-dist.
//
// ProcessGroupGloo.hpp defines an inline `GlooStore` deriving from this class and
// overriding these four members (GLOO_STORE_HAS_STORE_V2 stays undefined, so none of
// the newer ones). The shim never instantiates GlooStore, so neither this class's
// vtable nor its typeinfo is ever referenced: it only has to make the header parse.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace gloo {
namespace rendezvous {

class Store {
 public:
  virtual ~Store() = default;

  virtual void set(const std::string& key, const std::vector<char>& data) = 0;

  virtual std::vector<char> get(const std::string& key) = 0;

  virtual void wait(const std::vector<std::string>& keys) = 0;

  virtual void wait(
      const std::vector<std::string>& keys,
      const std::chrono::milliseconds& timeout) = 0;
};

} // namespace rendezvous
} // namespace gloo
