// Declaration-only stand-in (see ../../README.md), written for vla-dist.
//
// ProcessGroupGloo.hpp only holds these through std::shared_ptr / std::unique_ptr
// members and parameters; forward declarations are enough.
#pragma once

namespace gloo {
namespace transport {

class Device;
class UnboundBuffer;

} // namespace transport
} // namespace gloo
