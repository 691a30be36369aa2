#include "config/key_set.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "common/unique_fd.h"

// Header-only XXH3, as proxy/routing/splitter.cc uses it.
#define XXH_INLINE_ALL
#include <xxhash.h>

namespace sy::config {

std::shared_ptr<const KeySet> KeySet::parse(std::string_view text, uint64_t seed) {
  size_t lines = 0;
  for (char c : text) lines += c == '\n' ? 1 : 0;
  auto set = std::make_shared<KeySet>(seed, lines + 1);
  // Sized once: a rehash would leave the old bucket arrays behind in the monotonic arena.
  set->hashes_.reserve(lines + 1);
  forEachKeyLine(text, [&](std::string_view key) {
    set->hashes_.insert(XXH3_64bits_withSeed(key.data(), key.size(), seed));
  });
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
  return hashes_.count(XXH3_64bits_withSeed(key.data(), key.size(), seed_)) != 0;
}

}  // namespace sy::config
