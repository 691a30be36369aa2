#include "proxy/http/rewrite.h"

#include <charconv>

#include <http_parser.h>

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

// Header names the rewrite treats specially, recognised in one pass (length first, then one
// case-insensitive compare) instead of a chain of compares per header.
enum class Field : uint8_t {
  Other,
  Connection,
  KeepAlive,
  ProxyConnection,
  Te,
  Trailer,
  Upgrade,
  TransferEncoding,
  ContentLength,
  Expect,
  Host,
  XForwardedFor,
  XForwardedProto,
  XForwardedHost,
  XSwitchyardShadow,
};

Field classify(std::string_view name) {
  auto is = [&](std::string_view lower) { return equalsIgnoreCase(name, lower); };
  switch (name.size()) {
    case 2: return is("te") ? Field::Te : Field::Other;
    case 4: return is("host") ? Field::Host : Field::Other;
    case 6: return is("expect") ? Field::Expect : Field::Other;
    case 7:
      if (is("trailer")) return Field::Trailer;
      return is("upgrade") ? Field::Upgrade : Field::Other;
    case 10:
      if (is("connection")) return Field::Connection;
      return is("keep-alive") ? Field::KeepAlive : Field::Other;
    case 14: return is("content-length") ? Field::ContentLength : Field::Other;
    case 15: return is("x-forwarded-for") ? Field::XForwardedFor : Field::Other;
    case 16:
      if (is("proxy-connection")) return Field::ProxyConnection;
      return is("x-forwarded-host") ? Field::XForwardedHost : Field::Other;
    case 17:
      if (is("transfer-encoding")) return Field::TransferEncoding;
      return is("x-forwarded-proto") ? Field::XForwardedProto : Field::Other;
    case 19: return is("x-switchyard-shadow") ? Field::XSwitchyardShadow : Field::Other;
    default: return Field::Other;
  }
}

bool isFixedHopByHop(Field f) {
  switch (f) {
    case Field::Connection:
    case Field::KeepAlive:
    case Field::ProxyConnection:
    case Field::Te:
    case Field::Trailer:
    case Field::Upgrade:
    case Field::TransferEncoding: return true;
    default: return false;
  }
}

// Whether any Connection header of the message names `name` (RFC 9110 §7.6.1). Most messages
// have no Connection header or only "keep-alive"/"close", so this is usually one short scan.
bool namedByConnection(std::string_view name, const Headers& headers) {
  for (const Header& h : headers) {
    if (h.name.size() == 10 && equalsIgnoreCase(h.name, "connection") &&
        listHasToken(h.value, name)) {
      return true;
    }
  }
  return false;
}

