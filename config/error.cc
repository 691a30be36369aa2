#include "config/error.h"

namespace sy::config {

std::string ConfigError::toString() const {
  std::string out = file;
  // Positions are printed only when known, and a column only with its line, so the text stays
  // what editors and CI annotators parse as "file:line:col:".
  if (line != 0) {
    out += ':' + std::to_string(line);
    if (col != 0) out += ':' + std::to_string(col);
  }
  if (!out.empty()) out += ": ";
  if (!key.empty()) out += key + ": ";
  out += message;
  return out;
}

std::string formatErrors(const std::vector<ConfigError>& errors) {
  std::string out;
  for (const ConfigError& error : errors) {
    out += error.toString();
    out += '\n';
  }
  return out;
}

}  // namespace sy::config
