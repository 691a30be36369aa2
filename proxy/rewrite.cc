#include "proxy/rewrite.h"

#include <charconv>

namespace sy::proxy {
namespace {

constexpr std::string_view kCrlf = "\r\n";

void appendHeader(std::string& out, std::string_view name, std::string_view value) {
  out.append(name).append(": ").append(value).append(kCrlf);
}

void appendNumber(std::string& out, uint64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  (void)ec;
  out.append(buf, end);
}

// Whether the comma-separated token list `list` contains `token` (case-insensitive).
bool listHasToken(std::string_view list, std::string_view token) {
  while (!list.empty()) {
    size_t comma = list.find(',');
    std::string_view item = list.substr(0, comma);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (equalsIgnoreCase(item, token)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

bool isFixedHopByHop(std::string_view name) {
  static constexpr std::string_view kFields[] = {
      "connection", "keep-alive", "proxy-connection", "te",
      "trailer",    "upgrade",    "transfer-encoding"};
  for (std::string_view f : kFields) {
    if (equalsIgnoreCase(name, f)) return true;
  }
  return false;
}

void appendFraming(std::string& out, BodyFraming framing, uint64_t content_length) {
  if (framing == BodyFraming::ContentLength) {
    out.append("Content-Length: ");
    appendNumber(out, content_length);
    out.append(kCrlf);
  } else if (framing == BodyFraming::Chunked) {
    out.append("Transfer-Encoding: chunked\r\n");
  }
}

}  // namespace

bool isHopByHop(std::string_view name, const Headers& headers) {
  if (isFixedHopByHop(name)) return true;
  for (const Header& h : headers) {
    if (equalsIgnoreCase(h.name, "connection") && listHasToken(h.value, name)) return true;
  }
  return false;
}

void appendUpstreamRequestHead(std::string& out, const RequestHead& head,
                               const RequestRewrite& rw) {
  out.append(head.method).append(" ").append(head.target).append(" HTTP/1.1\r\n");
  std::string_view host;
  bool have_xff = false;
  for (const Header& h : head.headers) {
    std::string_view name = h.name;
    if (isHopByHop(name, head.headers)) continue;
    if (equalsIgnoreCase(name, "content-length")) continue;  // re-framed below
    if (equalsIgnoreCase(name, "expect")) continue;          // 100-continue is answered by us
    if (equalsIgnoreCase(name, "x-forwarded-proto") || equalsIgnoreCase(name, "x-forwarded-host") ||
        equalsIgnoreCase(name, "x-switchyard-shadow"))  // only we say what is a shadow copy
      continue;
    if (!rw.variant_header.empty() && equalsIgnoreCase(name, rw.variant_header)) continue;
    if (equalsIgnoreCase(name, "host")) host = h.value;
    if (equalsIgnoreCase(name, "x-forwarded-for")) {
      // Several X-Forwarded-For fields are one list (RFC 9110 §5.3): merge them, ours last.
      if (have_xff) continue;
      have_xff = true;
      out.append("X-Forwarded-For: ");
      bool first = true;
      for (const Header& x : head.headers) {
        if (!equalsIgnoreCase(x.name, "x-forwarded-for")) continue;
        if (!first) out.append(", ");
        out.append(x.value);
        first = false;
      }
      out.append(", ").append(rw.client_ip).append(kCrlf);
      continue;
    }
    appendHeader(out, name, h.value);
  }
  if (!have_xff) appendHeader(out, "X-Forwarded-For", rw.client_ip);
  appendHeader(out, "X-Forwarded-Proto", rw.proto);
  if (!host.empty()) appendHeader(out, "X-Forwarded-Host", host);
  if (!rw.request_id.empty()) appendHeader(out, "X-Request-Id", rw.request_id);
  if (!rw.variant_header.empty()) appendHeader(out, rw.variant_header, rw.variant);
  if (rw.shadow) out.append("X-Switchyard-Shadow: 1\r\n");
  if (rw.upgrade) {
    if (auto up = findHeader(head.headers, "upgrade")) appendHeader(out, "Upgrade", *up);
    out.append("Connection: upgrade\r\n");
  }
  appendFraming(out, rw.framing, rw.content_length);
  out.append(kCrlf);
}

void appendDownstreamResponseHead(std::string& out, const ResponseHead& head,
                                  const ResponseRewrite& rw) {
  out.append("HTTP/1.1 ");
  appendNumber(out, head.status);
  out.append(" ").append(head.reason.empty() ? reasonPhrase(head.status) : head.reason);
  out.append(kCrlf);
  // Content-Length of a body-less response (HEAD, 304) describes the representation and is
  // passed on; otherwise the framing header is ours.
  const bool keep_length = rw.framing == BodyFraming::None;
  for (const Header& h : head.headers) {
    if (isHopByHop(h.name, head.headers)) continue;
    if (!keep_length && equalsIgnoreCase(h.name, "content-length")) continue;
    if (!rw.variant_header.empty() && equalsIgnoreCase(h.name, rw.variant_header)) continue;
    appendHeader(out, h.name, h.value);
  }
  if (!rw.variant_header.empty()) appendHeader(out, rw.variant_header, rw.variant);
  if (!rw.set_cookie.empty()) {
    out.append("Set-Cookie: ").append(rw.set_cookie).append("; Path=/; HttpOnly; SameSite=Lax\r\n");
  }
  if (!keep_length) appendFraming(out, rw.framing, rw.content_length);
  if (rw.upgrade) {
    if (auto up = findHeader(head.headers, "upgrade")) appendHeader(out, "Upgrade", *up);
    out.append("Connection: upgrade\r\n");
  } else if (!rw.keep_alive) {
    out.append("Connection: close\r\n");
  } else if (rw.http10_client) {
    out.append("Connection: keep-alive\r\n");
  }
  out.append(kCrlf);
}

void appendErrorResponse(std::string& out, int status, std::string_view message,
                         bool keep_alive, std::string_view request_id) {
  out.append("HTTP/1.1 ");
  appendNumber(out, static_cast<uint64_t>(status));
  out.append(" ").append(reasonPhrase(status)).append(kCrlf);
  out.append("Content-Type: text/plain; charset=utf-8\r\nContent-Length: ");
  appendNumber(out, message.size() + 1);
  out.append(kCrlf);
  if (!request_id.empty()) appendHeader(out, "X-Request-Id", request_id);
  if (!keep_alive) out.append("Connection: close\r\n");
  out.append(kCrlf).append(message).append("\n");
}

const char* reasonPhrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

}  // namespace sy::proxy
