#pragma once
// What a worker needs of a client connection, whatever its protocol: an HTTP/1 or HTTP/2
// server connection, or the step that finds out which one a new connection speaks. Declared
// here, below http1/ and http2/, so that server/ holds both kinds in one table.
//
// Thread: worker-local. Connections are libevent callback context: freed only through their
// Owner (deferred deletion), never inside their own callbacks.

#include <string>

#include "common/deferred.h"

namespace sy::proxy {

class ClientConnection : public Deferrable {
 public:
  class Owner {
   public:
    virtual ~Owner() = default;
    // The connection is closed; the owner unlinks it and frees it later (never inside this
    // call).
    virtual void connectionClosed(ClientConnection* conn) = 0;
  };

  // Drain (or the listener went away): requests in progress finish, then the connection
  // closes; an idle one closes soon. Never closes (calls Owner::connectionClosed) inside the
  // call: the owner iterates its connections around it.
  virtual void closeWhenIdle() = 0;
  // The listener ("host:port") that accepted the connection.
  virtual const std::string& listenerAddress() const = 0;
};

}  // namespace sy::proxy
