#!/usr/bin/env python3
"""Errors and limits (SPEC §4): 400, 404, 413, 431, 502, 504, the connect-failure retry, and
the replay of a request whose reused upstream connection was closed before any response byte."""

import uuid
from types import SimpleNamespace

from harness import Cases, Env, RawServer, build_request, config_doc, dead_address, eq, \
    expect, free_port, route

cases = Cases("errors")
S = SimpleNamespace()
MAX_HEADER = 8192
MAX_BODY = 1024 * 1024
RESPONSE_MS = 300


def marker():
    return uuid.uuid4().hex[:12]


def received(m):
    return S.blue.find(lambda rec: m in rec["target"])


@cases.case("upstream down (connection refused) -> 502")
def _():
    with S.env.client() as c:
        r = c.request("GET", "/down", host="down.test")
        eq(r.status, 502, "status")
        # The client connection survives an upstream error.
        r2 = c.request("GET", "/after-502")
        eq(r2.status, 200, "next request on the same connection")


@cases.case("upstream resets before answering -> 502")
def _():
    m = marker()
    with S.env.client() as c:
        r = c.request("GET", "/reset?m=" + m)
    eq(r.status, 502, "status")
    eq(len(received(m)), 1, "requests received by the upstream (a reset is not retried)")


@cases.case("slow upstream (/sleep 2000 ms, upstream_response_ms = %d) -> 504" % RESPONSE_MS)
def _():
    m = marker()
    with S.env.client(timeout=10) as c:
        r = c.request("GET", "/sleep?ms=2000&m=" + m)
    eq(r.status, 504, "status")
    eq(len(received(m)), 1, "requests received by the upstream (a timeout is not retried)")


@cases.case("an upstream within upstream_response_ms is not cut (/sleep 50 ms) -> 200")
def _():
    with S.env.client() as c:
        eq(c.request("GET", "/sleep?ms=50").status, 200, "status")


@cases.case("malformed request (garbage request line) -> 400 and the connection is closed")
def _():
    with S.env.client() as c:
        c.send(b"THIS IS NOT HTTP\r\n\r\n")
        r = c.read_response()
        eq(r.status, 400, "status")
        expect(c.closed_by_peer(5), "connection still open 5s after the 400")


@cases.case("malformed header line (no colon) -> 400")
def _():
    with S.env.client() as c:
        c.send(b"GET / HTTP/1.1\r\nHost: app.test\r\nthis header has no colon\r\n\r\n")
        eq(c.read_response().status, 400, "status")


@cases.case("Content-Length plus Transfer-Encoding (smuggling) -> 400, or chunked wins alone")
def _():
    m = marker()
    with S.env.client() as c:
        c.send(("POST /echo?m=%s HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4\r\n"
                "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" % m).encode())
        r = c.read_response()
    if r.status == 400:
        eq(received(m), [], "requests received by the upstream")
        return
    eq(r.status, 200, "status (400, or 200 with the chunked body)")
    eq(r.body, b"hello", "body framed by Transfer-Encoding")
    recs = received(m)
    eq(len(recs), 1, "requests received by the upstream")
    names = [k.lower() for k, _ in recs[0]["headers"]]
    expect(not ("content-length" in names and "transfer-encoding" in names),
           "upstream received both Content-Length and Transfer-Encoding: %r" % recs[0]["headers"])


@cases.case("two different Content-Length values -> 400")
def _():
    m = marker()
    with S.env.client() as c:
        c.send(("POST /echo?m=%s HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\n"
                "Content-Length: 5\r\n\r\nhello" % m).encode())
        eq(c.read_response().status, 400, "status")
    eq(received(m), [], "requests received by the upstream")


@cases.case("non-numeric Content-Length -> 400")
def _():
    with S.env.client() as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 12abc\r\n\r\n")
        eq(c.read_response().status, 400, "status")


@cases.case("CONNECT -> 501 (no tunnels), upstream not contacted, the connection is closed")
def _():
    m = marker()
    with S.env.client() as c:
        c.send(("CONNECT tunnel-%s.test:443 HTTP/1.1\r\nHost: tunnel-%s.test:443\r\n\r\n"
                % (m, m)).encode())
        r = c.read_response()
        eq(r.status, 501, "status")
        eq(r.body, b"method not implemented\n", "body")
        expect(c.closed_by_peer(5), "connection still open 5s after the 501")
    eq(received(m), [], "requests received by the upstream")


