#pragma once
// A byte stream over one socket, plain or TLS, as the connections see it: an input and an
// output evbuffer, read/write/event callbacks to a Handler, bounded input (reading stops at
// kReadHighWater until the consumer drains), read and write timeouts.
//
// PlainTransport does its own socket I/O: its read event stays registered while reading is on
// (no epoll_ctl per request), reads need no FIONREAD ioctl first (libevent's socket
// bufferevent makes one before each read), writes are made directly at the end of a callback
// (flush) and the write event is registered only while the socket buffer is full, timeouts
// live in a LazyTimer so a read does not re-arm a timer. TlsTransport wraps libevent's OpenSSL
// bufferevent, which owns the TLS record layer.
//
// Level-triggered, not edge-triggered: with edges, a short read cannot tell "drained" from
// "drained, and a reset is queued behind the data" (libevent folds EPOLLHUP/EPOLLERR into
// plain read/write readiness), and the reset would go unnoticed until a timeout.
//
// Events carry libevent's BEV_EVENT_* flags (CONNECTED, EOF, ERROR, TIMEOUT, with READING or
// WRITING), so the two kinds look alike to their owners.
//
// Thread: worker-local. A stream's `this` is libevent callback context: neither copyable nor
// movable; freed by its owner outside the stream's own callbacks (see deferred.h).

#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <openssl/ssl.h>

#include "common/unique_fd.h"
#include "proxy/net/lazy_timer.h"
#include "proxy/net/libevent_ptr.h"

namespace sy::proxy {

class Transport {
 public:
  // Above this much unread input the stream stops reading until it is drained (le-proxy's
  // watermark pattern): pipelined requests or a fast upstream wait in the kernel.
  static constexpr size_t kReadHighWater = 256 * 1024;
  // After a write that had to wait for the socket, onTransportWrite runs once the output is
  // down to this.
  static constexpr size_t kWriteLowWater = 64 * 1024;

  class Handler {
   public:
    virtual ~Handler() = default;
    virtual void onTransportRead() = 0;               // input() grew
    virtual void onTransportWrite() = 0;              // waiting output drained to kWriteLowWater
    virtual void onTransportEvent(short events) = 0;  // BEV_EVENT_* flags
  };

  virtual ~Transport() = default;
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  evbuffer* input() const { return in_; }
  evbuffer* output() const { return out_; }

  // Routes callbacks to `handler`; null stops all I/O and callbacks for good (before the
  // owner frees the stream).
  virtual void setHandler(Handler* handler) = 0;
  // Reading is on from the start; off, input waits in the kernel.
  virtual void enableRead() = 0;
  virtual void disableRead() = 0;
  virtual bool reading() const = 0;
  // Writes what output() holds now, as far as the socket takes it; the rest goes out when the
  // socket drains. Call at the end of every callback that queued output. (TLS: libevent
  // writes by itself; nothing to do.)
  virtual void flush() = 0;
  // Read timeout: no input for read_ms while reading is on. Write timeout: waiting output
  // (or a connect in progress) makes no progress for write_ms. 0 = none. Either one fires
  // onTransportEvent(BEV_EVENT_TIMEOUT | READING or WRITING) and switches that side off.
  virtual void setTimeouts(uint32_t read_ms, uint32_t write_ms) = 0;
  // Ends the sending side once output() is empty (TCP FIN; the peer reads EOF after what was
  // sent) while reading goes on: a lingering close. TLS: nothing (libevent's OpenSSL
  // bufferevent has no half-close); the owner just keeps reading until it closes.
  virtual void shutdownWrite() = 0;
  virtual evutil_socket_t fd() const = 0;
  virtual bool tls() const = 0;
  // The protocol ALPN chose in the TLS handshake ("h2", "http/1.1"); "" for a plain stream,
  // before the handshake completed (BEV_EVENT_CONNECTED) or when the client offered none.
  virtual std::string_view alpn() const { return {}; }
  // Why the stream failed, for logs: the TLS errors, else the socket error; empty if unknown.
  virtual std::string failure() const = 0;

