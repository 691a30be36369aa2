#pragma once
// ASCII case helpers, as strncasecmp in the C locale (the proxy never calls setlocale): header
// names, host names, SNI names.
//
// Thread: any (pure).

#include <string>
#include <string_view>

namespace sy {

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

// `s` with ASCII letters lower-cased.
inline std::string asciiLowered(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = asciiLower(c);
  return out;
}

}  // namespace sy
