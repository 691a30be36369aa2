#pragma once
// The admin endpoint (SPEC §7): plain HTTP on its own address, served by libevent's evhttp on
// the main thread, never on a worker, so a scrape or a reload cannot delay a proxied request.
//
// Thread: main.

#include <memory>
#include <string>

#include <event2/http.h>

#include "config/snapshot.h"
#include "proxy/libevent_ptr.h"

namespace sy::proxy {

class Server;

using EvHttpPtr = std::unique_ptr<evhttp, CDeleter<&evhttp_free>>;

class AdminServer {
 public:
  // Binds `address` on `base`. Null with `error` set when it cannot.
  static std::unique_ptr<AdminServer> create(Server& server, event_base* base,
                                             const config::SocketAddress& address,
                                             std::string& error);
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  const std::string& address() const { return address_; }

 private:
  AdminServer(Server& server, std::string address) : server_(server), address_(std::move(address)) {}
  static void handleCb(evhttp_request* req, void* ctx) noexcept;
  void handle(evhttp_request* req);
  std::string renderMetrics() const;
  std::string renderStatus() const;
  std::string renderShadowDiffs() const;
  void reply(evhttp_request* req, int status, const char* content_type, const std::string& body);

  Server& server_;
  std::string address_;
  EvHttpPtr http_;
};

}  // namespace sy::proxy
