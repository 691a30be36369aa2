#!/usr/bin/env python3
"""Errors and limits (SPEC §4): 400, 404, 413, 431, 502, 504, and the connect-failure retry."""

import uuid
from types import SimpleNamespace

from harness import Cases, Env, build_request, config_doc, dead_address, eq, expect, \
    free_port, route

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


def main():
    with Env(cases) as env:
        S.env = env
        S.blue = env.upstream("blue")
        env.start_proxy(config_doc(
            free_port(),
            pools={"blue": [S.blue.addr], "down": [dead_address()],
                   "half": [dead_address(), S.blue.addr]},
            routes=[route("down", {"blue": "down"}, {"blue": 100}, host="down.test"),
                    route("retry", {"blue": "half"}, {"blue": 100}, host="retry.test"),
                    route("app", {"blue": "blue"}, {"blue": 100})],
            timeouts={"upstream_response_ms": RESPONSE_MS, "upstream_connect_ms": 1000},
            limits={"max_header_bytes": MAX_HEADER, "max_body_bytes": MAX_BODY}))
        cases.run()
    cases.exit()


if __name__ == "__main__":
    main()
