#include "proxy/rollout/manager.h"

#include <time.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

#include "common/log.h"
#include "proxy/rollout/prometheus_api.h"
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

// Prometheus rollouts: how often to ask (about the scrape pace, which lag must exceed), how
// long to wait for an answer, and how far back the fleet's start is looked for.
int64_t pollMs(const config::RolloutAnalysis& a) {
  return std::clamp<int64_t>(static_cast<int64_t>(a.lag_ms / 4), 250, 5000);
}
uint64_t timeoutMs(const config::RolloutAnalysis& a) {
  return std::clamp<uint64_t>(a.lag_ms / 2, 1000, 10000);
}
constexpr uint64_t kStartLookbackMs = 24 * 3600 * 1000;
// How far before the start operator events are looked for (an abort while pending).
constexpr uint64_t kEventsMarginMs = 5 * 60 * 1000;
// Intervals per range query (Prometheus answers at most 11,000 points per series).
constexpr uint64_t kIntervalsPerQuery = 1000;

std::string randomReplicaId() {
  std::random_device rd;
  const uint64_t id = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  char buf[24];
  snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(id));
  return buf;
}

}  // namespace

int64_t wallClockMs() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

RolloutManager::RolloutManager(event_base* base, const MetricsRegistry& metrics,
                               std::function<void()> publish)
    : base_(base),
      metrics_(metrics),
      publish_(std::move(publish)),
      notifier_(base),
      replica_(randomReplicaId()),
      prometheus_(base) {
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
    const bool prometheus = route.rollout->analysis.prometheus;
    if (it != entries_.end() && it->second.engine->settings().id == route.rollout->id &&
        (it->second.fleet != nullptr) == prometheus) {
      continue;
    }
    Entry entry;
    entry.engine = std::make_unique<RolloutEngine>(route.name, *route.rollout);
    if (prometheus) {
      // No journal: the state is rebuilt from Prometheus (SPEC §14).
      entry.fleet = std::make_unique<Fleet>();
      entry.fleet->rollout = std::make_unique<FleetRollout>(*route.rollout, replica_);
      entry.fleet->token = next_token_++;
      entry.fleet->loaded_ms = now;
      if (const RouteMetrics* m = metrics_.find(route.name)) {
        entry.fleet->variant_base = m->totals(route.rollout->variant);
        entry.fleet->baseline_base = m->totals(route.rollout->baseline);
        entry.fleet->shadow_base = m->shadowTotals();
      }
      SY_LOG(Info, "rollout %s/%s: judged through Prometheus at %s (replica %s)",
             route.name.c_str(), route.rollout->id.c_str(),
             route.rollout->analysis.prometheus_url.c_str(), replica_.c_str());
      opened.emplace(route.name, std::move(entry));
      continue;
    }
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
      if (it->second.fleet != nullptr) {
        // The fold starts over with the new settings, as every replica's does. A new interval
        // length makes the intervals read so far useless: caught up again only once re-read.
        Fleet& f = *it->second.fleet;
        if (route.rollout->analysis.interval_ms !=
            it->second.engine->settings().analysis.interval_ms) {
          f.caught_up = false;
        }
        f.rollout->updateSettings(*it->second.engine, *route.rollout);
      } else {
        it->second.engine->updateSettings(*route.rollout);
      }
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
    const double share = it->second.share();
    route.weights = weightsWithShare(route, route.rollout->variant, share);
    route.rollout_segments = rolloutSegments(*route.rollout, engine.stage(), share);
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
  announce(entry, record);
  engine.apply(std::move(record));
  return true;
}

