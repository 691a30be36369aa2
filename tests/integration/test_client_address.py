#!/usr/bin/env python3
"""The client's address behind load balancers (SPEC §13): `[[listener]] proxy_protocol` and
`server.trusted_proxies`.

One proxy, three ways in:
  - server.listen (plain), with trusted_proxies = ["127.0.0.1/32"]: a client connecting from
    127.0.0.1 is a trusted balancer and X-Forwarded-For names the client; one bound to
    127.0.0.2 is not, and its X-Forwarded-For is not believed;
  - a plain [[listener]] with proxy_protocol = true (v1 from curl --haproxy-protocol and from a
    raw socket, v2 from a raw socket, header and request in one send);
  - a TLS [[listener]] with proxy_protocol = true (the TLS ClientHello in the same send as a v2
    header; HTTP/2 through curl --haproxy-protocol --http2).
The route sends 203.0.113.0/24, 2001:db8:7::/48 and 127.0.0.3 to canary by a client_ip
override, everything else to blue; a second route splits 50/50 with fallback = "client_ip".
Each case checks which upstream answered, the X-Forwarded-For the upstream (and the shadow)
received, and the access log's client field. Bad PROXY headers close the connection, are
counted in switchyard_proxy_protocol_errors_total{listener,reason}, and the listener goes on
serving.

    python3 tests/integration/test_client_address.py build/proxy/switchyard
"""

import itertools
import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (HOST, Cases, Client, Env, build_request, config_doc,  # noqa: E402
                     dump_toml, eq, expect, free_port, header_of, metrics, route, wait_until)

cases = Cases("client_address")
S = SimpleNamespace()
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
_rid = itertools.count(1)


# ---- helpers of this file ----------------------------------------------------------------

def connect(port, source="127.0.0.1"):
    """A harness Client whose socket is bound to `source` (another loopback address is
    another peer)."""
    c = Client.__new__(Client)
    c.sock = socket.create_connection(("127.0.0.1", port), timeout=10,
                                      source_address=(source, 0))
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.buf = bytearray()
    c.eof = False
    c.local_port = c.sock.getsockname()[1]
    return c


def v1(src, dst="127.0.0.1", sport=40000, dport=443, proto=None):
    proto = proto or ("TCP6" if ":" in src else "TCP4")
    return ("PROXY %s %s %s %d %d\r\n" % (proto, src, dst, sport, dport)).encode()


def v2(src=None, dst=None, sport=40000, dport=443, command=0x21, tlvs=b""):
    """A v2 header; src None: family UNSPEC."""
    if src is None:
        family, payload = 0x00, b""
    elif ":" in src:
        family = 0x21
        payload = (socket.inet_pton(socket.AF_INET6, src) +
                   socket.inet_pton(socket.AF_INET6, dst or "::1") + struct.pack(">HH", sport, dport))
    else:
        family = 0x11
        payload = (socket.inet_pton(socket.AF_INET, src) +
                   socket.inet_pton(socket.AF_INET, dst or "127.0.0.1") +
                   struct.pack(">HH", sport, dport))
    payload += tlvs
    return V2_SIG + bytes([command, family]) + struct.pack(">H", len(payload)) + payload


def request(rid, headers=(), host=HOST):
    return build_request("GET", "/who", host=host, headers=list(headers) + [("X-Request-Id", rid)])


def new_rid():
    return "ca-%d-%d" % (os.getpid(), next(_rid))


def upstream_record(rid):
    """(upstream name, record) of the primary that received request rid."""
    def find():
        for u in (S.blue, S.canary):
            for r in u.records():
                if header_of(r, "X-Request-Id") == rid:
                    return (u.name, r)
        return None
    return wait_until(find, 5, "request %s at an upstream" % rid)


def log_entry(rid):
    def find():
        try:
            lines = Path(S.access_log).read_text().split("\n")[:-1]
        except FileNotFoundError:
            return None
        for line in lines:
            e = json.loads(line)
            if e.get("request_id") == rid:
                return e
        return None
    return wait_until(find, 5, "access-log line of %s" % rid)


