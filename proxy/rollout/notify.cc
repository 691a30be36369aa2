#include "proxy/rollout/notify.h"

#include <event2/buffer.h>
#include <event2/http.h>

#include "common/c_deleter.h"
#include "common/log.h"
#include "proxy/net/libevent_ptr.h"

namespace sy::proxy {
namespace {

using EvHttpConnectionPtr = std::unique_ptr<evhttp_connection, CDeleter<&evhttp_connection_free>>;
using EvHttpUriPtr = std::unique_ptr<evhttp_uri, CDeleter<&evhttp_uri_free>>;

constexpr int kAttempts = 4;  // the first and 3 retries
constexpr int kTimeoutSeconds = 2;

}  // namespace

struct RolloutNotifier::Delivery {
  RolloutNotifier* owner = nullptr;
  std::string url;
  std::string host;
  int port = 80;
  std::string path;
  std::string body;
  std::function<void()> failed;
  int attempt = 0;
  EvHttpConnectionPtr conn;
  EventPtr timer;  // the next attempt, or the clean-up after an answer

  // Runs on the timer: the next attempt, or (conn set and done) the clean-up.
  bool done = false;

  static void onTimer(evutil_socket_t, short, void* ctx) noexcept {
    auto* d = static_cast<Delivery*>(ctx);
    if (d->done) {
      d->owner->deliveries_.erase(d);
      delete d;
      return;
    }
    d->send();
  }

  static void onAnswer(evhttp_request* req, void* ctx) noexcept {
    auto* d = static_cast<Delivery*>(ctx);
    const int status = req != nullptr ? evhttp_request_get_response_code(req) : 0;
    d->finishAttempt(status >= 200 && status < 300, status);
  }

  void send() {
    ++attempt;
    conn.reset(evhttp_connection_base_new(owner->base_, nullptr, host.c_str(),
                                          static_cast<uint16_t>(port)));
    evhttp_request* req = conn ? evhttp_request_new(&Delivery::onAnswer, this) : nullptr;
    if (req == nullptr) {
      finishAttempt(false, 0);
      return;
    }
    evhttp_connection_set_timeout(conn.get(), kTimeoutSeconds);
    evkeyvalq* headers = evhttp_request_get_output_headers(req);
    evhttp_add_header(headers, "Host", host.c_str());
    evhttp_add_header(headers, "Content-Type", "application/json");
    evhttp_add_header(headers, "User-Agent", "switchyard/" SWITCHYARD_VERSION);
    evbuffer_add(evhttp_request_get_output_buffer(req), body.data(), body.size());
    // On failure evhttp_make_request frees the request itself.
    if (evhttp_make_request(conn.get(), req, EVHTTP_REQ_POST, path.c_str()) != 0) {
      finishAttempt(false, 0);
    }
  }

  // Never frees the connection from inside its own callback: the next step runs on a timer.
  void finishAttempt(bool ok, int status) {
    timeval tv{0, 0};
    if (ok || attempt >= kAttempts) {
      if (!ok) {
        SY_LOG(Warn, "rollout notification to %s failed after %d attempts (last status %d)",
               url.c_str(), attempt, status);
        if (failed) failed();
      }
      done = true;
    } else {
      tv.tv_sec = 1L << (attempt - 1);  // 1 s, 2 s, 4 s
    }
    event_add(timer.get(), &tv);
  }
};

RolloutNotifier::~RolloutNotifier() {
  for (Delivery* d : deliveries_) delete d;
}

void RolloutNotifier::post(const std::string& url, std::string body, std::function<void()> failed) {
  EvHttpUriPtr uri(evhttp_uri_parse(url.c_str()));
  const char* host = uri ? evhttp_uri_get_host(uri.get()) : nullptr;
  if (host == nullptr) {
    SY_LOG(Warn, "rollout notification: cannot parse %s", url.c_str());
    if (failed) failed();
    return;
  }
  auto* d = new Delivery;
  d->owner = this;
  d->url = url;
  d->host = host;
  d->port = evhttp_uri_get_port(uri.get()) > 0 ? evhttp_uri_get_port(uri.get()) : 80;
  const char* path = evhttp_uri_get_path(uri.get());
  d->path = path != nullptr && *path != '\0' ? path : "/";
  if (const char* query = evhttp_uri_get_query(uri.get())) d->path += std::string("?") + query;
  d->body = std::move(body);
  d->failed = std::move(failed);
  d->timer.reset(evtimer_new(base_, &Delivery::onTimer, d));
  deliveries_.insert(d);
  d->send();
}

}  // namespace sy::proxy
