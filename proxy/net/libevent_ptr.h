#pragma once
// The one place that names libevent's free functions: every libevent handle is held by exactly
// one of these aliases (Envoy's source/common/event/libevent.h idea, with a zero-size deleter).

#include <memory>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "common/c_deleter.h"

namespace sy::proxy {

using EventBasePtr = std::unique_ptr<event_base, CDeleter<&event_base_free>>;
using EventPtr = std::unique_ptr<event, CDeleter<&event_free>>;
using BufferEventPtr = std::unique_ptr<bufferevent, CDeleter<&bufferevent_free>>;
using EvBufferPtr = std::unique_ptr<evbuffer, CDeleter<&evbuffer_free>>;
using ListenerPtr = std::unique_ptr<evconnlistener, CDeleter<&evconnlistener_free>>;

}  // namespace sy::proxy