// Whether the message has a Connection header naming anything besides keep-alive/close/upgrade
// (only then must every header be checked against it).
bool connectionNamesFields(const Headers& headers) {
  for (const Header& h : headers) {
    if (h.name.size() != 10 || !equalsIgnoreCase(h.name, "connection")) continue;
    std::string_view list = h.value;
    while (!list.empty()) {
      size_t comma = list.find(',');
      std::string_view item = list.substr(0, comma);
      while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
      while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
      if (!item.empty() && !equalsIgnoreCase(item, "keep-alive") &&
          !equalsIgnoreCase(item, "close") && !equalsIgnoreCase(item, "upgrade")) {
        return true;
      }
      if (comma == std::string_view::npos) break;
      list.remove_prefix(comma + 1);
    }
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
  return isFixedHopByHop(classify(name)) || namedByConnection(name, headers);
}

bool forwardableTrailer(std::string_view name) {
  if (!name.empty() && name[0] == ':') return false;
  const Field field = classify(name);
  return !isFixedHopByHop(field) && field != Field::ContentLength && field != Field::Host;
}

void appendLastChunk(std::string& out, const Headers& trailers) {
  out.append("0\r\n");
  for (const Header& h : trailers) {
    if (forwardableTrailer(h.name)) appendHeader(out, h.name, h.value);
  }
  out.append(kCrlf);
}

void appendUpstreamRequestHead(std::string& out, const RequestHead& head,
                               const RequestRewrite& rw) {
  out.append(head.method).append(" ").append(head.target).append(" HTTP/1.1\r\n");
  const bool check_connection = connectionNamesFields(head.headers);
  std::string_view host;
  bool have_xff = false;
  for (const Header& h : head.headers) {
    std::string_view name = h.name;
    const Field field = classify(name);
    if (isFixedHopByHop(field)) continue;
    if (check_connection && namedByConnection(name, head.headers)) continue;
    switch (field) {
      case Field::ContentLength:      // re-framed below
      case Field::Expect:             // 100-continue is answered by us
      case Field::XForwardedProto:    // set below
      case Field::XForwardedHost:     // set below
      case Field::XSwitchyardShadow:  // only we say what is a shadow copy
        continue;
      case Field::Host: host = h.value; break;
      case Field::XForwardedFor: {
        // Several X-Forwarded-For fields are one list (RFC 9110 §5.3): merge them, ours last.
        if (have_xff) continue;
        have_xff = true;
        out.append("X-Forwarded-For: ");
        bool first = true;
        for (const Header& x : head.headers) {
          if (classify(x.name) != Field::XForwardedFor) continue;
          if (!first) out.append(", ");
          out.append(x.value);
          first = false;
        }
        out.append(", ").append(rw.client_ip).append(kCrlf);
        continue;
      }
      default: break;
    }
    if (!rw.variant_header.empty() && equalsIgnoreCase(name, rw.variant_header)) continue;
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

void forEachDownstreamResponseHeader(const ResponseHead& head, const ResponseRewrite& rw,
                                     const HeaderSink& emit) {
  // Content-Length of a body-less response (HEAD, 304) describes the representation and is
  // passed on; otherwise the framing header is ours.
  const bool keep_length = rw.framing == BodyFraming::None;
  const bool check_connection = connectionNamesFields(head.headers);
  for (const Header& h : head.headers) {
    const Field field = classify(h.name);
    if (isFixedHopByHop(field)) continue;
    if (check_connection && namedByConnection(h.name, head.headers)) continue;
    if (!keep_length && field == Field::ContentLength) continue;
    if (!rw.variant_header.empty() && equalsIgnoreCase(h.name, rw.variant_header)) continue;
    emit(h.name, h.value);
  }
  if (!rw.variant_header.empty()) emit(rw.variant_header, rw.variant);
  if (!rw.set_cookie.empty()) {
    std::string cookie;
    cookie.reserve(rw.set_cookie.size() + 32);
    cookie.append(rw.set_cookie).append("; Path=/; HttpOnly; SameSite=Lax");
    emit("Set-Cookie", cookie);
  }
  if (!keep_length) {
    if (rw.framing == BodyFraming::ContentLength) {
      char buf[24];
      auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), rw.content_length);
      (void)ec;
      emit("Content-Length", std::string_view(buf, static_cast<size_t>(end - buf)));
    } else if (rw.framing == BodyFraming::Chunked) {
      emit("Transfer-Encoding", "chunked");
    }
  }
  if (rw.upgrade) {
    if (auto up = findHeader(head.headers, "upgrade")) emit("Upgrade", *up);
    emit("Connection", "upgrade");
  } else if (!rw.keep_alive) {
    emit("Connection", "close");
  } else if (rw.http10_client) {
    emit("Connection", "keep-alive");
  }
}

void appendDownstreamResponseHead(std::string& out, const ResponseHead& head,
                                  const ResponseRewrite& rw) {
  out.append("HTTP/1.1 ");
  appendNumber(out, head.status);
  out.append(" ").append(head.reason.empty() ? reasonPhrase(head.status) : head.reason);
  out.append(kCrlf);
  forEachDownstreamResponseHeader(head, rw, [&out](std::string_view name, std::string_view value) {
    appendHeader(out, name, value);
  });
  out.append(kCrlf);
}

void appendErrorResponse(std::string& out, int status, std::string_view message, bool keep_alive,
                         std::string_view request_id, bool with_body) {
  out.append("HTTP/1.1 ");
  appendNumber(out, static_cast<uint64_t>(status));
  out.append(" ").append(reasonPhrase(status)).append(kCrlf);
  out.append("Content-Type: text/plain; charset=utf-8\r\nContent-Length: ");
  appendNumber(out, message.size() + 1);
  out.append(kCrlf);
  if (!request_id.empty()) appendHeader(out, "X-Request-Id", request_id);
  if (!keep_alive) out.append("Connection: close\r\n");
  out.append(kCrlf);
  if (with_body) out.append(message).append("\n");
}

bool toOriginForm(RequestHead& head) {
  std::string_view t = head.target;
  auto startsWithCi = [&](std::string_view prefix) {
    return t.size() >= prefix.size() && equalsIgnoreCase(t.substr(0, prefix.size()), prefix);
  };
  if (!startsWithCi("http://") && !startsWithCi("https://")) return true;
  http_parser_url url;
  http_parser_url_init(&url);
  if (http_parser_parse_url(t.data(), t.size(), 0, &url) != 0) return false;
  if ((url.field_set & (1 << UF_USERINFO)) != 0 || (url.field_set & (1 << UF_HOST)) == 0) {
    return false;
  }
  auto field = [&](int f) {
    return std::string_view(t.data() + url.field_data[f].off, url.field_data[f].len);
  };
  // The authority as written (host, brackets for IPv6, and the port if any).
  const size_t host_off = url.field_data[UF_HOST].off;
  size_t authority_end = host_off + url.field_data[UF_HOST].len;
  if (host_off > 0 && t[host_off - 1] == '[') authority_end += 1;  // "]" after an IPv6 host
  if (url.field_set & (1 << UF_PORT)) {
    authority_end = url.field_data[UF_PORT].off + url.field_data[UF_PORT].len;
  }
  const size_t authority_begin = host_off > 0 && t[host_off - 1] == '[' ? host_off - 1 : host_off;
  std::string authority(t.substr(authority_begin, authority_end - authority_begin));
  std::string origin;
  if (url.field_set & (1 << UF_PATH)) {
    origin.assign(field(UF_PATH));
  } else {
    origin.assign("/");
  }
  if (url.field_set & (1 << UF_QUERY)) origin.append("?").append(field(UF_QUERY));
  head.target = std::move(origin);
  bool replaced = false;
  for (auto it = head.headers.begin(); it != head.headers.end();) {
    if (equalsIgnoreCase(it->name, "host")) {
      if (replaced) {
        it = head.headers.erase(it);
        continue;
      }
      it->value = authority;
      replaced = true;
    }
    ++it;
  }
  if (!replaced) head.headers.push_back(Header{"Host", std::move(authority)});
  return true;
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
