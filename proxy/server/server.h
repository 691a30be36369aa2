#pragma once
// The process: owns the snapshot store (the current config::Snapshot and its generation), the
// workers, and the main thread's event loop with the signal handlers (SIGHUP reload,
// SIGTERM/SIGINT drain).
//
// Thread: main.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/snapshot.h"
#include "proxy/admin/admin.h"
#include "proxy/net/libevent_ptr.h"
#include "proxy/net/listener.h"
#include "proxy/observe/metrics.h"
#include "proxy/rollout/manager.h"
#include "proxy/server/config_watch.h"
#include "proxy/server/worker.h"

namespace sy::proxy {

struct ServerOptions {
  std::string config_path;
  uint32_t workers = 0;  // 0 = from the config (server.workers; 0 there = one per core)
  bool workers_set = false;
  std::string pid_file;
};

// Implements AdminBackend for the admin endpoint (admin/ declares it so it never includes this
// folder).
class Server : public AdminBackend {
 public:
  explicit Server(ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Loads the config, starts the workers and runs until drained. Returns the exit code.
  int run();

  // Reads, validates and publishes the config file. Returns false with `error` set (the old
  // snapshot stays) when the file is invalid.
  bool reload(std::string& error) override;

  // AdminBackend (Thread: main).
  config::SnapshotConstSharedPtr snapshot() const override { return snapshot_; }
  uint64_t generation() const override { return generation_; }
  time_t loadedAt() const override { return loaded_at_; }
  uint64_t reloadCount(bool success) const override {
    return success ? reloads_ok_ : reloads_failed_;
  }
  const std::string& configPath() const override { return options_.config_path; }
  const MetricsRegistry& metrics() const override { return *metrics_; }
  const HealthRegistry& health() const override { return *health_; }
  uint64_t clientConnections() const override { return shared_.connections.client.load(); }
  uint64_t upstreamConnections() const override { return shared_.connections.upstream.load(); }
  const DiffLog& shadowDiffs() const override { return shared_.diffs; }
  uint64_t accessLogDroppedLines() const override { return shared_.access_log.droppedLines(); }
  RolloutManager* rollouts() override { return rollouts_.get(); }
  bool draining() const override { return stopping_; }

  SharedState& shared() { return shared_; }

 private:
  static void onSignal(evutil_socket_t sig, short, void* ctx) noexcept;
  static void onDrainCheck(evutil_socket_t, short, void* ctx) noexcept;
  void handleSignal(int sig);
  void shutdown();
  // Closes every worker's listeners and waits (up to 1 s) until they all have.
  void stopAccepting();
  // The Publication of the current snapshot (state objects made on this thread).
  Publication publication();
  // Makes `loaded` (a file just loaded) current under a new generation: as it is, or, with
  // rollouts, a copy with each rollout's share in its weights.
  void adopt(std::shared_ptr<config::Snapshot> loaded);
  // A rollout's share changed: publishes a new generation of the same file with new weights.
  void publishShares();
  // A copy of loaded_ with each rollout's share in its route's weights (same generation).
  std::shared_ptr<config::Snapshot> withShares() const;
  // Starts or stops the file watcher to match server.watch_config of the current snapshot.
  void updateWatcher();
  // The watcher saw a change: reload if the content differs from what was last read.
  void onConfigFileChanged();
  // Opens, for every worker, a socket for each address of `next` not in `current` (all of
  // them when `current` is null). On failure nothing stays open and `error` says why.
  bool openListeners(const config::Snapshot& next, const config::Snapshot* current,
                     std::vector<std::vector<ListenSocket>>& out, std::string& error);

  ServerOptions options_;
  SharedState shared_;
  EventBasePtr base_;
  std::vector<EventPtr> signal_events_;
  EventPtr drain_check_;  // while draining: polls whether every worker has finished
  config::SnapshotConstSharedPtr loaded_;    // the config file as loaded
  config::SnapshotConstSharedPtr snapshot_;  // what the workers use: loaded_ + rollout shares
  uint64_t generation_ = 0;
  time_t loaded_at_ = 0;
  uint64_t reloads_ok_ = 0;
  uint64_t reloads_failed_ = 0;
  std::unique_ptr<MetricsRegistry> metrics_;
  std::unique_ptr<HealthRegistry> health_;
  std::unique_ptr<HealthChecker> checker_;
  std::unique_ptr<RolloutManager> rollouts_;
  std::unique_ptr<AdminServer> admin_;
  std::unique_ptr<ConfigWatcher> watcher_;
  std::string last_content_;  // the config file as last read by a load or reload
  std::vector<std::unique_ptr<Worker>> workers_;
  bool stopping_ = false;
};

}  // namespace sy::proxy
