#!/usr/bin/env python3
"""Request bodies: 10 MiB streamed with Content-Length and chunked, Expect: 100-continue, the
trailer section of a chunked body."""

import os
import threading
import uuid
from types import SimpleNamespace

from harness import build_request, Cases, encode_chunked, eq, expect, header_of, \
    run_against_one_upstream, sha256

cases = Cases("bodies")
S = SimpleNamespace()
BIG = 10 * 1024 * 1024


def marker():
    return uuid.uuid4().hex[:12]


def send_in_thread(client, data):
    """Sends while the caller reads, so neither side can block the other on full buffers."""
    errors = []

    def run():
        try:
            client.send(data)
        except OSError as e:
            errors.append(e)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, errors


def post_echo(body, chunked, query=""):
    m = marker()
    target = "/echo?m=%s%s" % (m, query)
    with S.env.client(timeout=30) as c:
        req = build_request("POST", target, body=body, chunked=chunked,
                            chunk_size=[65536, 1, 4093, 100000, 17] if chunked else 65536)
        t, errors = send_in_thread(c, req)
        r = c.read_response()
        t.join(30)
        expect(not errors, "sending the body failed: %r" % errors)
    eq(r.status, 200, "status")
    eq(len(r.body), len(body), "echoed body length")
    eq(sha256(r.body), sha256(body), "echoed body sha256")
    recs = S.blue.wait_records(lambda rec: m in rec["target"])
    eq(len(recs), 1, "requests received by the upstream")
    eq(recs[0]["body_bytes"], len(body), "body bytes received by the upstream")
    eq(recs[0]["body_sha256"], sha256(body), "body sha256 received by the upstream")
    return r


@cases.case("POST 10 MiB with Content-Length to /echo: byte-exact both ways")
def _():
    post_echo(os.urandom(BIG), chunked=False)


@cases.case("POST 10 MiB chunked (odd chunk sizes) to /echo: byte-exact both ways")
def _():
    post_echo(os.urandom(BIG), chunked=True)


@cases.case("POST 10 MiB, upstream answers chunked: byte-exact")
def _():
    r = post_echo(os.urandom(BIG), chunked=False, query="&chunked=1")
    expect(r.header("Content-Length") is None or r.header("Content-Length") == str(BIG),
           "bad Content-Length %r" % r.header("Content-Length"))


@cases.case("small POST bodies on one keep-alive connection (CL, chunked, empty)")
def _():
    with S.env.client() as c:
        for i, (body, chunked) in enumerate([(b"abc", False), (b"defgh", True), (b"", False),
                                             (b"x" * 70000, True), (b"yz", False)]):
            r = c.request("POST", "/echo?i=%d" % i, body=body, chunked=chunked)
            eq(r.status, 200, "status of body %d" % i)
            eq(r.body, body, "echo of body %d" % i)


@cases.case("Expect: 100-continue: 100 Continue first, then the final response after the body")
def _():
    m = marker()
    body = os.urandom(256 * 1024)
    with S.env.client(timeout=10) as c:
        head = build_request("POST", "/echo?m=" + m, headers=[
            ("Expect", "100-continue"), ("Content-Length", str(len(body)))])
        c.send(head)
        expect(c.wait_for_data(5), "nothing received within 5s after a head with "
               "Expect: 100-continue (no 100 Continue)")
        version, status, reason, _ = c.read_head()
        eq(status, 100, "first response status (interim)")
        c.send(body)
        r = c.read_response()
    eq(r.status, 200, "final status")
    eq(sha256(r.body), sha256(body), "echoed body sha256")
    rec = S.blue.wait_records(lambda rec: m in rec["target"])[0]
    eq(rec["body_sha256"], sha256(body), "body sha256 received by the upstream")


@cases.case("Expect: 100-continue with a chunked body")
def _():
    m = marker()
    body = os.urandom(100000)
    with S.env.client(timeout=10) as c:
        c.send(build_request("POST", "/echo?m=" + m, headers=[
            ("Expect", "100-continue"), ("Transfer-Encoding", "chunked")]))
        expect(c.wait_for_data(5), "no 100 Continue within 5s")
        eq(c.read_head()[1], 100, "first response status (interim)")
        c.send(encode_chunked(body, 30000))
        r = c.read_response()
    eq(r.status, 200, "final status")
    eq(sha256(r.body), sha256(body), "echoed body sha256")


@cases.case("a chunked body's trailers reach the upstream, framing and hop-by-hop ones dropped")
def _():
    m = marker()
    body = os.urandom(300000)
    trailers = [("X-Checksum", sha256(body)), ("Content-Length", "5"), ("Host", "evil.test"),
                ("Connection", "close"), ("Keep-Alive", "5"), ("TE", "trailers"),
                ("Trailer", "x"), ("Upgrade", "h2c"), ("Grpc-Status", "0")]
    with S.env.client(timeout=30) as c:
        req = build_request("POST", "/echo?m=" + m, body=body, chunked=True,
                            chunk_size=[65536, 1, 4093], trailers=trailers)
        t, errors = send_in_thread(c, req)
        r = c.read_response()
        t.join(30)
        expect(not errors, "sending the body failed: %r" % errors)
        eq(r.status, 200, "status")
        eq(sha256(r.body), sha256(body), "echoed body sha256")
        eq(c.request("GET", "/after-trailers?m=" + m).status, 200, "next request")
    rec = S.blue.wait_records(lambda rec: rec["target"] == "/echo?m=" + m)[0]
    eq(rec["body_sha256"], sha256(body), "body sha256 received by the upstream")
    eq(rec["trailers"], [["X-Checksum", sha256(body)], ["Grpc-Status", "0"]],
       "trailers received by the upstream")
    eq(header_of(rec, "Transfer-Encoding"), "chunked", "upstream framing")


@cases.case("a trailer section beyond max_header_bytes is answered 431 and closed")
def _():
    m = marker()
    trailers = [("X-Pad-%d" % i, "p" * 1000) for i in range(70)]  # 70 KB > 64 KiB
    with S.env.client() as c:
        c.send(build_request("POST", "/echo?m=" + m, body=b"abc", chunked=True,
                             trailers=trailers))
        r = c.read_response()
        eq(r.status, 431, "status")
        expect(c.closed_by_peer(5), "connection not closed after the 431")
    eq(S.blue.find(lambda rec: m in rec["target"]), [], "complete requests at the upstream")


def main():
    run_against_one_upstream(cases, S)


if __name__ == "__main__":
    main()
