#pragma once
// A configuration error with the place it comes from, printed as
// "file:line:col: key.path: message" (line/col omitted when unknown).

#include <cstdint>
#include <string>
#include <vector>

namespace sy::config {

struct ConfigError {
  std::string file;
  uint32_t line = 0;  // 1-based; 0 = unknown
  uint32_t col = 0;   // 1-based; 0 = unknown
  std::string key;    // e.g. "routes[0].weights.canary"; may be empty
  std::string message;

  std::string toString() const;
};

// All errors, one per line.
std::string formatErrors(const std::vector<ConfigError>& errors);

}  // namespace sy::config
