#include "proxy/server.h"

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <thread>

#include <event2/thread.h>
#include <http_parser.h>

#include "config/loader.h"
#include "proxy/log.h"

namespace sy::proxy {

Server::Server(ServerOptions options) : options_(std::move(options)) {}

Server::~Server() = default;

int Server::run() {
  // Workers are woken from the main thread (Worker::post uses event_active).
  evthread_use_pthreads();
  // Our own max_header_bytes is the limit; http-parser's global one must not be lower.
  http_parser_set_max_header_size(64u << 20);
  signal(SIGPIPE, SIG_IGN);

  config::LoadResult loaded = config::loadSnapshot(options_.config_path);
  if (!loaded.ok()) {
    fprintf(stderr, "%s", config::formatErrors(loaded.errors).c_str());
    return 1;
  }
  loaded.snapshot->generation = ++generation_;
  snapshot_ = std::move(loaded.snapshot);
  loaded_at_ = time(nullptr);

  uint32_t workers = options_.workers_set ? options_.workers : snapshot_->server.workers;
  if (workers == 0) workers = std::max(1u, std::thread::hardware_concurrency());
  metrics_ = std::make_unique<MetricsRegistry>(workers);
  std::shared_ptr<const RouteMetricsTable> table = metrics_->tableFor(*snapshot_);

  base_.reset(event_base_new());
  if (snapshot_->server.admin) {
    std::string error;
    admin_ = AdminServer::create(*this, base_.get(), *snapshot_->server.admin, error);
    if (!admin_) {
      SY_LOG(Error, "%s", error.c_str());
      return 1;
    }
  }
  for (int sig : {SIGHUP, SIGTERM, SIGINT}) {
    EventPtr ev(evsignal_new(base_.get(), sig, &Server::onSignal, this));
    evsignal_add(ev.get(), nullptr);
    signal_events_.push_back(std::move(ev));
  }

  for (uint32_t i = 0; i < workers; ++i) {
    auto w = std::make_unique<Worker>(i, shared_, snapshot_, table);
    std::string error;
    if (!w->bindListeners(error)) {
      SY_LOG(Error, "%s", error.c_str());
      return 1;
    }
    workers_.push_back(std::move(w));
  }
  if (!options_.pid_file.empty()) {
    std::ofstream pid(options_.pid_file, std::ios::trunc);
    pid << getpid() << "\n";
  }
  for (auto& w : workers_) w->start();
  std::string listen;
  for (const auto& a : snapshot_->server.listen) listen += (listen.empty() ? "" : " ") + a.text;
  SY_LOG(Info, "switchyard %s serving on %s with %u workers (config %s, generation %lu)",
         SWITCHYARD_VERSION, listen.c_str(), workers, options_.config_path.c_str(),
         static_cast<unsigned long>(generation_));

  event_base_loop(base_.get(), EVLOOP_NO_EXIT_ON_EMPTY);

  for (auto& w : workers_) w->join();
  workers_.clear();
  admin_.reset();
  if (!options_.pid_file.empty()) unlink(options_.pid_file.c_str());
  SY_LOG(Info, "stopped");
  return 0;
}

bool Server::reload(std::string& error) {
  config::LoadResult loaded = config::loadSnapshot(options_.config_path);
  if (!loaded.ok()) {
    error = config::formatErrors(loaded.errors);
    ++reloads_failed_;
    SY_LOG(Error, "reload failed, keeping generation %lu:\n%s",
           static_cast<unsigned long>(generation_), error.c_str());
    return false;
  }
  loaded.snapshot->generation = ++generation_;
  snapshot_ = std::move(loaded.snapshot);
  loaded_at_ = time(nullptr);
  ++reloads_ok_;
  std::shared_ptr<const RouteMetricsTable> table = metrics_->tableFor(*snapshot_);
  for (auto& w : workers_) w->publish(snapshot_, table);
  SY_LOG(Info, "reloaded %s: generation %lu", options_.config_path.c_str(),
         static_cast<unsigned long>(generation_));
  return true;
}

void Server::onSignal(evutil_socket_t sig, short, void* ctx) noexcept {
  static_cast<Server*>(ctx)->handleSignal(static_cast<int>(sig));
}

void Server::handleSignal(int sig) {
  if (sig == SIGHUP) {
    std::string error;
    reload(error);
    return;
  }
  shutdown();
}

void Server::shutdown() {
  if (stopping_) return;
  stopping_ = true;
  SY_LOG(Info, "draining (up to %u ms)", snapshot_->server.timeouts.drain_timeout_ms);
  for (auto& w : workers_) w->drain(snapshot_->server.timeouts.drain_timeout_ms);
  // The main loop keeps running while the workers drain, so /healthz can answer 503.
  drain_check_.reset(event_new(base_.get(), -1, EV_PERSIST, &Server::onDrainCheck, this));
  timeval tv{0, 20000};
  event_add(drain_check_.get(), &tv);
}

void Server::onDrainCheck(evutil_socket_t, short, void* ctx) noexcept {
  auto* self = static_cast<Server*>(ctx);
  for (auto& w : self->workers_) {
    if (!w->finished()) return;
  }
  event_base_loopexit(self->base_.get(), nullptr);
}

}  // namespace sy::proxy
