#pragma once
// The deleter every C handle alias uses (libevent in proxy/net/libevent_ptr.h, OpenSSL in
// config/openssl_ptr.h): a zero-size function object calling the library's own free function,
// so no other file calls a *_free (Envoy's source/common/event/libevent.h idea).
//
// Thread: any.

namespace sy {

template <auto Fn>
struct CDeleter {
  template <class T>
  void operator()(T* p) const {
    Fn(p);
  }
};

}  // namespace sy
