#pragma once
// Rollout notifications (SPEC §11 notify_url): every event POSTed as JSON from the main thread
// with libevent's HTTP client, a 2 s timeout and 3 retries with backoff (1 s, 2 s, 4 s). A
// receiver that fails every attempt is logged and counted, and never delays or changes the
// rollout: nothing waits for the answer.
//
// Thread: main.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_set>

#include <event2/event.h>

namespace sy::proxy {

class RolloutNotifier {
 public:
  explicit RolloutNotifier(event_base* base) : base_(base) {}
  ~RolloutNotifier();  // abandons deliveries still under way
  RolloutNotifier(const RolloutNotifier&) = delete;
  RolloutNotifier& operator=(const RolloutNotifier&) = delete;

  // POSTs `body` (JSON) to `url` ("http://host[:port]/path"). `failed` runs (on this thread)
  // when every attempt failed.
  void post(const std::string& url, std::string body, std::function<void()> failed);

  struct Delivery;

 private:
  friend struct Delivery;
  event_base* base_;
  std::unordered_set<Delivery*> deliveries_;
};

}  // namespace sy::proxy
