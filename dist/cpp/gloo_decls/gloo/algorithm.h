// Declaration-only stand-in (see ../README.md): ProcessGroupGloo.hpp includes this
// header but uses nothing from it.
#pragma once
