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
#include "proxy/libevent_ptr.h"
#include "proxy/worker.h"

namespace sy::proxy {

struct ServerOptions {
  std::string config_path;
  uint32_t workers = 0;  // 0 = from the config (server.workers; 0 there = one per core)
  bool workers_set = false;
  std::string pid_file;
};

class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Loads the config, starts the workers and runs until drained. Returns the exit code.
  int run();

  // Reads, validates and publishes the config file. Returns false with `error` set (the old
  // snapshot stays) when the file is invalid.
  bool reload(std::string& error);

 private:
  static void onSignal(evutil_socket_t sig, short, void* ctx) noexcept;
  void handleSignal(int sig);
  void shutdown();

  ServerOptions options_;
  SharedState shared_;
  EventBasePtr base_;
  std::vector<EventPtr> signal_events_;
  config::SnapshotConstSharedPtr snapshot_;
  uint64_t generation_ = 0;
  std::vector<std::unique_ptr<Worker>> workers_;
  bool stopping_ = false;
};

}  // namespace sy::proxy