 protected:
  Transport() = default;
  evbuffer* in_ = nullptr;
  evbuffer* out_ = nullptr;
  Handler* handler_ = nullptr;
};

// A plain TCP stream: accepted (`fd` connected) or connecting (connect()).
class PlainTransport final : public Transport {
 public:
  // Takes `fd` (non-blocking, connected). Null (and `fd` closed) on allocation failure.
  static std::unique_ptr<PlainTransport> accepted(event_base* base, UniqueFd fd);
  // Starts a non-blocking connect; its outcome is an event (CONNECTED, or ERROR; a
  // connect_timeout_ms write timeout). Null if no socket could be made.
  static std::unique_ptr<PlainTransport> connect(event_base* base, const sockaddr* addr,
                                                 socklen_t len, uint32_t connect_timeout_ms);
  ~PlainTransport() override;

  void setHandler(Handler* handler) override;
  void enableRead() override;
  void disableRead() override;
  bool reading() const override { return reading_; }
  void flush() override;
  void setTimeouts(uint32_t read_ms, uint32_t write_ms) override;
  void shutdownWrite() override;
  evutil_socket_t fd() const override { return fd_.get(); }
  bool tls() const override { return false; }
  std::string failure() const override;

 private:
  PlainTransport(event_base* base, UniqueFd fd);
  bool start();
  static void readCb(evutil_socket_t fd, short what, void* ctx) noexcept;
  static void writeCb(evutil_socket_t fd, short what, void* ctx) noexcept;
  static void timerCb(void* ctx) noexcept;
  void onTimer();
  void onWritable();
  void onReadable();
  // Keeps the read event registered exactly while reading is wanted and possible, and the
  // write event while a connect or a write waits for the socket.
  void updateEvents();
  // One write of the output; false on a socket error (reported later, in onWritable).
  bool writeSome();
  void fail(short events, int err);
  // Runs the write callback in this loop iteration (for what flush() finds outside a
  // callback: an error to report, a drained output to tell the owner about).
  void scheduleWrite();
  void updateTimer();

  UniqueFd fd_;
  EventPtr read_ev_;
  EventPtr write_ev_;
  LazyTimer timer_;
  EvBufferPtr in_buf_;
  EvBufferPtr out_buf_;
  uint32_t read_ms_ = 0;
  uint32_t write_ms_ = 0;
  uint64_t read_deadline_ = 0;   // LazyTimer clock; valid while the read timeout counts
  uint64_t write_deadline_ = 0;  // valid while the write timeout counts
  int error_ = 0;                // the socket error that ended the stream (errno value)
  int pending_error_ = 0;        // met while flushing; reported from the next callback
  bool reading_ = true;
  bool read_registered_ = false;
  bool write_registered_ = false;
  bool write_waiting_ = false;  // output is waiting for the socket to drain
  bool notify_write_ = false;   // onTransportWrite is owed once output <= kWriteLowWater
  bool eof_ = false;            // the peer finished sending
  bool connecting_ = false;
  bool closed_ = false;  // an error, or no handler any more: no more I/O
};

// A TLS stream: libevent's OpenSSL bufferevent behind the Transport interface.
class TlsTransport final : public Transport {
 public:
  // Takes `bev` (a bufferevent_openssl, accepting or connecting).
  explicit TlsTransport(BufferEventPtr bev);
  // Takes `fd` (accepted, non-blocking) and starts the server side of a handshake with `ctx`
  // (SNI may switch it). Null (and `fd` closed) on allocation failure.
  static std::unique_ptr<TlsTransport> accepted(event_base* base, UniqueFd fd, SSL_CTX* ctx);
  ~TlsTransport() override;

  // Starts the connect of a stream made with BUFFEREVENT_SSL_CONNECTING and fd -1.
  void connect(const sockaddr* addr, socklen_t len, uint32_t connect_timeout_ms);

  void setHandler(Handler* handler) override;
  void enableRead() override;
  void disableRead() override;
  bool reading() const override;
  void flush() override {}
  void setTimeouts(uint32_t read_ms, uint32_t write_ms) override;
  void shutdownWrite() override {}
  evutil_socket_t fd() const override;
  bool tls() const override { return true; }
  std::string_view alpn() const override;
  std::string failure() const override;

 private:
  static void readCb(bufferevent* bev, void* ctx) noexcept;
  static void writeCb(bufferevent* bev, void* ctx) noexcept;
  static void eventCb(bufferevent* bev, short events, void* ctx) noexcept;

  BufferEventPtr bev_;
  int error_ = 0;  // errno when the last error event came
};

}  // namespace sy::proxy
