#!/usr/bin/env python3
"""Connections: client keep-alive, upstream reuse, pipelining, WebSocket (101) tunnels."""

import base64
import hashlib
import os
import threading
import uuid
from types import SimpleNamespace

from harness import build_request, Cases, eq, expect, header_of, run_against_one_upstream

cases = Cases("connections")
S = SimpleNamespace()


def marker():
    return uuid.uuid4().hex[:12]


@cases.case("200 keep-alive requests on one client connection all reach the upstream")
def _():
    m = marker()
    with S.env.client() as c:
        for i in range(200):
            r = c.request("GET", "/ka/%s/%d" % (m, i))
            eq(r.status, 200, "status of request %d" % i)
            eq(r.json()["path"], "/ka/%s/%d" % (m, i), "body.path of request %d" % i)
            expect(not c.eof, "connection closed after request %d" % i)
    recs = S.blue.wait_records(lambda rec: m in rec["target"], count=200)
    eq(len(recs), 200, "requests received by the upstream")
    S.ka_upstream_conns = len({rec["conn"] for rec in recs})


@cases.case("upstream connections are reused (200 sequential requests use few)")
def _():
    n = getattr(S, "ka_upstream_conns", None)
    expect(n is not None, "depends on the keep-alive case, which failed")
    expect(n <= 4, "200 sequential requests used %d upstream connections" % n)


@cases.case("50 pipelined requests in one write: 50 responses, in order")
def _():
    m = marker()
    data = b"".join(build_request("GET", "/pipe/%s/%d" % (m, i)) for i in range(50))
    with S.env.client(timeout=15) as c:
        c.send(data)
        for i in range(50):
            r = c.read_response()
            eq(r.status, 200, "status of response %d" % i)
            eq(r.json()["path"], "/pipe/%s/%d" % (m, i), "body.path of response %d" % i)
        r = c.request("GET", "/pipe/%s/after" % m)
        eq(r.status, 200, "request after the pipeline")
    recs = S.blue.wait_records(lambda rec: m in rec["target"], count=51)
    eq(len(recs), 51, "requests received by the upstream")


@cases.case("pipelined POSTs with bodies, in order")
def _():
    m = marker()
    bodies = [os.urandom(1000 * (i + 1)) for i in range(10)]
    data = b"".join(build_request("POST", "/echo?m=%s&i=%d" % (m, i), body=b,
                                  chunked=(i % 2 == 1)) for i, b in enumerate(bodies))
    with S.env.client(timeout=15) as c:
        c.send(data)
        for i, b in enumerate(bodies):
            r = c.read_response()
            eq(r.status, 200, "status of response %d" % i)
            eq(len(r.body), len(b), "length of response %d" % i)
            expect(r.body == b, "body of response %d differs" % i)


@cases.case("Connection: close from the client: answered, then closed")
def _():
    with S.env.client() as c:
        r = c.request("GET", "/bye", headers=[("Connection", "close")])
        eq(r.status, 200, "status")
        expect(c.closed_by_peer(5), "connection still open 5s after a Connection: close exchange")


@cases.case("upstream closing its connection after a response does not break the client")
def _():
    with S.env.client() as c:
        for i in range(3):
            r = c.request("GET", "/close?i=%d" % i)  # upstream answers with Connection: close
            eq(r.status, 200, "status of request %d" % i)
            expect(not c.eof, "client connection closed after request %d" % i)


def ws_upgrade(c, m, strict=True):
    """Upgrades c through the proxy. strict: fail on bytes that arrive before any were sent;
    otherwise discard them (so later checks test something else)."""
    key = base64.b64encode(os.urandom(16)).decode()
    c.send(build_request("GET", "/ws?m=" + m, headers=[
        ("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13")]))
    r = c.read_response()
    eq(r.status, 101, "upgrade status")
    eq((r.header("Upgrade") or "").lower(), "websocket", "response Upgrade header")
    accept = base64.b64encode(hashlib.sha1(
        (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
    eq(r.header("Sec-WebSocket-Accept"), accept, "Sec-WebSocket-Accept")
    # Nothing was sent into the tunnel yet, so nothing may come out of it.
    stray = c.read_some() if c.wait_for_data(0.2) else b""
    if strict:
        eq(stray, b"", "bytes received after the 101 head before anything was sent")
    return r


@cases.case("WebSocket upgrade: 101, then bytes echoed both ways through the tunnel")
def _():
    m = marker()
    with S.env.client(timeout=15) as c:
        ws_upgrade(c, m)
        for msg in (b"hello tunnel", b"\x00\x01\x02\xff" * 10, b"GET / HTTP/1.1\r\n\r\n"):
            c.send(msg)
            eq(c.read_exact(len(msg)), msg, "echo through the tunnel")
        big = os.urandom(2 * 1024 * 1024)
        errors = []

        def sender():
            try:
                c.send(big)
            except OSError as e:
                errors.append(e)
        t = threading.Thread(target=sender, daemon=True)
        t.start()
        got = c.read_exact(len(big))
        t.join(15)
        expect(not errors, "sending 2 MiB into the tunnel failed: %r" % errors)
        expect(got == big, "2 MiB echoed through the tunnel differ")
    rec = S.blue.wait_records(lambda rec: m in rec["target"])[0]
    eq((header_of(rec, "Upgrade") or "").lower(), "websocket", "upstream Upgrade header")
    expect("upgrade" in (header_of(rec, "Connection") or "").lower(),
           "upstream Connection header lacks upgrade: %r" % header_of(rec, "Connection"))


@cases.case("WebSocket tunnel closes when the client half-closes")
def _():
    with S.env.client(timeout=15) as c:
        ws_upgrade(c, marker(), strict=False)
        c.send(b"last words")
        eq(c.read_exact(10), b"last words", "echo")
        c.sock.shutdown(1)  # SHUT_WR: upstream sees EOF and closes; the proxy must follow
        expect(c.closed_by_peer(5), "tunnel still open 5s after the client shut down writing")


def main():
    run_against_one_upstream(cases, S)


if __name__ == "__main__":
    main()
