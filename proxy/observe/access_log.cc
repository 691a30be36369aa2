#include "proxy/observe/access_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "common/log.h"

namespace sy::proxy {
namespace {

// Length of the valid UTF-8 sequence starting at s[i], or 0 if it is not one (RFC 3629).
size_t utf8Length(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  size_t n = 0;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return 0;
  }
  // Overlongs, surrogates and values above U+10FFFF.
  if (c == 0xE0 && b(i + 1) < 0xA0) return 0;
  if (c == 0xED && b(i + 1) > 0x9F) return 0;
  if (c == 0xF0 && b(i + 1) < 0x90) return 0;
  if (c == 0xF4 && b(i + 1) > 0x8F) return 0;
  return n;
}

void appendString(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      if (size_t n = utf8Length(s, i); n != 0) {
        out.append(s.substr(i, n));
        i += n;
        continue;
      }
    }
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c >= 0x7F) {
      // Controls, DEL, and stray bytes of invalid UTF-8 (as the code point of the byte).
      out += "\\u00";
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    } else {
      out += static_cast<char>(c);
    }
    ++i;
  }
  out += '"';
}

void appendUint(std::string& out, uint64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  (void)ec;
  out.append(buf, end);
}

void appendField(std::string& out, const char* name, std::string_view value) {
  out += ",\"";
  out += name;
  out += "\":";
  appendString(out, value);
}

}  // namespace

void appendAccessLogLine(std::string& out, const AccessLogEntry& e) {
  const time_t secs = static_cast<time_t>(e.ts_ms / 1000);
  tm tm{};
  gmtime_r(&secs, &tm);
  char ts[64];
  snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
           tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(e.ts_ms % 1000));
  out += "{\"ts\":\"";
  out += ts;
  out += '"';
  appendField(out, "client", e.client);
  appendField(out, "method", e.method);
  appendField(out, "host", e.host);
  appendField(out, "path", e.path);
  appendField(out, "protocol", e.protocol);
  out += ",\"status\":";
  appendUint(out, static_cast<uint64_t>(e.status));
  out += ",\"bytes_out\":";
  appendUint(out, e.bytes_out);
  char dur[32];
  snprintf(dur, sizeof(dur), "%.3f", e.duration_ms);
  out += ",\"duration_ms\":";
  out += dur;
  appendField(out, "route", e.route);
  appendField(out, "variant", e.variant);
  appendField(out, "upstream", e.upstream);
  appendField(out, "request_id", e.request_id);
  out += ",\"shadow\":";
  out += e.shadow ? "true" : "false";
  // Both names are fixed ASCII words (or "-"): nothing to escape.
  out += ",\"termination\":\"";
  out += terminationSourceName(e.termination.source);
  out += '/';
  out += terminationPhaseName(e.termination.phase);
  out += '"';
  appendField(out, "country", e.country);
  out += "}\n";
}

AccessLog::AccessLog() : thread_([this] { run(); }) {}

AccessLog::~AccessLog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void AccessLog::setTarget(const std::string& target) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (target == target_) return;
    target_ = target;
    target_changed_ = true;
  }
  enabled_.store(!target.empty());
  wake_.notify_all();
}

void AccessLog::reopen() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    reopen_.store(true);
  }
  wake_.notify_all();
}

void AccessLog::submit(std::string&& batch, uint64_t lines) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (queued_bytes_ + batch.size() > kMaxQueuedBytes) {
      dropped_lines_.fetch_add(lines, std::memory_order_relaxed);
      return;
    }
    queued_bytes_ += batch.size();
    queue_.push_back(std::move(batch));
    ++submitted_;
  }
  wake_.notify_one();
}

void AccessLog::flush() {
  std::unique_lock<std::mutex> lock(mutex_);
  const uint64_t target = submitted_;
  drained_.wait(lock, [&] { return written_ >= target || stop_; });
}

void AccessLog::openTarget() {
  file_.reset();
  fd_ = -1;
  std::string target;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    target = target_;
  }
  if (target.empty()) return;
  if (target == "-") {
    fd_ = STDOUT_FILENO;
    return;
  }
  file_.reset(open(target.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644));
  if (!file_) {
    SY_LOG(Error, "access_log: cannot open %s: %s", target.c_str(), strerror(errno));
    return;
  }
  fd_ = file_.get();
}

void AccessLog::run() {
  for (;;) {
    std::string batch;
    bool reopen = false;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || !queue_.empty() || target_changed_ || reopen_; });
      if (target_changed_) {
        target_changed_ = false;
        reopen = true;
      }
      if (!queue_.empty()) {
        batch = std::move(queue_.front());
        queue_.pop_front();
        queued_bytes_ -= batch.size();
      } else if (stop_) {
        return;
      }
    }
    if (reopen || reopen_.exchange(false) || (fd_ < 0 && !batch.empty())) openTarget();
    size_t off = 0;
    while (fd_ >= 0 && off < batch.size()) {
      ssize_t n = write(fd_, batch.data() + off, batch.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    if (!batch.empty()) {
      std::lock_guard<std::mutex> lock(mutex_);
      ++written_;
    }
    drained_.notify_all();
  }
}

void AccessLogBatch::flush() {
  if (lines_ == 0) return;
  log_.submit(std::move(buf_), lines_);
  buf_ = std::string();
  buf_.reserve(kFlushBytes + 4096);
  lines_ = 0;
}

}  // namespace sy::proxy
