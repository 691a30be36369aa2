#pragma once
// switchyard-ctl's command line (SPEC §8, and §11's `rollout`): parses argv, runs one command,
// returns the exit code. Output goes to `out`, diagnostics to `err`; the admin endpoint is reached
// through an injected transport, so every command but the HTTP call itself is testable in-process.
//
// Thread: main (one command per process).

#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

namespace sy::ctl {

struct HttpRequest {
  std::string host;  // without brackets for IPv6
  uint16_t port = 0;
  std::string method;  // "GET" or "POST"
  std::string path;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;  // sent with Content-Length (POST); "" = none
  int timeout_seconds = 10;
};

struct HttpResponse {
  int status = 0;  // 0 when there is no answer
  std::string body;
  std::string error;  // why there is no answer ("connection refused", ...); "" with an answer
};

using HttpTransport = std::function<HttpResponse(const HttpRequest&)>;

// `args` excludes the program name. Returns kExitOk, kExitFailure or kExitUsage.
int run(const std::vector<std::string>& args, std::ostream& out, std::ostream& err,
        const HttpTransport& http);

// "127.0.0.1:9901", "[::1]:9901", "localhost:9901" (an "http://" prefix is tolerated).
// Returns false with `error` set otherwise.
bool parseAdminAddress(std::string_view text, std::string& host, uint16_t& port,
                       std::string& error);

}  // namespace sy::ctl
