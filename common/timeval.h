#pragma once
// Milliseconds (as configured) to the timeval libevent's timers take.

#include <sys/time.h>

#include <cstdint>

namespace sy {

inline timeval toTimeval(uint32_t ms) {
  timeval tv{};
  tv.tv_sec = ms / 1000;
  tv.tv_usec = static_cast<suseconds_t>(ms % 1000) * 1000;
  return tv;
}

}  // namespace sy
