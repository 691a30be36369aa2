#pragma once
// Server selection within one pool of one worker: which usable server the next connection goes
// to. Behind an interface so policies can be added (issue 15 adds weights) without touching
// the pool.
//
// Thread: worker-local.

#include <cstddef>
#include <cstdint>
#include <memory>

#include "config/snapshot.h"

namespace sy::proxy {

// What a policy may look at: the pool's servers, by index.
class ServerView {
 public:
  virtual ~ServerView() = default;
  virtual size_t size() const = 0;
  virtual bool usable(size_t server) const = 0;      // healthy and not ejected
  virtual uint32_t active(size_t server) const = 0;  // this worker's connections serving a request
};

class Selection {
 public:
  virtual ~Selection() = default;
  // A usable server other than `exclude` (-1: none) if there is one, else `exclude` if it is
  // usable, else servers.size().
  virtual size_t pick(const ServerView& servers, int exclude) = 0;
};

// Round robin, or least connections (ties broken round robin). `start` staggers workers so
// that, with few requests, the servers still see an even share.
std::unique_ptr<Selection> makeSelection(config::Balance balance, size_t start);

}  // namespace sy::proxy
