#pragma once
// Every route's rollout, on the main thread (SPEC §11): keeps one RolloutEngine per route that
// has a [routes.rollout], with its journal; every 250 ms reads the route's evidence counters
// (summed over the workers' slots, as the metrics are), lets each engine act, journals what it
// decided and only then applies it; when a share changed, asks the server to publish a new
// snapshot generation with the new weights (no file reload). Operator calls come from the admin
// endpoint on the same thread.
//
// A rollout with analysis.source = "prometheus" (SPEC §14) keeps no journal: its engine is fed
// by a FleetRollout (fleet.h) from queries to Prometheus, at most one in flight per rollout,
// polled about every lag / 4: the fleet's start (on_load), the operator events every replica
// exported, and the intervals that became due (all of them in one range query after a restart).
// Until this replica has caught up with the fleet the route gets the baseline only.
//
// Thread: main.

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <event2/event.h>

#include "config/snapshot.h"
#include "proxy/net/libevent_ptr.h"
#include "proxy/observe/metrics.h"
#include "proxy/rollout/fleet.h"
#include "proxy/rollout/journal.h"
#include "proxy/rollout/notify.h"
#include "proxy/rollout/prometheus_client.h"
#include "proxy/rollout/rollout.h"

namespace sy::proxy {

class RolloutManager {
 public:
  // `publish` runs after a share changed by itself or by an operator's call.
  RolloutManager(event_base* base, const MetricsRegistry& metrics, std::function<void()> publish);
  ~RolloutManager();
  RolloutManager(const RolloutManager&) = delete;
  RolloutManager& operator=(const RolloutManager&) = delete;

  // Brings the rollouts in line with `snapshot` (at start and on every reload, before it is
  // published): a route whose rollout id is unchanged keeps its engine; a new id opens its
  // journal (resuming the state it records, if any) and, with start = "on_load", starts; a
  // removed block drops the engine (the route goes back to its configured weights). False with
  // `error` set, and nothing changed, when a journal cannot be opened or written.
  bool reconcile(const config::Snapshot& snapshot, std::string& error);

  // Sets the weights of each route with a rollout in `snapshot` (a copy of the loaded one) to
  // give its variant the rollout's current share.
  void applyShares(config::Snapshot& snapshot) const;
  bool empty() const { return entries_.empty(); }

  // A rollout judged through Prometheus: where this replica stands with the fleet.
  struct Fleet {
    std::unique_ptr<FleetRollout> rollout;
    uint64_t token = 0;          // answers carry it: one for a replaced rollout is dropped
    int64_t loaded_ms = 0;       // on_load: this replica's own candidate for the fleet's start
    bool in_flight = false;      // a query is under way
    int64_t next_start_ms = 0;   // when to ask for the fleet's start again
    int64_t next_events_ms = 0;  // when to read the operator events again
    int64_t retry_after_ms = 0;  // after a failed query
    bool events_read = false;
    bool caught_up = false;  // has evaluated every due interval once since it was loaded
    uint64_t due = 0;        // intervals due at the latest round
    uint64_t errors = 0;     // failed queries (switchyard_rollout_prometheus_errors_total)
    std::string error;       // the failure of the latest query, "" once one succeeded
    int64_t error_since_ms = 0;
    // The route's counters when this rollout was loaded: the exported series count from there,
    // so they start near 0 (a series that appears counts whole in its first interval).
    RouteMetrics::Totals variant_base;
    RouteMetrics::Totals baseline_base;
    RouteMetrics::ShadowTotals shadow_base;
  };

  struct Entry {
    std::unique_ptr<RolloutEngine> engine;
    std::unique_ptr<RolloutJournal> journal;        // local rollouts only
    std::unique_ptr<Fleet> fleet;                   // Prometheus rollouts only
    std::array<uint64_t, kRolloutEvents> events{};  // events taken by this process
    uint64_t notify_failures = 0;
    size_t route_index = 0;  // in the current snapshot, for the order of /rollouts

    // The variant's share this replica routes with: the engine's, except that a Prometheus
    // rollout gives 0 until this replica has caught up with the fleet.
    double share() const { return fleet != nullptr && !fleet->caught_up ? 0.0 : engine->percent(); }
  };
  // By route name.
  const std::map<std::string, Entry>& entries() const { return entries_; }
  // In the order of the routes of the config.
  std::vector<const Entry*> ordered() const;

  enum class CallResult : uint8_t { Ok, NotFound, Conflict, Failed };
  // An operator's call (POST /rollouts/{route}/...). Conflict with `error` = why not now;
  // Failed when the journal could not be written (nothing changed).
  CallResult call(const std::string& route, RolloutCommand command, bool to_last,
                  const std::string& reason, std::string& error);

  // Runs one round now (the timer does it every 250 ms). Public for tests.
  void tick();

  // This process's random id, which marks the operator events it exports (SPEC §14).
  const std::string& replica() const { return replica_; }

 private:
  static void onTimer(evutil_socket_t, short, void* ctx) noexcept;
  // Journals `record`, applies it, notifies; false (nothing applied) when the journal failed.
  bool take(Entry& entry, RolloutRecord record, std::string& error);
  // Logs, counts and notifies a record already applied (Prometheus rollouts).
  void announce(Entry& entry, const RolloutRecord& record);
  IntervalEvidence evidence(const RolloutEngine& engine) const;
  // One round of a Prometheus rollout; true when its share changed.
  bool fleetTick(Entry& entry, int64_t now);
  void fleetQuery(Entry& entry, const std::string& target,
                  std::function<void(Entry&, const PromAnswer&, int64_t)> handle);

  event_base* base_;
  const MetricsRegistry& metrics_;
  std::function<void()> publish_;
  std::string state_dir_;
  std::map<std::string, Entry> entries_;
  EventPtr timer_;
  RolloutNotifier notifier_;
  std::string replica_;
  uint64_t next_token_ = 1;
  // Last: destroyed first, so no answer arrives for an entry already gone.
  PrometheusClient prometheus_;
};

// Wall clock, milliseconds since the epoch.
int64_t wallClockMs();

}  // namespace sy::proxy
