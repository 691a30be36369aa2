#pragma once
// request -> route: the first route whose host and path matchers fit (SPEC §4.1).
//
// Thread: any (pure over an immutable Snapshot).

#include <string_view>

#include "config/snapshot.h"

namespace sy::proxy {

// The host without its port, e.g. "a.example:8080" -> "a.example", "[::1]:80" -> "[::1]".
std::string_view hostWithoutPort(std::string_view host);

// The first route matching `host` (a Host header value; port ignored, case-insensitive) and
// `path` (without query), or null when none matches.
const config::Route* matchRoute(const config::Snapshot& snapshot, std::string_view host,
                                std::string_view path);

}  // namespace sy::proxy
