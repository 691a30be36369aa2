#include "proxy/server/server.h"

#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <thread>

#include <http_parser.h>

#include "common/log.h"
#include "config/loader.h"

namespace sy::proxy {
namespace {

// The whole file, or "" when it cannot be read (the loader reports why).
std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// "One per CPU core" counts the cores this process may use: its affinity mask, and in a
// container its cgroup v2 CPU quota (a pod limited to 2 CPUs on a 64-core node gets 2).
uint32_t usableCpus() {
  cpu_set_t set;
  uint32_t cpus = std::max(1u, std::thread::hardware_concurrency());
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cpus = std::max(1, CPU_COUNT(&set));
  std::ifstream max("/sys/fs/cgroup/cpu.max");
  std::string quota;
  uint64_t period = 0;
  if (max >> quota >> period && quota != "max" && period > 0) {
    const uint64_t q = std::strtoull(quota.c_str(), nullptr, 10);
    const uint32_t limit = static_cast<uint32_t>(std::max<uint64_t>(1, (q + period - 1) / period));
    cpus = std::min(cpus, limit);
  }
  return cpus;
}

}  // namespace

Server::Server(ServerOptions options) : options_(std::move(options)) {}

Server::~Server() = default;

int Server::run() {
  // No evthread_use_pthreads(): every event_base is used by one thread only, and workers are
  // woken through an eventfd (Worker::post), so libevent runs without locks.
  // Our own max_header_bytes is the limit; http-parser's global one must not be lower.
  http_parser_set_max_header_size(64u << 20);
  signal(SIGPIPE, SIG_IGN);

  config::LoadResult loaded = config::loadSnapshot(options_.config_path);
  if (!loaded.ok()) {
    fprintf(stderr, "%s", config::formatErrors(loaded.errors).c_str());
    return 1;
  }

  uint32_t workers = options_.workers_set ? options_.workers : loaded.snapshot->server.workers;
  if (workers == 0) workers = usableCpus();
  metrics_ = std::make_unique<MetricsRegistry>(workers);
  health_ = std::make_unique<HealthRegistry>(workers);

  base_.reset(event_base_new());
  rollouts_ = std::make_unique<RolloutManager>(base_.get(), *metrics_, [this] { publishShares(); });
  {
    std::string error;
    if (!rollouts_->reconcile(*loaded.snapshot, error)) {
      SY_LOG(Error, "%s", error.c_str());
      return 1;
    }
  }
  adopt(std::move(loaded.snapshot));
  if (snapshot_->server.admin) {
    std::string error;
    admin_ = AdminServer::create(*this, base_.get(), *snapshot_->server.admin, error);
    if (!admin_) {
      SY_LOG(Error, "%s", error.c_str());
      return 1;
    }
  }
  shared_.access_log.setTarget(snapshot_->server.access_log);
  for (int sig : {SIGHUP, SIGTERM, SIGINT, SIGUSR1}) {
    EventPtr ev(evsignal_new(base_.get(), sig, &Server::onSignal, this));
    evsignal_add(ev.get(), nullptr);
    signal_events_.push_back(std::move(ev));
  }

  for (uint32_t i = 0; i < workers; ++i) {
    workers_.push_back(std::make_unique<Worker>(i, shared_, publication()));
  }
  std::vector<std::vector<ListenSocket>> sockets;
  std::string error;
  if (!openListeners(*snapshot_, nullptr, sockets, error)) {
    SY_LOG(Error, "%s", error.c_str());
    return 1;
  }
  for (size_t i = 0; i < workers_.size(); ++i) workers_[i]->addListeners(std::move(sockets[i]));
  if (!options_.pid_file.empty()) {
    // Written whole under a temporary name and renamed, so a reader never sees it half-done.
    const std::string tmp = options_.pid_file + ".tmp";
    {
      std::ofstream pid(tmp, std::ios::trunc);
      pid << getpid() << "\n";
    }
    if (rename(tmp.c_str(), options_.pid_file.c_str()) != 0) {
      SY_LOG(Error, "cannot write pid file %s", options_.pid_file.c_str());
      return 1;
    }
  }
  last_content_ = readFile(options_.config_path);
  updateWatcher();
  checker_ = std::make_unique<HealthChecker>(base_.get(), *health_);
  checker_->update(snapshot_);
  for (auto& w : workers_) w->start();
  std::string listen;
  for (const ListenAddress& a : listenAddresses(*snapshot_)) {
    listen += (listen.empty() ? "" : " ") + std::string(a.tls ? "https://" : "") + a.address->text;
  }
  SY_LOG(Info, "switchyard %s serving on %s with %u workers (config %s, generation %lu)",
         SWITCHYARD_VERSION, listen.c_str(), workers, options_.config_path.c_str(),
         static_cast<unsigned long>(generation_));

  event_base_loop(base_.get(), EVLOOP_NO_EXIT_ON_EMPTY);

  for (auto& w : workers_) w->join();
  workers_.clear();
  checker_.reset();
  shared_.access_log.flush();
  admin_.reset();
  if (!options_.pid_file.empty()) unlink(options_.pid_file.c_str());
  SY_LOG(Info, "stopped");
  return 0;
}

bool Server::reload(std::string& error) {
  last_content_ = readFile(options_.config_path);
  config::LoadResult loaded = config::loadSnapshot(options_.config_path);
  if (!loaded.ok()) {
    error = config::formatErrors(loaded.errors);
    ++reloads_failed_;
    SY_LOG(Error, "reload failed, keeping generation %lu:\n%s",
           static_cast<unsigned long>(generation_), error.c_str());
    return false;
  }
  std::vector<std::vector<ListenSocket>> sockets;
  if (!openListeners(*loaded.snapshot, snapshot_.get(), sockets, error) ||
      !rollouts_->reconcile(*loaded.snapshot, error)) {
    ++reloads_failed_;
    SY_LOG(Error, "reload failed, keeping generation %lu: %s",
           static_cast<unsigned long>(generation_), error.c_str());
    return false;
  }
  adopt(std::move(loaded.snapshot));
  ++reloads_ok_;
  shared_.access_log.setTarget(snapshot_->server.access_log);
  const Publication next = publication();
  for (size_t i = 0; i < workers_.size(); ++i) workers_[i]->publish(next, std::move(sockets[i]));
  checker_->update(snapshot_);
  updateWatcher();
  SY_LOG(Info, "reloaded %s: generation %lu", options_.config_path.c_str(),
         static_cast<unsigned long>(generation_));
  return true;
}

bool Server::openListeners(const config::Snapshot& next, const config::Snapshot* current,
                           std::vector<std::vector<ListenSocket>>& out, std::string& error) {
  out.clear();
  out.resize(workers_.size());
  for (const ListenAddress& a : listenAddresses(next)) {
    if (current != nullptr && listensOn(*current, a.address->text, a.tls)) continue;
    for (size_t i = 0; i < workers_.size(); ++i) {
      ListenSocket socket;
      if (!openListenSocket(*a.address, a.tls, socket, error)) {
        error += "\n";
        out.clear();  // closes the sockets opened so far
        return false;
      }
      out[i].push_back(std::move(socket));
    }
  }
  return true;
}

void Server::adopt(std::shared_ptr<config::Snapshot> loaded) {
  loaded->generation = ++generation_;
  loaded_ = loaded;
  loaded_at_ = time(nullptr);
  snapshot_ = rollouts_->empty() ? std::move(loaded) : withShares();
}

std::shared_ptr<config::Snapshot> Server::withShares() const {
  std::shared_ptr<config::Snapshot> derived = config::cloneSnapshot(*loaded_);
  rollouts_->applyShares(*derived);
  return derived;
}

void Server::publishShares() {
  std::shared_ptr<config::Snapshot> derived = withShares();
  derived->generation = ++generation_;
  snapshot_ = std::move(derived);
  const Publication next = publication();
  for (auto& w : workers_) w->publish(next, {});
  SY_LOG(Info, "rollout shares published: generation %lu", static_cast<unsigned long>(generation_));
}

Publication Server::publication() {
  return Publication{snapshot_, metrics_->tableFor(*snapshot_), health_->tableFor(*snapshot_)};
}

void Server::updateWatcher() {
  if (!snapshot_->server.watch_config) {
    watcher_.reset();
    return;
  }
  if (watcher_) return;
  std::string error;
  watcher_ = ConfigWatcher::create(
      base_.get(), options_.config_path, [this] { onConfigFileChanged(); }, error);
  if (!watcher_) SY_LOG(Error, "%s", error.c_str());
}

void Server::onConfigFileChanged() {
  if (stopping_) return;
  std::string content = readFile(options_.config_path);
  if (content == last_content_) return;  // touched, or another file of the directory
  SY_LOG(Info, "%s changed on disk: reloading", options_.config_path.c_str());
  std::string error;
  reload(error);
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
  if (sig == SIGUSR1) {
    SY_LOG(Info, "reopening the access log");
    shared_.access_log.reopen();
    return;
  }
  shutdown();
}

void Server::shutdown() {
  if (stopping_) return;
  stopping_ = true;
  SY_LOG(Info, "draining (up to %u ms)", snapshot_->server.timeouts.drain_timeout_ms);
  stopAccepting();
  for (auto& w : workers_) w->drain(snapshot_->server.timeouts.drain_timeout_ms);
  // The main loop keeps running while the workers drain, so /healthz can answer 503.
  drain_check_.reset(event_new(base_.get(), -1, EV_PERSIST, &Server::onDrainCheck, this));
  timeval tv{0, 20000};
  event_add(drain_check_.get(), &tv);
}

void Server::stopAccepting() {
  // Every worker closes its listeners before any connection starts closing. Otherwise a client
  // whose connection one worker closed reconnects, the kernel hands the connection to another
  // worker's listener that is about to close, and that close resets it: a request lost (a
  // read error under wrk -c20). Bounded: a worker stuck in a callback does not hold the stop.
  struct Pending {
    std::mutex mutex;
    std::condition_variable cv;
    size_t left;
  };
  auto pending = std::make_shared<Pending>();
  pending->left = workers_.size();
  for (auto& w : workers_) {
    w->stopAccepting([pending] {
      std::lock_guard<std::mutex> lock(pending->mutex);
      if (--pending->left == 0) pending->cv.notify_all();
    });
  }
  std::unique_lock<std::mutex> lock(pending->mutex);
  pending->cv.wait_for(lock, std::chrono::seconds(1), [&] { return pending->left == 0; });
}

void Server::onDrainCheck(evutil_socket_t, short, void* ctx) noexcept {
  auto* self = static_cast<Server*>(ctx);
  for (auto& w : self->workers_) {
    if (!w->finished()) return;
  }
  event_base_loopexit(self->base_.get(), nullptr);
}

}  // namespace sy::proxy
