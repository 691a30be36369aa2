#include "proxy/rollout/prometheus_client.h"

#include <event2/buffer.h>
#include <event2/http.h>

#include <memory>

#include "common/c_deleter.h"
#include "proxy/net/libevent_ptr.h"

namespace sy::proxy {
namespace {

using EvHttpConnectionPtr = std::unique_ptr<evhttp_connection, CDeleter<&evhttp_connection_free>>;
using EvHttpUriPtr = std::unique_ptr<evhttp_uri, CDeleter<&evhttp_uri_free>>;

// A range query over many intervals answers a few MB; more is not an answer to ours.
constexpr ev_ssize_t kMaxAnswerBytes = 64 << 20;

const char* requestErrorText(evhttp_request_error e) {
  switch (e) {
    case EVREQ_HTTP_TIMEOUT: return "timed out";
    case EVREQ_HTTP_EOF: return "connection refused or closed";
    case EVREQ_HTTP_INVALID_HEADER: return "invalid answer head";
    case EVREQ_HTTP_BUFFER_ERROR: return "connection error";
    case EVREQ_HTTP_REQUEST_CANCEL: return "cancelled";
    case EVREQ_HTTP_DATA_TOO_LONG: return "answer too long";
  }
  return "connection error";
}

}  // namespace

struct PrometheusClient::Request {
  PrometheusClient* owner = nullptr;
  std::string url;
  Done done;
  EvHttpConnectionPtr conn;
  EventPtr cleanup;   // frees this request after the callbacks returned
  std::string error;  // set by the error callback before the answer callback runs
  bool answered = false;

  static void onCleanup(evutil_socket_t, short, void* ctx) noexcept {
    auto* r = static_cast<Request*>(ctx);
    r->owner->requests_.erase(r);
    delete r;
  }

  static void onError(evhttp_request_error e, void* ctx) noexcept {
    static_cast<Request*>(ctx)->error = requestErrorText(e);
  }

  static void onAnswer(evhttp_request* req, void* ctx) noexcept {
    static_cast<Request*>(ctx)->finish(req);
  }

  void finish(evhttp_request* req) {
    if (answered) return;
    answered = true;
    PromAnswer answer;
    const int status = req != nullptr ? evhttp_request_get_response_code(req) : 0;
    if (status == 0) {
      answer.error = "GET " + url + ": " + (error.empty() ? "connection failed" : error);
    } else {
      evbuffer* in = evhttp_request_get_input_buffer(req);
      const size_t n = evbuffer_get_length(in);
      std::string body(n, '\0');
      if (n > 0) evbuffer_copyout(in, body.data(), n);
      answer = parsePromAnswer(status, body);
      if (answer.ok && status != 200) {
        answer.ok = false;
        answer.error = "HTTP " + std::to_string(status);
      }
      if (!answer.ok) answer.error = "GET " + url + ": " + answer.error;
    }
    // Never free the connection inside its own callback: on a timer, after this returns.
    const timeval now{0, 0};
    event_add(cleanup.get(), &now);
    Done cb = std::move(done);
    cb(std::move(answer));
  }
};

PrometheusClient::~PrometheusClient() {
  for (Request* r : requests_) delete r;
}

void PrometheusClient::get(const std::string& base_url, const std::string& target,
                           uint64_t timeout_ms, Done done) {
  auto* r = new Request;
  r->owner = this;
  r->done = std::move(done);
  r->cleanup.reset(evtimer_new(base_, &Request::onCleanup, r));
  requests_.insert(r);

  EvHttpUriPtr uri(evhttp_uri_parse(base_url.c_str()));
  const char* host = uri ? evhttp_uri_get_host(uri.get()) : nullptr;
  std::string path = uri && evhttp_uri_get_path(uri.get()) ? evhttp_uri_get_path(uri.get()) : "";
  while (!path.empty() && path.back() == '/') path.pop_back();
  path += target;
  r->url = base_url;
  evhttp_request* req = nullptr;
  if (host != nullptr) {
    const int port = evhttp_uri_get_port(uri.get()) > 0 ? evhttp_uri_get_port(uri.get()) : 80;
    // A host name is resolved here with the system resolver (as notify_url's): a Service name
    // in Kubernetes resolves from the node's cache.
    r->conn.reset(evhttp_connection_base_new(base_, nullptr, host, static_cast<uint16_t>(port)));
  }
  if (r->conn) {
    const timeval tv{static_cast<time_t>(timeout_ms / 1000),
                     static_cast<suseconds_t>((timeout_ms % 1000) * 1000)};
    evhttp_connection_set_timeout_tv(r->conn.get(), &tv);
    evhttp_connection_set_max_body_size(r->conn.get(), kMaxAnswerBytes);
    req = evhttp_request_new(&Request::onAnswer, r);
  }
  if (req == nullptr) {
    r->error = host == nullptr ? "cannot parse the URL" : "cannot open a connection";
    r->finish(nullptr);
    return;
  }
  evhttp_request_set_error_cb(req, &Request::onError);
  evkeyvalq* headers = evhttp_request_get_output_headers(req);
  evhttp_add_header(headers, "Host", host);
  evhttp_add_header(headers, "Accept", "application/json");
  evhttp_add_header(headers, "User-Agent", "switchyard/" SWITCHYARD_VERSION);
  // On failure evhttp_make_request frees the request itself.
  if (evhttp_make_request(r->conn.get(), req, EVHTTP_REQ_GET, path.c_str()) != 0) {
    r->error = "cannot send the request";
    r->finish(nullptr);
  }
}

}  // namespace sy::proxy
