#pragma once
// Operational log: one line per event on stderr, "ts level message".
//
// Thread: any (each line is written with one write(2), so lines never interleave).

#include <atomic>
#include <string_view>

namespace sy {

enum class LogLevel : int { Debug = 0, Info = 1, Warn = 2, Error = 3 };

// Returns false for an unknown name.
bool parseLogLevel(std::string_view name, LogLevel& out);
void setLogLevel(LogLevel level);
bool logEnabled(LogLevel level);

void logLine(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace sy

#define SY_LOG(level, ...)                               \
  do {                                                   \
    if (::sy::logEnabled(::sy::LogLevel::level))         \
      ::sy::logLine(::sy::LogLevel::level, __VA_ARGS__); \
  } while (0)
