#include "proxy/rollout/manager.h"

#include <time.h>

#include <algorithm>

#include "common/log.h"
#include "proxy/routing/splitter.h"

namespace sy::proxy {
namespace {

constexpr timeval kTickInterval{0, 250000};

// The engine acts at most this often per route per round (a restart may need a start and a
// fail in one round); more would be a loop.
constexpr int kRecordsPerRound = 4;

void addArm(const RouteMetrics::Totals& t, ArmCounts& counts, LatencyHistogram& latency) {
  counts.requests = t.judged;
  counts.errors = t.judged_errors;
  latency = t.latency;
}

}  // namespace

int64_t wallClockMs() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

RolloutManager::RolloutManager(event_base* base, const MetricsRegistry& metrics,
                               std::function<void()> publish)
    : base_(base), metrics_(metrics), publish_(std::move(publish)), notifier_(base) {
  timer_.reset(event_new(base_, -1, EV_PERSIST, &RolloutManager::onTimer, this));
  event_add(timer_.get(), &kTickInterval);
}

RolloutManager::~RolloutManager() = default;

void RolloutManager::onTimer(evutil_socket_t, short, void* ctx) noexcept {
  static_cast<RolloutManager*>(ctx)->tick();
}

bool RolloutManager::reconcile(const config::Snapshot& snapshot, std::string& error) {
  const int64_t now = wallClockMs();
  // First every new rollout, on the side: its journal opened and replayed, its start journaled.
  // The current entries change only once all of that worked.
  std::map<std::string, Entry> opened;
  for (const config::Route& route : snapshot.routes) {
    if (!route.rollout) continue;
    auto it = entries_.find(route.name);
    if (it != entries_.end() && it->second.engine->settings().id == route.rollout->id) continue;
    Entry entry;
    entry.engine = std::make_unique<RolloutEngine>(route.name, *route.rollout);
    std::vector<RolloutRecord> records;
    entry.journal = RolloutJournal::open(snapshot.server.state_dir, route.name, route.rollout->id,
                                         records, error);
    if (!entry.journal) {
      error = "route " + route.name + ": rollout " + route.rollout->id + ": " + error;
      return false;
    }
    for (RolloutRecord& r : records) entry.engine->apply(std::move(r), /*replayed=*/true);
    if (!records.empty()) {
      SY_LOG(Info, "rollout %s/%s: resumed from %s: %s, stage %u, %g%%", route.name.c_str(),
             route.rollout->id.c_str(), entry.journal->path().c_str(),
             kRolloutStateNames[static_cast<size_t>(entry.engine->state())], entry.engine->stage(),
             entry.engine->percent());
    } else if (auto start = entry.engine->proposeStart(now)) {
      if (!take(entry, std::move(*start), error)) return false;
    }
    opened.emplace(route.name, std::move(entry));
  }

  std::map<std::string, Entry> next;
  for (size_t i = 0; i < snapshot.routes.size(); ++i) {
    const config::Route& route = snapshot.routes[i];
    if (!route.rollout) continue;
    auto it = opened.find(route.name);
    if (it == opened.end()) {
      it = entries_.find(route.name);  // kept: same route, same id
      it->second.engine->updateSettings(*route.rollout);
    }
    Entry& entry = next.emplace(route.name, std::move(it->second)).first->second;
    entry.route_index = i;
  }
  for (auto& [name, entry] : entries_) {
    if (!next.count(name)) {
      SY_LOG(Info, "rollout %s/%s: removed from the config; the route has its configured weights",
             name.c_str(), entry.engine->settings().id.c_str());
    }
  }
  entries_ = std::move(next);
  return true;
}

void RolloutManager::applyShares(config::Snapshot& snapshot) const {
  for (config::Route& route : snapshot.routes) {
    if (!route.rollout) continue;
    auto it = entries_.find(route.name);
    if (it == entries_.end()) continue;
    const RolloutEngine& engine = *it->second.engine;
    route.weights = weightsWithShare(route, route.rollout->variant, engine.percent());
    route.rollout_segments = rolloutSegments(*route.rollout, engine.stage(), engine.percent());
  }
}

std::vector<const RolloutManager::Entry*> RolloutManager::ordered() const {
  std::vector<const Entry*> out;
  for (const auto& [name, entry] : entries_) out.push_back(&entry);
  std::sort(out.begin(), out.end(),
            [](const Entry* a, const Entry* b) { return a->route_index < b->route_index; });
  return out;
}

IntervalEvidence RolloutManager::evidence(const RolloutEngine& engine) const {
  IntervalEvidence e;
  const RouteMetrics* m = metrics_.find(engine.route());
  if (m == nullptr) return e;
  addArm(m->totals(engine.settings().variant), e.variant, e.variant_latency);
  addArm(m->totals(engine.settings().baseline), e.baseline, e.baseline_latency);
  const RouteMetrics::ShadowTotals shadow = m->shadowTotals();
  e.shadow_compared = shadow.compared;
  e.shadow_mismatched = shadow.mismatched;
  return e;
}

bool RolloutManager::take(Entry& entry, RolloutRecord record, std::string& error) {
  RolloutEngine& engine = *entry.engine;
  const std::string& id = engine.settings().id;
  if (!entry.journal->append(record, error)) {
    SY_LOG(Error, "rollout %s/%s: %s; the %s is not taken", engine.route().c_str(), id.c_str(),
           error.c_str(), kRolloutEventNames[static_cast<size_t>(record.event)]);
    return false;
  }
  ++entry.events[static_cast<size_t>(record.event)];
  SY_LOG(Info, "rollout %s/%s: %s -> %s, stage %u, %g%%: %s", engine.route().c_str(), id.c_str(),
         kRolloutEventNames[static_cast<size_t>(record.event)],
         kRolloutStateNames[static_cast<size_t>(record.state)], record.stage, record.percent,
         record.verdict.c_str());
  const std::string& url = engine.settings().notify_url;
  if (!url.empty()) {
    nlohmann::ordered_json j;
    j["route"] = engine.route();
    j["rollout"] = id;
    j["event"] = kRolloutEventNames[static_cast<size_t>(record.event)];
    j["state"] = kRolloutStateNames[static_cast<size_t>(record.state)];
    j["stage"] = record.stage;
    j["percent"] = record.percent;
    j["reason"] = record.reason;
    j["verdict"] = record.verdict;
    j["at"] = formatTime(record.at_ms);
    const std::string route = engine.route();
    notifier_.post(url, j.dump(), [this, route] {
      auto it = entries_.find(route);
      if (it != entries_.end()) ++it->second.notify_failures;
    });
  }
  engine.apply(std::move(record));
  return true;
}

void RolloutManager::tick() {
  const int64_t now = wallClockMs();
  bool changed = false;
  for (auto& [name, entry] : entries_) {
    for (int i = 0; i < kRecordsPerRound; ++i) {
      std::optional<RolloutRecord> record = entry.engine->tick(now, evidence(*entry.engine));
      if (!record) break;
      const double before = entry.engine->percent();
      const uint32_t stage_before = entry.engine->stage();
      std::string error;
      if (!take(entry, std::move(*record), error)) break;
      // A new stage may add segments even where the share stays (SPEC §13).
      changed =
          changed || entry.engine->percent() != before || entry.engine->stage() != stage_before;
    }
  }
  if (changed) publish_();
}

RolloutManager::CallResult RolloutManager::call(const std::string& route, RolloutCommand command,
                                                bool to_last, const std::string& reason,
                                                std::string& error) {
  auto it = entries_.find(route);
  if (it == entries_.end()) return CallResult::NotFound;
  Entry& entry = it->second;
  std::optional<RolloutRecord> record =
      entry.engine->command(command, wallClockMs(), to_last, reason, error);
  if (!record) return CallResult::Conflict;
  const double before = entry.engine->percent();
  const uint32_t stage_before = entry.engine->stage();
  if (!take(entry, std::move(*record), error)) return CallResult::Failed;
  if (entry.engine->percent() != before || entry.engine->stage() != stage_before) publish_();
  return CallResult::Ok;
}

}  // namespace sy::proxy
