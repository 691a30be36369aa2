#pragma once
// A segment's keys_file (SPEC §13): split keys, one per line, held in a hash set that the
// workers read concurrently.
//
// The set holds each key's 64-bit XXH3 hash (seeded with a random value per load), not the key:
// 1,000,000 keys cost about 25 MB whatever their length (std::pmr::unordered_set nodes in one
// monotonic arena, no per-node malloc header), and a lookup hashes the key once and reads one
// bucket. A key that is not in the file is taken for one that is with probability n / 2^64
// (5e-14 for a million keys); the seed is drawn at each load and never leaves the process, so
// such a collision cannot be searched for offline.
//
// File format: one key per line; surrounding blanks (spaces, tabs, CR) are trimmed; blank lines
// and lines starting with '#' are skipped.
//
// Thread: loading: main. contains(): any.

#include <cstdint>
#include <memory>
#include <memory_resource>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>

namespace sy::config {

class KeySet {
 public:
  // Reads `path` (already resolved). Null with `*error` set when it cannot be read.
  static std::shared_ptr<const KeySet> load(const std::string& path, std::string* error);
  // From the text of a keys file (tests, benchmarks).
  static std::shared_ptr<const KeySet> parse(std::string_view text, uint64_t seed);

  bool contains(std::string_view key) const;
  size_t size() const { return hashes_.size(); }

  KeySet(const KeySet&) = delete;
  KeySet& operator=(const KeySet&) = delete;
  // `expected`: about how many keys will be inserted; the arena's first block is sized for
  // them (a node is two words, a bucket one), so the memory is allocated at once, not doubled.
  KeySet(uint64_t seed, size_t expected)
      : seed_(seed), arena_(expected * 3 * sizeof(uint64_t) + 1024), hashes_(&arena_) {}

 private:
  struct Identity {
    size_t operator()(uint64_t h) const noexcept { return static_cast<size_t>(h); }
  };
  uint64_t seed_;
  std::pmr::monotonic_buffer_resource arena_;  // before hashes_: it must outlive them
  std::pmr::unordered_set<uint64_t, Identity> hashes_;
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
