#pragma once
// Every route's rollout, on the main thread (SPEC §11): keeps one RolloutEngine per route that
// has a [routes.rollout], with its journal; every 250 ms reads the route's evidence counters
// (summed over the workers' slots, as the metrics are), lets each engine act, journals what it
// decided and only then applies it; when a share changed, asks the server to publish a new
// snapshot generation with the new weights (no file reload). Operator calls come from the admin
// endpoint on the same thread.
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
#include "proxy/rollout/journal.h"
#include "proxy/rollout/notify.h"
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

  struct Entry {
    std::unique_ptr<RolloutEngine> engine;
    std::unique_ptr<RolloutJournal> journal;
    std::array<uint64_t, kRolloutEvents> events{};  // events taken by this process
    uint64_t notify_failures = 0;
    size_t route_index = 0;  // in the current snapshot, for the order of /rollouts
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

 private:
  static void onTimer(evutil_socket_t, short, void* ctx) noexcept;
  // Journals `record`, applies it, notifies; false (nothing applied) when the journal failed.
  bool take(Entry& entry, RolloutRecord record, std::string& error);
  IntervalEvidence evidence(const RolloutEngine& engine) const;

  event_base* base_;
  const MetricsRegistry& metrics_;
  std::function<void()> publish_;
  std::string state_dir_;
  std::map<std::string, Entry> entries_;
  EventPtr timer_;
  RolloutNotifier notifier_;
};

// Wall clock, milliseconds since the epoch.
int64_t wallClockMs();

}  // namespace sy::proxy
