#pragma once
// The access log (SPEC §7): one JSON object per line, written without blocking any event loop.
// The fields, in this order: ts, client, method, host, path, status, bytes_out, duration_ms,
// route, variant, upstream, request_id, shadow (bool), termination ("source/phase" of SPEC §10,
// "-/-" for a normal end), country (ISO 3166-1 alpha-2 from server.geoip_database, "" when
// unknown or without a database). Fields are only ever added, never renamed or removed.
//
// Each worker formats its lines into a local batch and hands full (or 100 ms old) batches to a
// writer thread through a queue; one lock per batch, never per request. The queue is bounded:
// when the disk cannot keep up, new batches are dropped and their lines counted. SIGUSR1 makes
// the writer reopen the file (log rotation).
//
// Thread: AccessLog: any (documented per method). AccessLogBatch: worker-local.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "common/unique_fd.h"
#include "proxy/http/termination.h"

namespace sy::proxy {

// One request's line.
struct AccessLogEntry {
  int64_t ts_ms = 0;  // wall clock, ms since the epoch, when the request head arrived
  std::string_view client;
  std::string_view method;
  std::string_view host;
  std::string_view path;
  std::string_view protocol;  // "HTTP/1.1", "HTTP/1.0", "HTTP/2"
  int status = 0;
  uint64_t bytes_out = 0;
  double duration_ms = 0;
  std::string_view route;
  std::string_view variant;
  std::string_view upstream;
  std::string_view request_id;
  bool shadow = false;
  Termination termination;   // how the exchange ended; a normal end is written "-/-"
  std::string_view country;  // ISO 3166-1 alpha-2 of the client (geoip_database), or ""
};

// Appends `e` as one JSON line (with '\n'). Strings are escaped per RFC 8259; bytes that are not
// valid UTF-8 are written as \u00XX so the line always parses.
void appendAccessLogLine(std::string& out, const AccessLogEntry& e);

class AccessLog {
 public:
  static constexpr size_t kMaxQueuedBytes = 16 << 20;

  AccessLog();
  ~AccessLog();
  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;

  // Thread: main. "" = off, "-" = stdout, else a file (appended, created 0644).
  void setTarget(const std::string& target);
  // Thread: any. Reopen the file at the next write (SIGUSR1).
  void reopen();
  // Thread: any. Takes a batch of complete lines; drops it (counted) when the queue is full.
  void submit(std::string&& batch, uint64_t lines);
  bool enabled() const { return enabled_.load(std::memory_order_relaxed); }
  uint64_t droppedLines() const { return dropped_lines_.load(std::memory_order_relaxed); }
  // Thread: any. Waits until everything submitted so far is written (tests, shutdown).
  void flush();

 private:
  void run();
  void openTarget();

  std::mutex mutex_;  // guards queue_, queued_bytes_, target_, stop_, written_/submitted_
  std::condition_variable wake_;
  std::condition_variable drained_;
  std::deque<std::string> queue_;
  size_t queued_bytes_ = 0;
  std::string target_;
  bool target_changed_ = false;
  bool stop_ = false;
  uint64_t submitted_ = 0;
  uint64_t written_ = 0;
  std::atomic<bool> enabled_{false};
  std::atomic<bool> reopen_{false};
  std::atomic<uint64_t> dropped_lines_{0};
  int fd_ = -1;    // where lines go: file_ or stdout; writer thread only
  UniqueFd file_;  // the opened file (not stdout); writer thread only
  std::thread thread_;
};

// A worker's pending lines. Thread: worker-local.
class AccessLogBatch {
 public:
  static constexpr size_t kFlushBytes = 64 * 1024;

  explicit AccessLogBatch(AccessLog& log) : log_(log) {}
  void add(const AccessLogEntry& e) {
    appendAccessLogLine(buf_, e);
    ++lines_;
    if (buf_.size() >= kFlushBytes) flush();
  }
  void flush();
  bool empty() const { return lines_ == 0; }

 private:
  AccessLog& log_;
  std::string buf_;
  uint64_t lines_ = 0;
};

}  // namespace sy::proxy
