#include "proxy/server/config_watch.h"

#include <limits.h>
#include <stdlib.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>

namespace sy::proxy {
namespace {

std::string dirOf(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

std::unique_ptr<ConfigWatcher> ConfigWatcher::create(event_base* base, const std::string& path,
                                                     std::function<void()> on_change,
                                                     std::string& error) {
  std::unique_ptr<ConfigWatcher> w(new ConfigWatcher(std::move(on_change)));
  w->fd_.reset(inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (!w->fd_) {
    error = std::string("watch_config: inotify: ") + strerror(errno);
    return nullptr;
  }
  std::vector<std::string> dirs = {dirOf(path)};
  auto leaf = [](const std::string& p) { return p.substr(p.rfind('/') + 1); };
  w->names_ = {leaf(path), "..data"};
  char resolved[PATH_MAX];
  if (realpath(path.c_str(), resolved) != nullptr) {
    std::string target_dir = dirOf(resolved);
    if (target_dir != dirs[0]) dirs.push_back(target_dir);
    w->names_.push_back(leaf(resolved));
  }
  constexpr uint32_t kMask =
      IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_ATTRIB | IN_MODIFY;
  for (const std::string& dir : dirs) {
    if (inotify_add_watch(w->fd_.get(), dir.c_str(), kMask) < 0) {
      error = "watch_config: cannot watch " + dir + ": " + strerror(errno);
      return nullptr;
    }
  }
  w->read_event_.reset(event_new(base, w->fd_.get(), EV_READ | EV_PERSIST, &onReadable, w.get()));
  w->settle_timer_.reset(evtimer_new(base, &onSettled, w.get()));
  event_add(w->read_event_.get(), nullptr);
  return w;
}

ConfigWatcher::~ConfigWatcher() {
  read_event_.reset();
  settle_timer_.reset();
}

void ConfigWatcher::onReadable(evutil_socket_t fd, short, void* ctx) noexcept {
  auto* w = static_cast<ConfigWatcher*>(ctx);
  // The events only say "something in the directory changed"; drain them and let the timer
  // fire once the burst (write, rename, symlink swap) has settled.
  alignas(inotify_event) char buf[4096];
  bool relevant = false;
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) {
    for (char* p = buf; p < buf + n;) {
      const auto* ev = reinterpret_cast<const inotify_event*>(p);
      if (ev->len > 0) {
        const std::string_view name(ev->name);
        for (const std::string& watched : w->names_) relevant = relevant || name == watched;
      }
      if ((ev->mask & IN_Q_OVERFLOW) != 0) relevant = true;  // events lost: check anyway
      p += sizeof(inotify_event) + ev->len;
    }
  }
  // Writes to other files of the directory (an access log next to the config) must not keep
  // re-arming the timer: while they went on, a changed config was never reloaded.
  if (!relevant) return;
  timeval tv{0, static_cast<suseconds_t>(kSettleMs) * 1000};
  evtimer_add(w->settle_timer_.get(), &tv);
}

void ConfigWatcher::onSettled(evutil_socket_t, short, void* ctx) noexcept {
  static_cast<ConfigWatcher*>(ctx)->on_change_();
}

}  // namespace sy::proxy
