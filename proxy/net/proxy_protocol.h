#pragma once
// The PROXY protocol header a load balancer (HAProxy send-proxy / send-proxy-v2, AWS NLB, GCP)
// sends before anything else on a connection, v1 (text) and v2 (binary), as HAProxy's
// proxy-protocol.txt specifies. A pure parser: bytes in, the header's size and source address
// out, so the reader (server/proxy_protocol_reader) and the fuzzer share it.
//
// Accepted:
//   v1  "PROXY TCP4 <src> <dst> <sport> <dport>\r\n", "PROXY TCP6 ...\r\n", "PROXY UNKNOWN
//       [anything]\r\n", at most 107 bytes with the CRLF (the spec's bound).
//   v2  the 12-byte signature, version 2, command LOCAL or PROXY, family UNSPEC, INET, INET6 or
//       UNIX, a length of at most kProxyV2MaxPayload bytes; TLVs after the addresses are skipped
//       unread (not validated: nothing here uses them).
// The address is used for PROXY with INET or INET6 (v2) and TCP4/TCP6 (v1). LOCAL (a health
// check from the balancer itself), UNKNOWN, UNSPEC and UNIX mean "use the real peer".
// Rejected: anything else (a missing signature as soon as the first bytes differ from both).
//
// Thread: any (pure).

#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace sy::proxy {

// Why a connection's PROXY header was refused (switchyard_proxy_protocol_errors_total{reason}).
// Missing: the connection did not start with either signature (plain HTTP or TLS sent to a
// proxy_protocol listener). Invalid: a signature, then something the spec does not allow.
// TooLarge: a v1 line without its CRLF in 107 bytes, or a v2 length above kProxyV2MaxPayload.
// Truncated: the peer closed, or client_header_ms passed, before the header was complete
// (decided by the reader, never by the parser).
enum class ProxyProtocolError : uint8_t { Missing, Invalid, TooLarge, Truncated };
inline constexpr size_t kProxyProtocolErrors = 4;
inline constexpr std::array<const char*, kProxyProtocolErrors> kProxyProtocolErrorNames = {
    "missing", "invalid", "too_large", "truncated"};

inline constexpr size_t kProxyV1MaxBytes = 107;
// The v2 bound on the address and TLV part (the header is 16 bytes more). AWS NLB and GCP send a
// few hundred bytes of TLVs; 4 KiB leaves room for that and bounds what one connection holds
// before it has said anything.
inline constexpr size_t kProxyV2MaxPayload = 4096;
inline constexpr size_t kProxyV2HeaderBytes = 16;
// The most bytes a header can take: the reader never needs more than this buffered.
inline constexpr size_t kProxyHeaderMaxBytes = kProxyV2HeaderBytes + kProxyV2MaxPayload;

struct ProxyHeader {
  enum class Status : uint8_t {
    // No end yet: every byte given belongs to the header (a reader may consume them all).
    Incomplete,
    Complete,  // the first `size` bytes are the header; what follows is the connection's data
    Error,
  };
  Status status = Status::Incomplete;
  ProxyProtocolError error = ProxyProtocolError::Invalid;  // with Error
  size_t size = 0;                                         // with Complete
  uint8_t version = 0;                                     // 1 or 2, once known
  bool has_source = false;    // false: LOCAL, UNKNOWN, UNSPEC, UNIX: keep the real peer
  sockaddr_storage source{};  // with has_source: AF_INET or AF_INET6, with the port
};

// Parses the start of a connection. `data` is everything received so far.
ProxyHeader parseProxyHeader(std::string_view data);

}  // namespace sy::proxy
