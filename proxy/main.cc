// switchyard: the proxy executable. The only file not linked into tests.

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "common/log.h"
#include "config/loader.h"
#include "proxy/server/server.h"

namespace {

void usage(FILE* out) {
  fprintf(out,
          "usage: switchyard --config FILE [--workers N] [--pid-file FILE] "
          "[--log-level debug|info|warn|error]\n"
          "       switchyard --check --config FILE\n"
          "       switchyard --version\n");
}

}  // namespace

int main(int argc, char** argv) {
  sy::proxy::ServerOptions options;
  bool check = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    auto value = [&](const char* name) -> const char* {
      if (i + 1 >= argc) {
        fprintf(stderr, "switchyard: %s needs a value\n", name);
        exit(2);
      }
      return argv[++i];
    };
    if (arg == "--config") {
      options.config_path = value("--config");
    } else if (arg == "--workers") {
      const char* v = value("--workers");
      char* end = nullptr;
      long n = strtol(v, &end, 10);
      if (*v == '\0' || *end != '\0' || n < 0 || n > 1024) {
        fprintf(stderr, "switchyard: --workers: not a number of workers: %s\n", v);
        return 2;
      }
      options.workers = static_cast<uint32_t>(n);
      options.workers_set = true;
    } else if (arg == "--pid-file") {
      options.pid_file = value("--pid-file");
    } else if (arg == "--log-level") {
      const char* v = value("--log-level");
      sy::LogLevel level;
      if (!sy::parseLogLevel(v, level)) {
        fprintf(stderr, "switchyard: --log-level: unknown level: %s\n", v);
        return 2;
      }
      sy::setLogLevel(level);
    } else if (arg == "--check") {
      check = true;
    } else if (arg == "--version") {
      printf("switchyard %s\n", SWITCHYARD_VERSION);
      return 0;
    } else if (arg == "--help" || arg == "-h") {
      usage(stdout);
      return 0;
    } else {
      fprintf(stderr, "switchyard: unknown argument: %s\n", argv[i]);
      usage(stderr);
      return 2;
    }
  }
  if (options.config_path.empty()) {
    usage(stderr);
    return 2;
  }
  if (check) {
    sy::config::LoadResult r = sy::config::loadSnapshot(options.config_path);
    if (!r.ok()) {
      fprintf(stderr, "%s", sy::config::formatErrors(r.errors).c_str());
      return 1;
    }
    printf("%s: ok\n", options.config_path.c_str());
    return 0;
  }
  sy::proxy::Server server(std::move(options));
  return server.run();
}
