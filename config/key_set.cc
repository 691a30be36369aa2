#include "config/key_set.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <random>

#include "common/unique_fd.h"

// Header-only XXH3, as proxy/routing/splitter.cc uses it.
#define XXH_INLINE_ALL
#include <xxhash.h>

namespace sy::config {

std::shared_ptr<const KeySet> KeySet::parse(std::string_view text, uint64_t seed) {
  auto set = std::make_shared<KeySet>();
  set->seed_ = seed;
  size_t lines = 0;
  for (char c : text) lines += c == '\n' ? 1 : 0;
  set->hashes_.reserve(lines + 1);
  forEachKeyLine(text, [&](std::string_view key) {
    set->hashes_.push_back(XXH3_64bits_withSeed(key.data(), key.size(), seed));
  });
  std::sort(set->hashes_.begin(), set->hashes_.end());
  set->hashes_.erase(std::unique(set->hashes_.begin(), set->hashes_.end()), set->hashes_.end());
  set->hashes_.shrink_to_fit();
  // About 4 hashes per directory entry (hashes are uniform), 1..24 bits.
  const unsigned bits =
      std::clamp<unsigned>(static_cast<unsigned>(std::bit_width(set->hashes_.size())), 3u, 26u) - 2;
  set->shift_ = 64 - bits;
  set->directory_.resize((size_t{1} << bits) + 1);
  size_t i = 0;
  for (size_t prefix = 0; prefix < set->directory_.size(); ++prefix) {
    while (i < set->hashes_.size() && (set->hashes_[i] >> set->shift_) < prefix) ++i;
    set->directory_[prefix] = static_cast<uint32_t>(i);
  }
  return set;
}

std::shared_ptr<const KeySet> KeySet::load(const std::string& path, std::string* error) {
  const UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  struct stat info {};
  if (!fd || fstat(fd.get(), &info) != 0) {
    *error = "cannot read \"" + path + "\": " + std::strerror(errno);
    return nullptr;
  }
  if (S_ISDIR(info.st_mode)) {
    *error = "cannot read \"" + path + "\": is a directory";
    return nullptr;
  }
  std::string text;
  text.reserve(static_cast<size_t>(info.st_size));
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      *error = "cannot read \"" + path + "\": " + std::strerror(errno);
      return nullptr;
    }
    text.append(buf, static_cast<size_t>(n));
  }
  std::random_device random;
  const uint64_t seed = (static_cast<uint64_t>(random()) << 32) ^ random();
  return parse(text, seed);
}

bool KeySet::contains(std::string_view key) const {
  const uint64_t hash = XXH3_64bits_withSeed(key.data(), key.size(), seed_);
  const size_t prefix = static_cast<size_t>(hash >> shift_);
  const auto first = hashes_.begin() + directory_[prefix];
  const auto last = hashes_.begin() + directory_[prefix + 1];
  return std::binary_search(first, last, hash);
}

}  // namespace sy::config
