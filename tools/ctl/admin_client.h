#pragma once
// The HTTP client switchyard-ctl uses to reach the admin endpoint: one request on a fresh
// connection with libevent's evhttp client, on a private event_base. Blocking.
//
// Thread: any (each call has its own event_base).

#include "tools/ctl/cli.h"

namespace sy::ctl {

// Sends `request` and waits for the whole answer or `request.timeout_seconds`. Host names
// are resolved with the system resolver. Never throws; failures come back as status 0 with
// `error` set.
HttpResponse httpCall(const HttpRequest& request);

}  // namespace sy::ctl
