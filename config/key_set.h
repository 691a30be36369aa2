#pragma once
// A segment's keys_file (SPEC §13): split keys, one per line, held in a hash set that the
// workers read concurrently.
//
// The set holds each key's 64-bit XXH3 hash (seeded with a random value per load), not the key,
// in one sorted array with a directory on the hash's top bits (about 4 hashes per directory
// entry): 1,000,000 keys cost about 9 MB whatever their length, and a lookup hashes the key once,
// reads one directory entry and searches one cache line or two of the array (std::sort and
// std::binary_search over the slice). A key that is not in the file is taken for one that is
// with probability n / 2^64 (5e-14 for a million keys); the seed is drawn at each load and never
// leaves the process, so such a collision cannot be searched for offline.
//
// File format: one key per line; surrounding blanks (spaces, tabs, CR) are trimmed; blank lines
// and lines starting with '#' are skipped.
//
// Thread: loading: main. contains(): any.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sy::config {

class KeySet {
 public:
  // Reads `path` (already resolved). Null with `*error` set when it cannot be read.
  static std::shared_ptr<const KeySet> load(const std::string& path, std::string* error);
  // From the text of a keys file (tests, benchmarks).
  static std::shared_ptr<const KeySet> parse(std::string_view text, uint64_t seed);

  bool contains(std::string_view key) const;
  size_t size() const { return hashes_.size(); }
  // Bytes held (the array and the directory).
  size_t memoryBytes() const {
    return hashes_.capacity() * sizeof(uint64_t) + directory_.capacity() * sizeof(uint32_t);
  }

 private:
  uint64_t seed_ = 0;
  unsigned shift_ = 63;              // 64 - directory bits
  std::vector<uint64_t> hashes_;     // sorted, unique
  std::vector<uint32_t> directory_;  // [p]: first index of a hash whose top bits are >= p
};

// Calls `each(key)` for every key of a keys file's text (trimmed, no blank or comment lines).
template <class Each>
void forEachKeyLine(std::string_view text, Each&& each) {
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t' || line.front() == '\r')) {
      line.remove_prefix(1);
    }
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t' || line.back() == '\r')) {
      line.remove_suffix(1);
    }
    if (line.empty() || line.front() == '#') continue;
    each(line);
  }
}

}  // namespace sy::config
