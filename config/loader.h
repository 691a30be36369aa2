#pragma once
// Entry point of config/: reads a TOML file, validates it in full and compiles it into an
// immutable Snapshot (RE2 compiled, names resolved, weights checked).
//
// Thread: main thread (resolves host names, may block).

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "config/error.h"
#include "config/snapshot.h"

namespace sy::config {

struct LoadResult {
  std::shared_ptr<Snapshot> snapshot;  // null when errors is not empty
  std::vector<ConfigError> errors;
  bool ok() const { return snapshot != nullptr; }
};

// Loads the file at `path`. Every rejection of SPEC §3 yields one ConfigError; all are
// collected (not only the first) where the file parses as TOML at all.
LoadResult loadSnapshot(const std::string& path);

// Same, from text; `path` is only used in messages and as Snapshot::path.
LoadResult loadSnapshotFromString(std::string_view toml_text, const std::string& path);

}  // namespace sy::config