def served(what, resp, rid, variant, client, xff):
    """The response came from `variant`'s upstream, which received X-Forwarded-For `xff`; the
    access log names `client`."""
    eq(resp.status, 200, "%s: status" % what)
    eq(resp.header("X-Upstream"), variant, "%s: X-Upstream" % what)
    name, rec = upstream_record(rid)
    eq(name, variant, "%s: the upstream that received it" % what)
    eq(header_of(rec, "X-Forwarded-For"), xff, "%s: X-Forwarded-For at the upstream" % what)
    eq(log_entry(rid)["client"], client, "%s: access-log client" % what)
    return rec


def pp_errors(reason, listener=None):
    labels = frozenset({"listener": listener or S.pp_addr, "reason": reason}.items())
    return metrics(S.admin_port).get(("switchyard_proxy_protocol_errors_total", labels), 0.0)


def curl(*args):
    r = subprocess.run(["curl", "-s", "-k", "--max-time", "20", *args], capture_output=True)
    expect(r.returncode == 0, "curl %s: exit %d: %s" % (" ".join(args), r.returncode,
                                                       r.stderr.decode(errors="replace")))
    return r.stdout.decode(errors="replace")


def tls_request_after_header(port, header, rid):
    """A TLS connection whose ClientHello leaves in the same send() as `header`, then one
    HTTP/1.1 request. Returns the response bytes."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        sock.sendall(header + outgoing.read())  # one segment: header + ClientHello
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                out = outgoing.read()
                if out:
                    sock.sendall(out)
                data = sock.recv(65536)
                expect(data, "the proxy closed during the TLS handshake")
                incoming.write(data)
        sock.sendall(outgoing.read())
        tls.write(request(rid))
        sock.sendall(outgoing.read())
        got = b""
        while b"\r\n\r\n" not in got:
            data = sock.recv(65536)
            if not data:
                break
            incoming.write(data)
            try:
                got += tls.read(65536)
            except ssl.SSLWantReadError:
                continue
        return got
    finally:
        sock.close()


# ---- PROXY protocol ------------------------------------------------------------------------

@cases.case("PROXY v1 (raw, header and request in one send): routed, forwarded and logged by "
            "the header's address")
def _():
    rid = new_rid()
    with connect(S.pp_port) as c:
        c.send(v1("203.0.113.7") + request(rid))
        resp = c.read_response()
    served("v1", resp, rid, "canary", "203.0.113.7", "203.0.113.7")


@cases.case("PROXY v1 from curl --haproxy-protocol (from 127.0.0.3: its override)")
def _():
    rid = new_rid()
    out = curl("--haproxy-protocol", "--interface", "127.0.0.3", "-H", "Host: " + HOST,
               "-H", "X-Request-Id: " + rid, "http://127.0.0.1:%d/who" % S.pp_port)
    expect(out, "curl got no body")
    name, rec = upstream_record(rid)
    eq(name, "canary", "the upstream that received it")
    eq(header_of(rec, "X-Forwarded-For"), "127.0.0.3", "X-Forwarded-For at the upstream")
    eq(log_entry(rid)["client"], "127.0.0.3", "access-log client")


@cases.case("PROXY v2 IPv6 with TLVs: the header's address; the shadow copy gets the same "
            "X-Forwarded-For")
def _():
    rid = new_rid()
    tlvs = bytes([0x03, 0, 4]) + b"abcd" + bytes([0xEA, 0, 9]) + b"vpce-0123"
    with connect(S.pp_port) as c:
        c.send(v2("2001:db8:7::9", tlvs=tlvs) + request(rid))
        resp = c.read_response()
    served("v2", resp, rid, "canary", "2001:db8:7::9", "2001:db8:7::9")
    shadow = S.shadow.wait_records(lambda r: header_of(r, "X-Request-Id") == rid)[0]
    eq(header_of(shadow, "X-Forwarded-For"), "2001:db8:7::9", "X-Forwarded-For at the shadow")


@cases.case("PROXY v2 IPv4, then keep-alive: every request on the connection has that address")
def _():
    with connect(S.pp_port) as c:
        c.send(v2("203.0.113.99"))
        for _ in range(3):
            rid = new_rid()
            c.send(request(rid))
            served("keep-alive", c.read_response(), rid, "canary", "203.0.113.99", "203.0.113.99")


@cases.case("PROXY headers trickled a few bytes per send are put together (v1 and v2)")
def _():
    for header, src in ((v1("203.0.113.21"), "203.0.113.21"),
                        (v2("2001:db8:7::21"), "2001:db8:7::21")):
        rid = new_rid()
        with connect(S.pp_port) as c:
            for i in range(0, len(header), 3):
                c.send(header[i:i + 3])
                time.sleep(0.01)  # the scenario: separate segments, separate reads
            c.send(request(rid))
            served("trickled", c.read_response(), rid, "canary", src, src)


@cases.case("PROXY v2 LOCAL and v1 UNKNOWN: the real peer")
def _():
    for what, header in (("LOCAL", v2("203.0.113.7", command=0x20)),
                         ("UNSPEC", v2(None)),
                         ("UNKNOWN", b"PROXY UNKNOWN\r\n")):
        rid = new_rid()
        with connect(S.pp_port) as c:
            c.send(header + request(rid))
            served(what, c.read_response(), rid, "blue", "127.0.0.1", "127.0.0.1")


@cases.case("TLS listener with proxy_protocol: the ClientHello in the same send as a v2 header")
def _():
    rid = new_rid()
    got = tls_request_after_header(S.pp_tls_port, v2("203.0.113.8"), rid)
    expect(got.startswith(b"HTTP/1.1 200"), "response %r" % got[:200])
    name, rec = upstream_record(rid)
    eq(name, "canary", "the upstream that received it")
    eq(header_of(rec, "X-Forwarded-For"), "203.0.113.8", "X-Forwarded-For at the upstream")
    eq(header_of(rec, "X-Forwarded-Proto"), "https", "X-Forwarded-Proto at the upstream")
    eq(log_entry(rid)["client"], "203.0.113.8", "access-log client")


@cases.case("TLS + HTTP/2 with proxy_protocol (curl --haproxy-protocol --http2 from 127.0.0.3)")
def _():
    rid = new_rid()
    out = curl("--haproxy-protocol", "--http2", "--interface", "127.0.0.3", "-o", "/dev/null",
               "-w", "%{http_version} %{http_code}", "-H", "X-Request-Id: " + rid,
               "--resolve", "%s:%d:127.0.0.1" % (HOST, S.pp_tls_port),
               "https://%s:%d/who" % (HOST, S.pp_tls_port))
    eq(out, "2 200", "HTTP version and status")
    name, rec = upstream_record(rid)
    eq(name, "canary", "the upstream that received it")
    eq(header_of(rec, "X-Forwarded-For"), "127.0.0.3", "X-Forwarded-For at the upstream")
    entry = log_entry(rid)
    eq(entry["client"], "127.0.0.3", "access-log client")
    eq(entry["protocol"], "HTTP/2", "access-log protocol")


@cases.case("a bad or missing PROXY header closes the connection, is counted by reason, and the "
            "listener goes on serving")
def _():
    before = {r: pp_errors(r) for r in ("missing", "invalid", "too_large", "truncated")}
    oversized = V2_SIG + bytes([0x21, 0x11]) + struct.pack(">H", 5000)
    for reason, data in (("missing", request(new_rid())),
                         ("missing", b"\x16\x03\x01\x02\x00\x01"),  # TLS without a header
                         ("invalid", b"PROXY TCP4 203.0.113.7 nowhere 1 2\r\n"),
                         ("invalid", V2_SIG + b"\x22\x11\x00\x00"),
                         ("too_large", oversized),
                         ("too_large", b"PROXY UNKNOWN " + b"x" * 120)):
        rid = new_rid()
        with connect(S.pp_port) as c:
            c.send(data + request(rid))
            expect(c.closed_by_peer(5), "%s: the connection stays open" % reason)
            eq(bytes(c.buf), b"", "%s: bytes sent back" % reason)
    # Cut short: the peer closes mid-header, or sends part of it and waits past
    # client_header_ms.
    with connect(S.pp_port) as c:
        c.send(v2("203.0.113.7")[:20])
    with connect(S.pp_port) as c:
        c.send(b"PROXY TCP4 203.0.113.7 ")
        expect(c.closed_by_peer(10), "a partial header is not closed after client_header_ms")
    want = {"missing": 2, "invalid": 2, "too_large": 2, "truncated": 2}
    wait_until(lambda: all(pp_errors(r) - before[r] == n for r, n in want.items()), 5,
               "the errors counted: %r" % want)
    got = {r: pp_errors(r) - before[r] for r in want}
    eq(got, {r: float(n) for r, n in want.items()}, "errors counted by reason")
    # No request of those reached an upstream, and the listener still serves.
    rid = new_rid()
    with connect(S.pp_port) as c:
        c.send(v1("203.0.113.7") + request(rid))
        served("after the errors", c.read_response(), rid, "canary", "203.0.113.7",
               "203.0.113.7")
    # A connect and close with nothing sent (a balancer's TCP health check) is not counted.
    socket.create_connection(("127.0.0.1", S.pp_port), timeout=5).close()
    eq({r: pp_errors(r) - before[r] for r in want}, got, "after a bare connect and close")


@cases.case("a listener without proxy_protocol takes a PROXY line as a bad request")
def _():
    rid = new_rid()
    with connect(S.port) as c:
        c.send(v1("203.0.113.7") + request(rid))
        resp = c.read_response()
    eq(resp.status, 400, "status")


# ---- trusted_proxies -----------------------------------------------------------------------

@cases.case("trusted peer: the right-most untrusted X-Forwarded-For address is the client; the "
            "chain goes upstream with the peer appended")
def _():
    rid = new_rid()
    with connect(S.port, "127.0.0.1") as c:
        c.send(request(rid, [("X-Forwarded-For", "6.6.6.6, 203.0.113.7"),
                             ("X-Forwarded-For", "127.0.0.1")]))
        resp = c.read_response()
    served("trusted", resp, rid, "canary", "203.0.113.7", "6.6.6.6, 203.0.113.7, 127.0.0.1, "
           "127.0.0.1")


@cases.case("trusted peer, IPv6 in X-Forwarded-For")
def _():
    rid = new_rid()
    with connect(S.port, "127.0.0.1") as c:
        c.send(request(rid, [("X-Forwarded-For", "[2001:db8:7::1]:5555")]))
        served("v6", c.read_response(), rid, "canary", "2001:db8:7::1",
               "[2001:db8:7::1]:5555, 127.0.0.1")


@cases.case("untrusted peer (127.0.0.2): a spoofed X-Forwarded-For decides nothing")
def _():
    rid = new_rid()
    with connect(S.port, "127.0.0.2") as c:
        c.send(request(rid, [("X-Forwarded-For", "203.0.113.7")]))
        served("spoofed", c.read_response(), rid, "blue", "127.0.0.2", "203.0.113.7, 127.0.0.2")


@cases.case("trusted peer, malformed X-Forwarded-For: the last good address (the peer)")
def _():
    rid = new_rid()
    with connect(S.port, "127.0.0.1") as c:
        c.send(request(rid, [("X-Forwarded-For", "203.0.113.7, unknown")]))
        served("malformed", c.read_response(), rid, "blue", "127.0.0.1",
               "203.0.113.7, unknown, 127.0.0.1")


@cases.case("fallback = \"client_ip\" hashes the X-Forwarded-For client behind a trusted peer")
def _():
    seen = {}
    for i in range(24):
        client = "198.51.100.%d" % (i + 1)
        for _ in range(2):
            rid = new_rid()
            with connect(S.port, "127.0.0.1") as c:
                c.send(request(rid, [("X-Forwarded-For", client)], host="hash.test"))
                resp = c.read_response()
            eq(resp.status, 200, "status")
            seen.setdefault(client, set()).add(resp.header("X-Upstream"))
    expect(all(len(v) == 1 for v in seen.values()), "a client on two variants: %r" % seen)
    variants = {next(iter(v)) for v in seen.values()}
    eq(variants, {"blue", "canary"}, "variants over 24 clients (all on one: the peer was hashed)")


# ---- reload ---------------------------------------------------------------------------------

def reload_with(pp):
    """Rewrites the config with the plain listener's proxy_protocol = pp; SIGHUP; waits for the
    new generation."""
    S.doc["listener"][0]["proxy_protocol"] = pp
    gen = metrics(S.admin_port)[("switchyard_config_generation", frozenset())]
    S.env.proxy.config_path.write_text(dump_toml(S.doc) + "\n")
    S.env.proxy.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: metrics(S.admin_port)[("switchyard_config_generation", frozenset())] > gen,
               10, "the reload")


@cases.case("a reload turns proxy_protocol off and on again for new connections on the same "
            "socket")
def _():
    try:
        reload_with(False)
        rid = new_rid()
        with connect(S.pp_port) as c:  # plain HTTP now: no header expected
            c.send(request(rid))
            served("proxy_protocol off", c.read_response(), rid, "blue", "127.0.0.1", "127.0.0.1")
    finally:
        reload_with(True)
    rid = new_rid()
    with connect(S.pp_port) as c:
        c.send(v1("203.0.113.7") + request(rid))
        served("proxy_protocol on again", c.read_response(), rid, "canary", "203.0.113.7",
               "203.0.113.7")


def main():
    with Env(cases) as env:
        S.blue = env.upstream("blue")
        S.canary = env.upstream("canary")
        S.shadow = env.upstream("shadow")
        certs = Path(env.dir)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "site.key", "-out",
                        "site.pem", "-days", "2", "-subj", "/CN=localhost", "-addext",
                        "subjectAltName=DNS:localhost,DNS:%s,IP:127.0.0.1" % HOST],
                       cwd=certs, check=True, capture_output=True)
        S.port = free_port()
        S.pp_port = free_port()
        S.pp_tls_port = free_port()
        S.pp_addr = "127.0.0.1:%d" % S.pp_port
        S.admin_port = free_port()
        S.access_log = str(certs / "access.log")
        pools = {"blue": [S.blue.addr], "canary": [S.canary.addr], "shadow": [S.shadow.addr]}
        overrides = [{"client_ip": ["203.0.113.0/24", "2001:db8:7::/48", "127.0.0.3"],
                      "variant": "canary"}]
        doc = config_doc(
            S.port, admin_port=S.admin_port, pools=pools,
            routes=[route("hash", {"blue": "blue", "canary": "canary"},
                          {"blue": 50, "canary": 50}, host="hash.test", key=(),
                          fallback="client_ip"),
                    route("app", {"blue": "blue", "canary": "canary", "shadow": "shadow"},
                          {"blue": 1}, overrides=overrides,
                          shadow={"percent": 100.0, "compare": False})],
            timeouts={"client_header_ms": 1500},
            server={"access_log": S.access_log, "trusted_proxies": ["127.0.0.1/32"]})
        tls = {"cert": str(certs / "site.pem"), "key": str(certs / "site.key")}
        doc["listener"] = [{"address": S.pp_addr, "proxy_protocol": True},
                           {"address": "127.0.0.1:%d" % S.pp_tls_port, "proxy_protocol": True,
                            "tls": tls}]
        S.doc = doc
        S.env = env
        env.start_proxy(doc)
        cases.run()
    cases.exit()


if __name__ == "__main__":
    main()
