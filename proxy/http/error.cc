#include "proxy/http/error.h"

namespace sy::proxy {

int statusFor(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::MalformedRequest: return 400;
    case ErrorKind::HeadTimeout: return 408;
    case ErrorKind::HeadTooLarge: return 431;
    case ErrorKind::BodyTooLarge: return 413;
    case ErrorKind::NoRoute: return 404;
    case ErrorKind::VersionNotSupported: return 505;
    case ErrorKind::MethodNotImplemented: return 501;
    case ErrorKind::ConnectFailed:
    case ErrorKind::ResetBeforeResponse:
    case ErrorKind::MalformedResponse: return 502;
    case ErrorKind::ResponseTimeout: return 504;
    case ErrorKind::NoHealthyServer: return 503;
  }
  return 500;
}

const char* messageFor(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::MalformedRequest: return "bad request";
    case ErrorKind::HeadTimeout: return "request head timeout";
    case ErrorKind::HeadTooLarge: return "request header fields too large";
    case ErrorKind::BodyTooLarge: return "request body too large";
    case ErrorKind::NoRoute: return "no route for this request";
    case ErrorKind::VersionNotSupported: return "HTTP version not supported";
    case ErrorKind::MethodNotImplemented: return "method not implemented";
    case ErrorKind::ConnectFailed: return "upstream connect failed";
    case ErrorKind::ResetBeforeResponse: return "upstream closed the connection before responding";
    case ErrorKind::MalformedResponse: return "upstream sent a malformed response";
    case ErrorKind::ResponseTimeout: return "upstream response timeout";
    case ErrorKind::NoHealthyServer: return "no healthy upstream server";
  }
  return "internal error";
}

}  // namespace sy::proxy
