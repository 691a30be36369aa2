#pragma once
// Watches the config file for changes (server.watch_config) with inotify, the way editors
// and Kubernetes change files: in place (IN_CLOSE_WRITE), by writing a new file and renaming
// it over the old one (IN_MOVED_TO), and, for a ConfigMap, by swapping the "..data" symlink
// in the file's directory. So it watches directories, not the file: the directory of the path
// as given and, when the path is a symlink, the directory of its target. Bursts of events are
// coalesced by a short timer; the callback then decides whether the content really changed.
//
// Thread: main.

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "proxy/net/libevent_ptr.h"

namespace sy::proxy {

class ConfigWatcher {
 public:
  static constexpr uint32_t kSettleMs = 150;

  // Null with `error` set when inotify is unavailable.
  static std::unique_ptr<ConfigWatcher> create(event_base* base, const std::string& path,
                                               std::function<void()> on_change, std::string& error);
  ~ConfigWatcher();
  ConfigWatcher(const ConfigWatcher&) = delete;
  ConfigWatcher& operator=(const ConfigWatcher&) = delete;

 private:
  ConfigWatcher(std::function<void()> on_change) : on_change_(std::move(on_change)) {}
  static void onReadable(evutil_socket_t fd, short, void* ctx) noexcept;
  static void onSettled(evutil_socket_t, short, void* ctx) noexcept;

  std::function<void()> on_change_;
  // Entries of the watched directories whose change can change the config: the file's name,
  // its symlink target's name, "..data" (a ConfigMap). Other files there (logs) are ignored.
  std::vector<std::string> names_;
  UniqueFd fd_;  // inotify
  EventPtr read_event_;
  EventPtr settle_timer_;
};

}  // namespace sy::proxy
