#!/usr/bin/env python3
"""Forwarding: request/response rewriting (SPEC §4), framing of responses, HEAD/204, 404."""

import uuid
from types import SimpleNamespace

from harness import Cases, eq, expect, header_names, header_of, HOST, pattern_bytes, \
    run_against_one_upstream

cases = Cases("forwarding")
S = SimpleNamespace()


def marker():
    return uuid.uuid4().hex[:12]


def one_record(target_part):
    recs = S.blue.wait_records(lambda r: target_part in r["target"])
    eq(len(recs), 1, "requests received by the upstream for %s" % target_part)
    return recs[0]


@cases.case("GET is proxied: status, body, variant header both ways, X-Forwarded-*")
def _():
    m = marker()
    with S.env.client() as c:
        r = c.request("GET", "/hello/%s?q=1" % m)
    eq(r.status, 200, "status")
    eq(r.header("X-Upstream"), "blue", "X-Upstream")
    body = r.json()
    eq(body["upstream"], "blue", "body.upstream")
    eq(body["path"], "/hello/%s?q=1" % m, "body.path (target seen by upstream)")
    eq(r.header("X-Switchyard-Variant"), "blue", "response X-Switchyard-Variant")
    rec = one_record(m)
    eq(rec["method"], "GET", "upstream method")
    eq(header_of(rec, "X-Switchyard-Variant"), "blue", "upstream X-Switchyard-Variant")
    eq(header_of(rec, "X-Forwarded-For"), "127.0.0.1", "upstream X-Forwarded-For")
    eq(header_of(rec, "X-Forwarded-Proto"), "http", "upstream X-Forwarded-Proto")
    eq(header_of(rec, "X-Forwarded-Host"), HOST, "upstream X-Forwarded-Host")


@cases.case("X-Forwarded-For from the client is appended to, not replaced")
def _():
    m = marker()
    with S.env.client() as c:
        r = c.request("GET", "/xff/" + m, headers=[("X-Forwarded-For", "203.0.113.7")])
    eq(r.status, 200, "status")
    xff = header_of(one_record(m), "X-Forwarded-For")
    eq(xff.replace(" ", ""), "203.0.113.7,127.0.0.1", "upstream X-Forwarded-For")


@cases.case("X-Request-Id is generated when absent (distinct per request)")
def _():
    m = marker()
    with S.env.client() as c:
        for i in range(2):
            eq(c.request("GET", "/rid/%s/%d" % (m, i)).status, 200, "status")
    ids = [header_of(one_record("/rid/%s/%d" % (m, i)), "X-Request-Id") for i in range(2)]
    expect(all(ids), "upstream got no X-Request-Id: %r" % ids)
    expect(ids[0] != ids[1], "two requests got the same generated X-Request-Id %r" % ids[0])


@cases.case("X-Request-Id from the client is passed on unchanged")
def _():
    m = marker()
    rid = "client-id-" + m
    with S.env.client() as c:
        eq(c.request("GET", "/rid2/" + m, headers=[("X-Request-Id", rid)]).status, 200, "status")
    vals = [v for k, v in one_record(m)["headers"] if k.lower() == "x-request-id"]
    eq(vals, [rid], "X-Request-Id values at the upstream")


@cases.case("hop-by-hop headers are not forwarded (Connection + named, Keep-Alive, TE, ...)")
def _():
    m = marker()
    with S.env.client() as c:
        r = c.request("GET", "/hop/" + m, headers=[
            ("Connection", "keep-alive, Foo"), ("Foo", "must-not-pass"),
            ("Keep-Alive", "timeout=5"), ("TE", "trailers"), ("Trailer", "X-Trail"),
            ("Proxy-Connection", "keep-alive"), ("X-End-To-End", "kept")])
    eq(r.status, 200, "status")
    rec = one_record(m)
    names = header_names(rec)
    leaked = [h for h in ("foo", "keep-alive", "te", "trailer", "proxy-connection")
              if h in names]
    eq(leaked, [], "hop-by-hop headers received by the upstream")
    conn = (header_of(rec, "Connection") or "").lower()
    expect("foo" not in conn, "upstream Connection header still names foo: %r" % conn)
    eq(header_of(rec, "X-End-To-End"), "kept", "end-to-end header")


@cases.case("Upgrade outside an upgrade request is not forwarded")
def _():
    m = marker()
    with S.env.client() as c:
        r = c.request("GET", "/upg/" + m, headers=[("Upgrade", "h2c")])
    eq(r.status, 200, "status")
    eq(header_of(one_record(m), "Upgrade"), None, "Upgrade header at the upstream")


@cases.case("HEAD gets headers and no body; the connection stays usable")
def _():
    m = marker()
    with S.env.client() as c:
        r = c.request("HEAD", "/head/" + m)
        eq(r.status, 200, "HEAD status")
        eq(r.header("X-Upstream"), "blue", "X-Upstream")
        r2 = c.request("GET", "/after-head/" + m)  # would misparse if HEAD carried a body
        eq(r2.status, 200, "next GET status")
        eq(r2.json()["path"], "/after-head/" + m, "next GET body.path")
    eq(one_record("/head/" + m)["method"], "HEAD", "upstream method")