void RolloutManager::announce(Entry& entry, const RolloutRecord& record) {
  RolloutEngine& engine = *entry.engine;
  const std::string& id = engine.settings().id;
  ++entry.events[static_cast<size_t>(record.event)];
  SY_LOG(Info, "rollout %s/%s: %s -> %s, stage %u, %g%%: %s", engine.route().c_str(), id.c_str(),
         kRolloutEventNames[static_cast<size_t>(record.event)],
         kRolloutStateNames[static_cast<size_t>(record.state)], record.stage, record.percent,
         record.verdict.c_str());
  const std::string& url = engine.settings().notify_url;
  // A replica catching up with the fleet replays events the others announced long ago.
  const bool catching_up = entry.fleet != nullptr && !entry.fleet->caught_up;
  if (!url.empty() && !catching_up) {
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
}

void RolloutManager::tick() {
  const int64_t now = wallClockMs();
  bool changed = false;
  for (auto& [name, entry] : entries_) {
    if (entry.fleet != nullptr) {
      changed = fleetTick(entry, now) || changed;
      continue;
    }
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
  if (entry.fleet != nullptr) {
    if (!entry.fleet->caught_up) {
      error = "this replica is still reading the rollout's state from Prometheus";
      return CallResult::Conflict;
    }
    const double before = entry.share();
    std::vector<RolloutRecord> taken;
    if (!entry.fleet->rollout->command(*entry.engine, command, wallClockMs(), to_last, reason,
                                       error, taken)) {
      return CallResult::Conflict;
    }
    for (const RolloutRecord& r : taken) announce(entry, r);
    if (entry.share() != before) publish_();
    return CallResult::Ok;
  }
  std::optional<RolloutRecord> record =
      entry.engine->command(command, wallClockMs(), to_last, reason, error);
  if (!record) return CallResult::Conflict;
  const double before = entry.engine->percent();
  const uint32_t stage_before = entry.engine->stage();
  if (!take(entry, std::move(*record), error)) return CallResult::Failed;
  if (entry.engine->percent() != before || entry.engine->stage() != stage_before) publish_();
  return CallResult::Ok;
}

void RolloutManager::fleetQuery(Entry& entry, const std::string& target,
                                std::function<void(Entry&, const PromAnswer&, int64_t)> handle) {
  Fleet& f = *entry.fleet;
  const config::RolloutAnalysis& a = entry.engine->settings().analysis;
  f.in_flight = true;  // before get(): its answer may come before get() returns
  const std::string route = entry.engine->route();
  const uint64_t token = f.token;
  prometheus_.get(
      a.prometheus_url, target, timeoutMs(a),
      [this, route, token, handle = std::move(handle)](PromAnswer answer) {
        auto it = entries_.find(route);
        if (it == entries_.end() || it->second.fleet == nullptr ||
            it->second.fleet->token != token) {
          return;  // the rollout was replaced or removed meanwhile
        }
        Entry& e = it->second;
        Fleet& fl = *e.fleet;
        const RolloutEngine& engine = *e.engine;
        fl.in_flight = false;
        const int64_t now = wallClockMs();
        if (!answer.ok) {
          ++fl.errors;
          if (fl.error.empty()) {
            fl.error_since_ms = now;
            SY_LOG(Warn, "rollout %s/%s: Prometheus: %s; the rollout holds", route.c_str(),
                   engine.settings().id.c_str(), answer.error.c_str());
          }
          fl.error = answer.error;
          fl.retry_after_ms = now + pollMs(engine.settings().analysis);
          return;
        }
        if (!fl.error.empty()) {
          SY_LOG(Info, "rollout %s/%s: Prometheus answers again", route.c_str(),
                 engine.settings().id.c_str());
          fl.error.clear();
          fl.error_since_ms = 0;
        }
        const double before = e.share();
        handle(e, answer, now);
        if (!fl.caught_up && fl.rollout->start() && fl.events_read) {
          const config::RolloutAnalysis& an = engine.settings().analysis;
          fl.due = evaluableIntervals(now, *fl.rollout->start(), an.interval_ms, an.lag_ms);
          if (fl.rollout->evaluated() + 1 >= fl.due) {
            fl.caught_up = true;
            SY_LOG(Info,
                   "rollout %s/%s: caught up with the fleet: %s, stage %u, %g%% after %llu "
                   "intervals",
                   route.c_str(), engine.settings().id.c_str(),
                   kRolloutStateNames[static_cast<size_t>(engine.state())], engine.stage(),
                   engine.percent(), static_cast<unsigned long long>(fl.rollout->evaluated()));
          }
        }
        if (e.share() != before) publish_();
      });
}

bool RolloutManager::fleetTick(Entry& entry, int64_t now) {
  Fleet& f = *entry.fleet;
  RolloutEngine& engine = *entry.engine;
  const config::Rollout& s = engine.settings();
  const config::RolloutAnalysis& a = s.analysis;
  const double before = entry.share();
  FleetRollout& fleet = *f.rollout;
  if (!fleet.start() && s.start_unix_ms && now >= *s.start_unix_ms) {
    fleet.setStart(engine, *s.start_unix_ms);
  }
  if (fleet.start()) {
    f.due = evaluableIntervals(now, *fleet.start(), a.interval_ms, a.lag_ms);
  }
  if (f.in_flight || now < f.retry_after_ms) return entry.share() != before;
  const std::string& route = engine.route();
  if (!fleet.start()) {
    if (s.start_unix_ms || now < f.next_start_ms) return false;
    // on_load: the earliest start any replica exported. Taken once it is older than lag: a
    // replica that loaded earlier has been scraped by then, so every replica adopts the same.
    f.next_start_ms = now + pollMs(a);
    fleetQuery(entry, instantQueryTarget(startQuery(route, s.id, kStartLookbackMs), now),
               [](Entry& e, const PromAnswer& answer, int64_t at) {
                 double v = std::nan("");
                 for (const PromSeries& series : answer.series) {
                   if (!series.points.empty()) v = series.points.back().second;
                 }
                 if (!std::isfinite(v)) return;
                 const int64_t start = std::llround(v * 1000.0);
                 const auto lag = static_cast<int64_t>(e.engine->settings().analysis.lag_ms);
                 if (start + lag > at) return;
                 SY_LOG(Info, "rollout %s/%s: the fleet started it at %s",
                        e.engine->route().c_str(), e.engine->settings().id.c_str(),
                        formatTime(start).c_str());
                 e.fleet->rollout->setStart(*e.engine, start);
               });
    return false;
  }
  const int64_t start = *fleet.start();
  if (now >= f.next_events_ms) {
    f.next_events_ms = now + pollMs(a);
    const uint64_t lookback =
        static_cast<uint64_t>(std::max<int64_t>(now - std::min(start, f.loaded_ms), 0)) +
        kEventsMarginMs;
    fleetQuery(entry, instantQueryTarget(eventsQuery(route, s.id, lookback), now),
               [this](Entry& e, const PromAnswer& answer, int64_t) {
                 for (const RolloutRecord& r :
                      e.fleet->rollout->mergeEvents(*e.engine, eventsFromAnswer(answer))) {
                   announce(e, r);
                 }
                 e.fleet->events_read = true;
               });
    return entry.share() != before;
  }
  if (fleet.evaluated() < f.due) {
    const uint64_t first = fleet.evaluated() + 1;
    const uint64_t last = std::min(f.due, first + kIntervalsPerQuery - 1);
    const int64_t first_end = intervalEndMs(start, a.interval_ms, first);
    const std::string target =
        first == last
            ? instantQueryTarget(evidenceQuery(route, s.id, a.interval_ms, first_end), first_end)
            : rangeQueryTarget(evidenceQuery(route, s.id, a.interval_ms, std::nullopt), first_end,
                               intervalEndMs(start, a.interval_ms, last), a.interval_ms);
    fleetQuery(entry, target, [this, first, last](Entry& e, const PromAnswer& answer, int64_t) {
      FleetRollout& fr = *e.fleet->rollout;
      if (!fr.start() || fr.evaluated() + 1 != first) return;  // overtaken by a rebuild
      const config::Rollout& rs = e.engine->settings();
      const std::map<int64_t, IntervalEvidence> by_time =
          evidenceByTime(answer, rs.variant, rs.baseline);
      for (uint64_t k = first; k <= last; ++k) {
        auto it = by_time.find(intervalEndMs(*fr.start(), rs.analysis.interval_ms, k));
        for (const RolloutRecord& r :
             fr.addInterval(*e.engine, it == by_time.end() ? IntervalEvidence{} : it->second)) {
          announce(e, r);
        }
      }
    });
  }
  return entry.share() != before;
}

}  // namespace sy::proxy
