#pragma once
// Parsed HTTP/1.1 message heads as the data plane sees them. Names keep the case they arrived
// with; lookups are case-insensitive.
//
// Thread: worker-local.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/ascii.h"

namespace sy::proxy {

// How a message body is delimited (HTTP/1 framing; an HTTP/2 body is DATA frames, None or
// ContentLength when the length is known).
enum class BodyFraming : uint8_t { None, ContentLength, Chunked, UntilClose };

struct Header {
  std::string name;
  std::string value;
};
using Headers = std::vector<Header>;

// The value of the first header named `name`, or nullopt.
std::optional<std::string_view> findHeader(const Headers& headers, std::string_view name);

struct RequestHead {
  std::string method;  // "GET", ...
  std::string target;  // request-target as received ("/a/b?q=1")
  unsigned http_major = 1;
  unsigned http_minor = 1;
  Headers headers;

  std::string_view path() const;  // target without the query
};

struct ResponseHead {
  unsigned status = 0;
  std::string reason;
  unsigned http_major = 1;
  unsigned http_minor = 1;
  Headers headers;
};

}  // namespace sy::proxy