@cases.case("204 from upstream has no body; the connection stays usable")
def _():
    m = marker()
    with S.env.client() as c:
        r = c.request("GET", "/status?code=204&m=" + m)
        eq(r.status, 204, "status")
        eq(r.body, b"", "204 body")
        expect(r.header("Transfer-Encoding") is None, "204 with Transfer-Encoding %r"
               % r.header("Transfer-Encoding"))
        expect(r.header("Content-Length") in (None, "0"), "204 with Content-Length %r"
               % r.header("Content-Length"))
        r2 = c.request("GET", "/after-204/" + m)
        eq(r2.status, 200, "next request status")
        eq(r2.json()["path"], "/after-204/" + m, "next request body.path")


@cases.case("upstream status codes pass through (404, 500, 503 from upstream)")
def _():
    with S.env.client() as c:
        for code in (404, 500, 503):
            r = c.request("GET", "/status?code=%d" % code)
            eq(r.status, code, "status")
            eq(r.body, b"status %d\n" % code, "body")
            eq(r.header("X-Upstream"), "blue", "X-Upstream")


@cases.case("chunked response from upstream reaches the client intact (300000 bytes)")
def _():
    n = 300000
    with S.env.client() as c:
        r = c.request("GET", "/bytes?n=%d&chunked=1" % n)
        eq(r.status, 200, "status")
        eq(len(r.body), n, "body length")
        expect(r.body == pattern_bytes(0, n), "body bytes differ from the pattern")
        eq(c.request("GET", "/after-chunked").status, 200, "next request on the connection")


@cases.case("a chunked response's trailers reach the client, framing and hop-by-hop ones dropped")
def _():
    n = 100000
    m = marker()
    query = "&".join("trailer=" + t for t in (
        "X-Checksum:abc123", "Content-Length:5", "Transfer-Encoding:gzip", "Host:evil.test",
        "Connection:close", "Trailer:x", "Grpc-Status:0"))
    with S.env.client() as c:
        r = c.request("GET", "/bytes?n=%d&chunked=1&m=%s&%s" % (n, m, query))
        eq(r.status, 200, "status")
        eq(r.header("Transfer-Encoding"), "chunked", "framing to the client")
        expect(r.body == pattern_bytes(0, n), "body bytes differ from the pattern")
        eq(r.trailers, [("X-Checksum", "abc123"), ("Grpc-Status", "0")], "trailers")
        # A "Connection: close" trailer is not ours to act on: the connection goes on.
        eq(c.request("GET", "/after-trailers").status, 200, "next request on the connection")
    one_record(m)


@cases.case("an HTTP/1.0 client gets a close-delimited body: the upstream's trailers are dropped")
def _():
    n = 5000
    with S.env.client() as c:
        c.send(("GET /bytes?n=%d&chunked=1&trailer=X-Sum:1 HTTP/1.0\r\nHost: %s\r\n\r\n"
                % (n, HOST)).encode())
        r = c.read_response()
        eq(r.status, 200, "status")
        eq(r.body, pattern_bytes(0, n), "body (everything up to the close)")


@cases.case("close-delimited response from upstream reaches the client intact (300000 bytes)")
def _():
    n = 300000
    with S.env.client() as c:
        r = c.request("GET", "/bytes?n=%d&close=1" % n)
        eq(r.status, 200, "status")
        eq(len(r.body), n, "body length")
        expect(r.body == pattern_bytes(0, n), "body bytes differ from the pattern")


@cases.case("Content-Length response of 1 MiB intact")
def _():
    n = 1 << 20
    with S.env.client() as c:
        r = c.request("GET", "/bytes?n=%d" % n)
        eq(r.status, 200, "status")
        eq(r.header("Content-Length"), str(n), "Content-Length")
        expect(r.body == pattern_bytes(0, n), "body bytes differ from the pattern")


@cases.case("no matching route -> 404 (upstream not contacted)")
def _():
    m = marker()
    with S.env.client() as c:
        r = c.request("GET", "/nomatch/" + m, host="other.test")
    eq(r.status, 404, "status")
    eq(S.blue.find(lambda rec: m in rec["target"]), [], "requests received by the upstream")


@cases.case("HTTP/1.0 request without keep-alive is answered and closed")
def _():
    m = marker()
    with S.env.client() as c:
        c.send(("GET /http10/%s HTTP/1.0\r\nHost: %s\r\n\r\n" % (m, HOST)).encode())
        r = c.read_response()
        eq(r.status, 200, "status")
        eq(r.json()["path"], "/http10/" + m, "body.path")
        expect(c.closed_by_peer(5), "connection not closed after an HTTP/1.0 response")


def main():
    run_against_one_upstream(cases, S)


if __name__ == "__main__":
    main()
