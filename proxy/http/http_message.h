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

namespace sy::proxy {

// How a message body is delimited (HTTP/1 framing; an HTTP/2 body is DATA frames, None or
// ContentLength when the length is known).
enum class BodyFraming : uint8_t { None, ContentLength, Chunked, UntilClose };

struct Header {
  std::string name;
  std::string value;
};
using Headers = std::vector<Header>;

// ASCII letters only, as strncasecmp in the C locale (the proxy never calls setlocale).
constexpr char asciiLower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }

// Case-insensitive equality, inline and lengths first: it runs for nearly every header of every
// message (header classification, lookups), where a call into strncasecmp cost more than the
// compare. Unlike strncasecmp it does not stop at a NUL; no caller compares two strings that
// both hold one (decoded names and values are checked for controls, literals have none).
constexpr bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i] && asciiLower(a[i]) != asciiLower(b[i])) return false;
  }
  return true;
}

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
