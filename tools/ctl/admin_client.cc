// evhttp client for the admin endpoint. libevent does the HTTP (framing, chunked bodies,
// timeouts); this file only owns the handles and turns libevent's outcome into HttpResponse.

#include "tools/ctl/admin_client.h"

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/util.h>

#include "common/c_deleter.h"

namespace sy::ctl {
namespace {

using EventBasePtr = std::unique_ptr<event_base, CDeleter<&event_base_free>>;
using EvHttpConnectionPtr = std::unique_ptr<evhttp_connection, CDeleter<&evhttp_connection_free>>;

const char* requestErrorText(evhttp_request_error e) {
  switch (e) {
    case EVREQ_HTTP_TIMEOUT: return "timed out";
    case EVREQ_HTTP_EOF:
      return "connection closed before a complete answer (refused, or the peer hung up)";
    case EVREQ_HTTP_INVALID_HEADER: return "invalid HTTP answer";
    case EVREQ_HTTP_BUFFER_ERROR: return "read or write error";
    case EVREQ_HTTP_REQUEST_CANCEL: return "request cancelled";
    case EVREQ_HTTP_DATA_TOO_LONG: return "answer too large";
  }
  return "unknown error";
}

// The callback context of one request: libevent holds its address until the request
// completes, so it is neither copied nor moved.
class Call {
 public:
  explicit Call(event_base* base) : base_(base) {}
  Call(const Call&) = delete;
  Call& operator=(const Call&) = delete;

  static void doneCb(evhttp_request* req, void* ctx) noexcept {
    static_cast<Call*>(ctx)->done(req);
  }
  static void errorCb(evhttp_request_error error, void* ctx) noexcept {
    static_cast<Call*>(ctx)->failed(error);
  }

  bool finished() const { return finished_; }
  HttpResponse& response() { return response_; }

 private:
  void done(evhttp_request* req) {
    finished_ = true;
    const int code = req == nullptr ? 0 : evhttp_request_get_response_code(req);
    if (code == 0) {
      // libevent 2.1 reports a failed connect (refused, unreachable) only through this
      // callback, without calling errorCb and after closing the socket, so errno no longer
      // says which; every other failure went through errorCb first.
      if (response_.error.empty()) response_.error = "cannot connect (refused or unreachable)";
    } else {
      response_.status = code;
      response_.error.clear();
      evbuffer* in = evhttp_request_get_input_buffer(req);
      const size_t n = evbuffer_get_length(in);
      response_.body.resize(n);
      if (n > 0) evbuffer_remove(in, response_.body.data(), n);
    }
    event_base_loopbreak(base_);
  }

  void failed(evhttp_request_error error) { response_.error = requestErrorText(error); }

  event_base* base_;
  bool finished_ = false;
  HttpResponse response_;
};

}  // namespace

HttpResponse httpCall(const HttpRequest& request) {
  HttpResponse fail;
  // Resolve up front only to say so clearly when the name does not resolve; evhttp resolves
  // again by itself (the same getaddrinfo, so the same answer).
  evutil_addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  evutil_addrinfo* resolved = nullptr;
  const int gai = evutil_getaddrinfo(request.host.c_str(), nullptr, &hints, &resolved);
  if (gai != 0) {
    fail.error = "cannot resolve \"" + request.host + "\": " + evutil_gai_strerror(gai);
    return fail;
  }
  evutil_freeaddrinfo(resolved);

  EventBasePtr base(event_base_new());
  if (!base) {
    fail.error = "cannot create an event loop";
    return fail;
  }
  // Declared after `base`, so it is freed first: a connection must not outlive its base.
  EvHttpConnectionPtr conn(
      evhttp_connection_base_new(base.get(), nullptr, request.host.c_str(), request.port));
  if (!conn) {
    fail.error = "cannot resolve or set up a connection to " + request.host;
    return fail;
  }
  evhttp_connection_set_timeout(conn.get(), request.timeout_seconds);
  // An admin POST is not idempotent; one attempt, and the operator retries if they mean to.
  evhttp_connection_set_retries(conn.get(), 0);

  Call call(base.get());
  evhttp_request* req = evhttp_request_new(&Call::doneCb, &call);
  if (req == nullptr) {
    fail.error = "out of memory";
    return fail;
  }
  evhttp_request_set_error_cb(req, &Call::errorCb);
  evkeyvalq* headers = evhttp_request_get_output_headers(req);
  for (const auto& [name, value] : request.headers) {
    evhttp_add_header(headers, name.c_str(), value.c_str());
  }
  evhttp_add_header(headers, "Connection", "close");
  const bool post = request.method == "POST";
  if (post) {
    evhttp_add_header(headers, "Content-Length", std::to_string(request.body.size()).c_str());
  }
  if (!request.body.empty() && evbuffer_add(evhttp_request_get_output_buffer(req),
                                            request.body.data(), request.body.size()) != 0) {
    evhttp_request_free(req);  // not yet handed to libevent
    fail.error = "out of memory";
    return fail;
  }

  errno = 0;
  // From here libevent owns `req` and frees it after doneCb returns (also on failure).
  if (evhttp_make_request(conn.get(), req, post ? EVHTTP_REQ_POST : EVHTTP_REQ_GET,
                          request.path.c_str()) != 0) {
    if (call.finished()) return std::move(call.response());
    fail.error = errno != 0 ? std::strerror(errno) : "cannot send the request";
    return fail;
  }
  event_base_dispatch(base.get());
  if (!call.finished()) {
    fail.error = "no answer";
    return fail;
  }
  return std::move(call.response());
}

}  // namespace sy::ctl
