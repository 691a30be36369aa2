#include "proxy/upstream/pool_set.h"

namespace sy::proxy {

void PoolSet::update(const std::vector<const config::Pool*>& pools, const HealthTable& health) {
  std::unordered_map<const config::Pool*, std::shared_ptr<UpstreamPool>> next;
  for (const config::Pool* cfg : pools) {
    if (next.count(cfg)) continue;
    std::shared_ptr<UpstreamPool> kept;
    for (auto& [old_cfg, old_pool] : pools_) {
      if (old_pool->name() == cfg->name && old_pool->sameServers(*cfg)) {
        kept = old_pool;
        kept->updateTls(*cfg);
        break;
      }
    }
    next.emplace(cfg, kept ? std::move(kept) : UpstreamPool::create(worker_, *cfg, health.at(cfg)));
  }
  // Pools the new snapshot does not keep: close their idle connections (see retire()).
  for (auto& [old_cfg, old_pool] : pools_) {
    bool kept = false;
    for (const auto& [cfg, pool] : next) kept = kept || pool == old_pool;
    if (!kept) old_pool->retire();
  }
  pools_ = std::move(next);
}

void PoolSet::retireAll() {
  for (auto& [cfg, pool] : pools_) pool->retire();
}

}  // namespace sy::proxy
