#pragma once
// One worker's pools for the pools of the current snapshot, by config pool. On a reload a pool
// whose servers and TLS settings did not change carries over with its idle connections; the
// others are retired (see UpstreamPool::retire). Pools of older snapshots stay alive through
// the shared_ptrs their busy connections hold.
//
// Thread: worker-local.

#include <memory>
#include <unordered_map>
#include <vector>

#include "config/snapshot.h"
#include "proxy/upstream/health.h"
#include "proxy/upstream/pool.h"

namespace sy::proxy {

class PoolSet {
 public:
  explicit PoolSet(WorkerContext& worker) : worker_(worker) {}
  ~PoolSet() { retireAll(); }
  PoolSet(const PoolSet&) = delete;
  PoolSet& operator=(const PoolSet&) = delete;

  // From now on the set holds a pool for each of `pools` (kept or new).
  void update(const std::vector<const config::Pool*>& pools, const HealthTable& health);
  // The pool for `pool` of the current snapshot; null if it is not one of them.
  UpstreamPool* find(const config::Pool* pool) const {
    auto it = pools_.find(pool);
    return it == pools_.end() ? nullptr : it->second.get();
  }
  void retireAll();

 private:
  WorkerContext& worker_;
  std::unordered_map<const config::Pool*, std::shared_ptr<UpstreamPool>> pools_;
};

}  // namespace sy::proxy
