#pragma once
// Shared by the libFuzzer targets: a resolver that never touches the network, and a check that
// reports a broken invariant with the input that broke it (libFuzzer then saves the reproducer).

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/validate.h"

namespace sy::fuzz {

// Numeric IPv4/IPv6 addresses resolve to themselves; names ending in ".invalid" (RFC 6761) do
// not resolve; every other name resolves to 127.0.0.1. No DNS, no files, deterministic.
std::optional<std::string> fakeResolve(const config::HostPort& address,
                                       std::vector<config::SocketAddress>& out);

// Prints `what` and `detail` to stderr and aborts (a libFuzzer crash with the input saved).
[[noreturn]] void fail(std::string_view what, std::string_view detail = {});

// Checks an invariant; `detail` (a string expression) is only built when it is broken, so the
// check costs nothing on the fuzzing hot path.
#define FUZZ_CHECK(cond, what, detail)               \
  do {                                               \
    if (!(cond)) ::sy::fuzz::fail((what), (detail)); \
  } while (0)

// `s` with control and non-ASCII bytes escaped, for failure messages.
std::string printable(std::string_view s, size_t limit = 2000);

}  // namespace sy::fuzz
