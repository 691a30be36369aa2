// libFuzzer target: the PROXY protocol header (SPEC §13 proxy_protocol), v1 and v2, as
// ProxyProtocolReader feeds it: the bytes a connection starts with -> parseProxyHeader.
//
// Beyond "no crash, no sanitizer report", every input is checked for:
//   - a complete header is within the input and within kProxyHeaderMaxBytes; its source, when
//     it has one, is AF_INET or AF_INET6; the header alone parses the same, and one byte less
//     is incomplete (nothing after the header decides anything);
//   - an incomplete input is shorter than kProxyHeaderMaxBytes (the reader's buffer bound);
//   - an error stays that error whatever follows (the reader closes on the first one);
//   - fed in pieces as the reader does (peek, take everything while incomplete, then exactly
//     the rest of the header), with piece sizes drawn from the input, the result is the same
//     as whole, and the reader never takes a byte after the header.

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "proxy/net/proxy_protocol.h"
#include "tests/fuzz/fuzz_common.h"

namespace {

using namespace sy;
using fuzz::printable;
using proxy::ProxyHeader;
using Status = ProxyHeader::Status;

bool same(const ProxyHeader& a, const ProxyHeader& b) {
  if (a.status != b.status || a.version != b.version) return false;
  if (a.status == Status::Error) return a.error == b.error;
  if (a.status == Status::Incomplete) return true;
  return a.size == b.size && a.has_source == b.has_source &&
         (!a.has_source || std::memcmp(&a.source, &b.source, sizeof(a.source)) == 0);
}

std::string describe(const ProxyHeader& h) {
  return "status " + std::to_string(static_cast<int>(h.status)) + " error " +
         std::to_string(static_cast<int>(h.error)) + " size " + std::to_string(h.size) +
         " version " + std::to_string(h.version) + " source " + (h.has_source ? "yes" : "no");
}

// The reader's loop over `data` arriving in pieces: returns the header and the bytes taken.
ProxyHeader feedLikeTheReader(std::string_view data, uint32_t seed, size_t* taken) {
  std::string received;
  size_t arrived = 0;  // bytes the "socket" holds so far (taken or not)
  ProxyHeader h;
  while (true) {
    seed = seed * 1103515245u + 12345u;
    const size_t piece = 1 + (seed >> 16) % 64;
    arrived = std::min(data.size(), arrived + piece);
    const size_t had = received.size();
    const size_t peek = std::min(arrived - had, proxy::kProxyHeaderMaxBytes - had);
    if (peek == 0) break;  // the peer sent everything (or the bound): still incomplete
    received.append(data.substr(had, peek));
    h = proxy::parseProxyHeader(received);
    if (h.status == Status::Error) break;
    if (h.status == Status::Complete) {
      received.resize(h.size);  // take exactly the rest of the header
      break;
    }
  }
  *taken = received.size();
  return h;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* bytes, size_t size) {
  const std::string_view data(reinterpret_cast<const char*>(bytes), size);
  const ProxyHeader whole = proxy::parseProxyHeader(data);
  auto detail = [&] { return describe(whole) + "\ninput:\n" + printable(data); };

  switch (whole.status) {
    case Status::Complete: {
      FUZZ_CHECK(whole.size > 0 && whole.size <= data.size(), "a header beyond the input",
                 detail());
      FUZZ_CHECK(whole.size <= proxy::kProxyHeaderMaxBytes, "a header beyond the bound",
                 detail());
      if (whole.has_source) {
        FUZZ_CHECK(whole.source.ss_family == AF_INET || whole.source.ss_family == AF_INET6,
                   "a source that is neither IPv4 nor IPv6", detail());
      }
      FUZZ_CHECK(same(proxy::parseProxyHeader(data.substr(0, whole.size)), whole),
                 "the header alone parses differently", detail());
      FUZZ_CHECK(proxy::parseProxyHeader(data.substr(0, whole.size - 1)).status ==
                     Status::Incomplete,
                 "one byte less than a header is not incomplete", detail());
      break;
    }
    case Status::Incomplete:
      FUZZ_CHECK(data.size() < proxy::kProxyHeaderMaxBytes,
                 "incomplete at the reader's buffer bound", detail());
      break;
    case Status::Error: {
      std::string more(data);
      more.append("\r\n\r\nPROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
      FUZZ_CHECK(same(proxy::parseProxyHeader(more), whole), "an error undone by more bytes",
                 detail());
      break;
    }
  }

  uint32_t seed = size > 0 ? bytes[size - 1] : 0;
  for (int round = 0; round < 3; ++round, seed += 977) {
    size_t taken = 0;
    const ProxyHeader pieces = feedLikeTheReader(data, seed, &taken);
    FUZZ_CHECK(same(pieces, whole), "in pieces, a different result: " + describe(pieces),
               detail());
    if (whole.status == Status::Complete) {
      FUZZ_CHECK(taken == whole.size, "the reader took bytes after the header", detail());
    }
  }
  return 0;
}