@cases.case("HEAD answered by the proxy (404): no body, the next request on the connection is whole")
def _():
    m = marker()
    with S.env.client() as c:
        c.send(b"HEAD /x HTTP/1.1\r\nHost: nowhere.test\r\n\r\n"
               b"GET /after-head?m=" + m.encode() + b" HTTP/1.1\r\nHost: app.test\r\n\r\n")
        r = c.read_response(method="HEAD")
        eq(r.status, 404, "HEAD status")
        eq(r.header("content-length"), "26", "Content-Length of the body a GET would get")
        r = c.read_response()
        eq(r.status, 200, "the next response's status (a body sent for HEAD would be read here)")
    eq(len(received(m)), 1, "requests received by the upstream")


@cases.case("no matching route -> 404")
def _():
    with S.env.client() as c:
        eq(c.request("GET", "/", host="nowhere.test").status, 404, "status")


@cases.case("header block over max_header_bytes (%d) -> 431, upstream not contacted"
            % MAX_HEADER)
def _():
    m = marker()
    with S.env.client() as c:
        r = c.request("GET", "/big-head?m=" + m, headers=[("X-Big", "a" * (2 * MAX_HEADER))])
    eq(r.status, 431, "status")
    eq(received(m), [], "requests received by the upstream")


@cases.case("many headers summing over max_header_bytes -> 431")
def _():
    with S.env.client() as c:
        r = c.request("GET", "/many-heads",
                      headers=[("X-H%d" % i, "v" * 100) for i in range(MAX_HEADER // 50)])
    eq(r.status, 431, "status")


@cases.case("header block just under max_header_bytes -> 200")
def _():
    with S.env.client() as c:
        r = c.request("GET", "/ok-head", headers=[("X-Medium", "a" * (MAX_HEADER // 2))])
    eq(r.status, 200, "status")


@cases.case("body over max_body_bytes (Content-Length) -> 413, upstream not contacted")
def _():
    m = marker()
    n = 2 * MAX_BODY
    with S.env.client() as c:
        c.send(build_request("POST", "/echo?m=" + m, headers=[("Content-Length", str(n))]))
        if not c.wait_for_data(3):  # a proxy may want to see the body start first
            try:
                c.send(b"z" * n)
            except OSError:
                pass
        r = c.read_response()
    eq(r.status, 413, "status")
    eq(received(m), [], "requests received by the upstream")


@cases.case("chunked body over max_body_bytes -> 413")
def _():
    m = marker()
    with S.env.client() as c:
        try:
            c.send(build_request("POST", "/echo?m=" + m, body=b"c" * (2 * MAX_BODY),
                                 chunked=True))
        except OSError:
            pass  # the proxy may answer and close before the whole body is sent
        r = c.read_response()
    eq(r.status, 413, "status")


@cases.case("body at max_body_bytes -> 200")
def _():
    with S.env.client() as c:
        r = c.request("POST", "/echo", body=b"q" * MAX_BODY)
    eq(r.status, 200, "status")
    eq(len(r.body), MAX_BODY, "echoed length")


@cases.case("retry: pool [dead, live]: connect failure retried on the live server -> 200 x 20")
def _():
    m = marker()
    statuses = []
    for i in range(20):  # new connections, so both workers and both servers are exercised
        with S.env.client() as c:
            r = c.request("GET", "/retry/%s/%d" % (m, i), host="retry.test")
            statuses.append(r.status)
            if r.status == 200:
                eq(r.header("X-Upstream"), "blue", "X-Upstream")
    eq(statuses, [200] * 20, "statuses")
    eq(len(received(m)), 20, "requests received by the live server (each exactly once)")


# ---- replay on a reused upstream connection -------------------------------------------------

class ReuseUpstream(RawServer):
    """A raw HTTP/1.1 upstream on 127.0.0.1, a thread per connection, that answers 200 "ok" and
    keeps the connection open, except for targets holding:

      /drop-on-reuse/     on a reused connection (not its first request): reads the head, then
                          closes without sending a byte (a server closing an idle keep-alive
                          connection just as the next request arrives)
      /drop-after-body/   on a reused connection: reads the head and the whole Content-Length
                          body, then closes without sending a byte
      /drop-always/       on any connection: reads the head, then closes without a byte

    Every request head is recorded as (connection number, request number on it, target, body
    bytes read) before anything is answered."""

    def __init__(self):
        self.seen = []   # [(conn, seq, target, body bytes)]
        super().__init__()

    def serve(self, s, conn):
        buf = bytearray()
        seq = 0
        s.settimeout(30)
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = s.recv(65536)
                    if not d:
                        return
                    buf += d
                i = buf.index(b"\r\n\r\n")
                head = bytes(buf[:i]).decode("latin-1")
                del buf[:i + 4]
                seq += 1
                target = head.split("\r\n")[0].split(" ")[1]
                length = 0
                for line in head.split("\r\n")[1:]:
                    k, _, v = line.partition(":")
                    if k.strip().lower() == "content-length":
                        length = int(v.strip())
                drop_after_body = "/drop-after-body/" in target and seq > 1
                if drop_after_body:
                    while len(buf) < length:
                        d = s.recv(65536)
                        if not d:
                            break
                        buf += d
                got = min(length, len(buf)) if drop_after_body else 0
                with self.lock:
                    self.seen.append((conn, seq, target, got))
                if ("/drop-on-reuse/" in target and seq > 1) or drop_after_body \
                        or "/drop-always/" in target:
                    return  # closes (finally) without a byte of response
                while len(buf) < length:  # a body for an ordinary request: read and drop it
                    d = s.recv(65536)
                    if not d:
                        return
                    buf += d
                del buf[:length]
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except OSError:
            return
        finally:
            s.close()

    def with_marker(self, m):
        with self.lock:
            return [r for r in self.seen if m in r[2]]


def on_reused_connection(c, m, method, target, body=None):
    """On client connection c: a warm-up GET (so this worker holds an idle upstream connection),
    then the request; its response."""
    eq(c.request("GET", "/warm/%s" % m, host="reuse.test").status, 200, "warm-up status")
    return c.request(method, target, host="reuse.test", body=body)


def first_on_reused(seen, what):
    expect(seen and seen[0][1] > 1, "%s: first arrival %r was not on a reused upstream connection"
           " (the case needs the proxy to reuse its idle connection)" % (what, seen[:1]))


for _method in ("GET", "HEAD"):
    @cases.case("reused upstream connection closed when a %s arrives, before any response byte "
                "-> replayed once on a new connection: 200" % _method)
    def _(method=_method):
        m = marker()
        with S.env.client() as c:
            r = on_reused_connection(c, m, method, "/drop-on-reuse/%s" % m)
        seen = S.reuse.with_marker("/drop-on-reuse/%s" % m)
        eq(r.status, 200, "status (upstream saw %r)" % seen)
        if method == "GET":
            eq(r.body, b"ok", "body")
        eq(len(seen), 2, "arrivals at the upstream (the dropped one, then the replay): %r" % seen)
        first_on_reused(seen, "replay")
        expect(seen[1][0] != seen[0][0] and seen[1][1] == 1,
               "the replay was not on a fresh connection: %r" % seen)


@cases.case("replay happens once: the fresh connection is closed too -> 502, the upstream saw "
            "the request twice")
def _():
    m = marker()
    with S.env.client() as c:
        r = on_reused_connection(c, m, "GET", "/drop-always/%s" % m)
    seen = S.reuse.with_marker("/drop-always/%s" % m)
    eq(r.status, 502, "status (upstream saw %r)" % seen)
    eq(len(seen), 2, "arrivals at the upstream (the dropped one, one replay): %r" % seen)
    first_on_reused(seen, "replay once")


@cases.case("a POST whose whole body reached the upstream on a reused connection that then "
            "closes -> 502, not replayed")
def _():
    # The upstream had the complete request: it may have acted on it, and its body is gone from
    # the client's side, so a replay could apply the POST twice (RFC 9110 §9.2.2).
    m = marker()
    body = b"p" * 65536
    with S.env.client() as c:
        r = on_reused_connection(c, m, "POST", "/drop-after-body/%s" % m, body=body)
    seen = S.reuse.with_marker("/drop-after-body/%s" % m)
    eq(r.status, 502, "status (upstream saw %r)" % seen)
    eq(len(seen), 1, "arrivals at the upstream (never replayed): %r" % seen)
    first_on_reused(seen, "no replay")
    eq(seen[0][3], len(body), "body bytes the upstream read before closing")


def main():
    with Env(cases) as env:
        S.env = env
        S.blue = env.upstream("blue")
        S.reuse = ReuseUpstream()
        env.start_proxy(config_doc(
            free_port(),
            pools={"blue": [S.blue.addr], "down": [dead_address()],
                   "half": [dead_address(), S.blue.addr], "reuse": [S.reuse.addr]},
            routes=[route("down", {"blue": "down"}, {"blue": 100}, host="down.test"),
                    route("retry", {"blue": "half"}, {"blue": 100}, host="retry.test"),
                    route("reuse", {"blue": "reuse"}, {"blue": 100}, host="reuse.test"),
                    route("app", {"blue": "blue"}, {"blue": 100})],
            timeouts={"upstream_response_ms": RESPONSE_MS, "upstream_connect_ms": 1000},
            limits={"max_header_bytes": MAX_HEADER, "max_body_bytes": MAX_BODY}))
        try:
            cases.run()
        finally:
            S.reuse.stop()
    cases.exit()


if __name__ == "__main__":
    main()
