#!/usr/bin/env python3
"""TLS: termination on [[listener]] (SNI, versions, ALPN, certificate reload) and TLS to
upstream pools (verification, SNI, keep-alive reuse).

    python3 tests/integration/test_tls.py build/proxy/switchyard

Certificates are made at test time with the `openssl` command in the temp dir: a test CA, a
second ("wrong") CA, and leaf certificates with SANs. TLS upstreams are Python ssl servers in
this process (TlsUpstream below), so every accepted TLS connection, its SNI and every request
it carries are counted here. SY_TLS_ONLY=TEXT runs only the cases whose name contains TEXT.
"""

import base64
import copy
import hashlib
import http.server
import json
import os
import re
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Cases, Client, Env, Inline, build_request, can_connect,  # noqa: E402
                     config_doc, dump_toml, eq, expect, free_port, header_of, parallel,
                     pattern_bytes, route, sha256, tcp_queues, wait_closed_by_proxy,
                     wait_settled, wait_until)

warnings.filterwarnings("ignore", category=DeprecationWarning)  # ssl.TLSVersion.TLSv1_1

# ---- certificates (openssl command) ------------------------------------------------------


def _openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (" ".join(args), r.stderr.strip()))
    return r.stdout


class Certs:
    """A test CA (and a second, unrelated one) issuing leaf certificates with SANs.
    Leaf serial numbers are given, so a peer certificate says exactly which one was served."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = self._make_ca("ca", "Switchyard Test CA")
        self.wrong_ca = self._make_ca("wrong-ca", "Unrelated Test CA")

    def _make_ca(self, name, cn):
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", name + ".key", "-out", name + ".pem", "-days", "2",
                 "-subj", "/CN=" + cn,
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=self.dir)
        return str(self.dir / (name + ".pem"))

    def leaf(self, name, cn, sans, serial, ca="ca"):
        """Writes NAME.pem / NAME.key (key and certificate signed by `ca`); returns paths."""
        ext = self.dir / (name + ".ext")
        ext.write_text("basicConstraints=CA:FALSE\n"
                       "keyUsage=critical,digitalSignature\n"
                       "extendedKeyUsage=serverAuth\n"
                       "subjectKeyIdentifier=hash\n"
                       "authorityKeyIdentifier=keyid\n"
                       "subjectAltName=%s\n" % ",".join(sans))
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn,
                 cwd=self.dir)
        _openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
                 "-set_serial", str(serial), "-days", "2", "-extfile", name + ".ext",
                 "-out", name + ".pem", cwd=self.dir)
        return str(self.dir / (name + ".pem")), str(self.dir / (name + ".key"))


def install(src_cert, src_key, dst_cert, dst_key):
    """Replaces a certificate and key on disk (each by an atomic rename)."""
    for src, dst in ((src_cert, dst_cert), (src_key, dst_key)):
        tmp = Path(str(dst) + ".tmp")
        tmp.write_bytes(Path(src).read_bytes())
        os.replace(tmp, dst)


def write_atomic(path, data):
    tmp = Path(str(path) + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# ---- TLS clients ---------------------------------------------------------------------------

def client_context(cafile, check_hostname=True, min_version=None, max_version=None, alpn=None,
                   ciphers=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile:
        ctx.load_verify_locations(cafile)
        ctx.check_hostname = check_hostname
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if ciphers:
        ctx.set_ciphers(ciphers)
    if min_version:
        ctx.minimum_version = min_version
    if max_version:
        ctx.maximum_version = max_version
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


class TlsClient(Client):
    """The harness's HTTP/1.1 client over a TLS connection (handshake done in the constructor)."""

    def __init__(self, port, ctx, server_hostname, timeout=10.0):  # noqa: super not called
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname=server_hostname)
        except BaseException:
            raw.close()
            raise
        self.buf = bytearray()
        self.eof = False
        self.local_port = self.sock.getsockname()[1]

    def peer(self):
        """(serial as int, subject CN, [SAN values]) of the verified peer certificate."""
        cert = self.sock.getpeercert()
        expect(cert, "no verified peer certificate")
        cn = [v for rdn in cert["subject"] for k, v in rdn if k == "commonName"]
        return (int(cert["serialNumber"], 16), cn[0] if cn else None,
                [v for _, v in cert.get("subjectAltName", ())])


def peer_of(port, cafile, server_hostname, check_hostname=False):
    """Handshakes once and returns TlsClient.peer() of the served certificate."""
    ctx = client_context(cafile, check_hostname=check_hostname)
    with TlsClient(port, ctx, server_hostname) as c:
        return c.peer()


def can_tls(port):
    """True if a TLS handshake (no verification) completes on 127.0.0.1:port."""
    try:
        with TlsClient(port, client_context(None), None, timeout=2):
            return True
    except (OSError, ssl.SSLError):
        return False


def control_handshake(cert, key, ctx):
    """Handshakes `ctx` with a Python server that allows TLS 1.0+ at security level 0 and
    returns the version negotiated (proves the client side can speak an old version here)."""
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.minimum_version = ssl.TLSVersion.TLSv1
    sctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    sctx.load_cert_chain(cert, key)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    lsock.settimeout(10)

    def serve():
        try:
            conn, _ = lsock.accept()
            with sctx.wrap_socket(conn, server_side=True) as s:
                s.recv(1)
        except OSError:
            pass
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with TlsClient(lsock.getsockname()[1], ctx, None, timeout=10) as c:
            return c.sock.version()
    except ssl.SSLError as e:
        return "handshake failed: %s" % e
    finally:
        t.join(10)
        lsock.close()


# ---- a TLS upstream that counts its TLS connections ----------------------------------------

class TlsUpstream:
    """An HTTP/1.1 server behind Python's ssl on 127.0.0.1, keep-alive. Counts completed TLS
    handshakes (= TLS connections), failed ones, the SNI of each, and every request (with its
    connection number). Paths:
        /bytes?n=N        N bytes of harness.pattern_bytes, Content-Length
        /bytes?n=N&close=1  the same, close-delimited (no length, then close without close_notify)
        POST (any path)   JSON {"body_bytes", "body_sha256"} of the request body (CL or chunked)
        (any other GET)   200, JSON {"upstream", "conn", "path"}
    idle_timeout: seconds an idle keep-alive connection is kept before the server closes it."""

    def __init__(self, name, cert, key, idle_timeout=60):
        self.name = name
        self.lock = threading.Lock()
        self.handshakes = 0
        self.failures = []       # str(exception) of each failed handshake
        self.snis = []           # SNI (None when absent) of each completed handshake
        self.requests = []       # {"conn", "method", "path", "headers"}
        self.accepted = 0        # TCP connections accepted
        self.closed = 0          # ... and closed by this server (after the handler returned)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        pending_sni = {}

        def on_sni(sslobj, server_name, _ctx):
            pending_sni[id(sslobj)] = server_name
        ctx.sni_callback = on_sni
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = idle_timeout

            def setup(self):
                try:
                    self.request.do_handshake()
                except (ssl.SSLError, OSError) as e:
                    with outer.lock:
                        outer.failures.append(str(e))
                    raise
                with outer.lock:
                    outer.handshakes += 1
                    self.conn_no = outer.handshakes
                    outer.snis.append(pending_sni.pop(id(self.request), None))
                super().setup()

            def _record(self):
                with outer.lock:
                    outer.requests.append({"conn": self.conn_no, "method": self.command,
                                           "path": self.path,
                                           "headers": list(self.headers.items())})

            def _send(self, status, body, close=False):
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                if close:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._record()
                u = urlsplit(self.path)
                q = parse_qs(u.query)
                if u.path == "/bytes":
                    self._send(200, pattern_bytes(0, int(q["n"][0])), close="close" in q)
                    return
                self._send(200, json.dumps({"upstream": outer.name, "conn": self.conn_no,
                                            "path": self.path}).encode())

            def do_POST(self):
                self._record()
                h = hashlib.sha256()
                n = 0
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            break
                        data = self.rfile.read(size)
                        h.update(data)
                        n += len(data)
                        self.rfile.readline()
                else:
                    left = int(self.headers.get("Content-Length") or 0)
                    while left:
                        data = self.rfile.read(min(left, 1 << 16))
                        if not data:
                            break
                        h.update(data)
                        n += len(data)
                        left -= len(data)
                self._send(200, json.dumps({"body_bytes": n, "body_sha256": h.hexdigest()})
                           .encode())

            def log_message(self, *a):
                pass

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def get_request(self):
                sock, addr = self.socket.accept()
                with outer.lock:
                    outer.accepted += 1
                sock.settimeout(10)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                # The handshake runs in the connection's thread (Handler.setup), so one slow or
                # failing client does not hold up accept.
                return ctx.wrap_socket(sock, server_side=True,
                                       do_handshake_on_connect=False), addr

            def handle_error(self, request, client_address):
                pass  # failures are counted in Handler.setup

            def shutdown_request(self, request):
                super().shutdown_request(request)
                with outer.lock:
                    outer.closed += 1

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def counts(self):
        with self.lock:
            return self.handshakes, len(self.requests), list(self.failures)

    def all_closed(self):
        """True once every connection this server accepted has been closed by it."""
        with self.lock:
            return self.closed == self.accepted

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def stalled(c, proxy_port):
    """Polls until the bytes queued in the kernel between the proxy and client c (which reads
    nothing) stop growing: the proxy has filled its buffers toward the stalled client."""
    def queued():
        q = tcp_queues()
        return (q.get((proxy_port, c.local_port), (0, 0))[0]
                + q.get((c.local_port, proxy_port), (0, 0))[1])
    return wait_settled(queued, quiet=0.1)


# ---- admin helpers -------------------------------------------------------------------------

def admin_request(port, method, path):
    with Client(port, timeout=10) as c:
        return c.request(method, path, host="127.0.0.1:%d" % port)


def metric(port, series):
    """Value of one series, e.g. 'switchyard_config_reloads_total{result="failure"}'; 0 if
    absent."""
    body = admin_request(port, "GET", "/metrics").body.decode()
    for line in body.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def reload_counts(port):
    return (metric(port, 'switchyard_config_reloads_total{result="success"}'),
            metric(port, 'switchyard_config_reloads_total{result="failure"}'))


def sighup_and_wait(env, admin_port):
    """SIGHUP; waits until the success or failure counter moves; returns "success"/"failure"."""
    ok0, bad0 = reload_counts(admin_port)
    env.proxy.proc.send_signal(signal.SIGHUP)

    def moved():
        ok, bad = reload_counts(admin_port)
        if ok > ok0:
            return "success"
        if bad > bad0:
            return "failure"
        return None
    return wait_until(moved, 10, "the reload counters to move after SIGHUP")


# ---- the test ------------------------------------------------------------------------------

UP_HOSTS = ("up-good.test", "up-wrongca.test", "up-noverify.test", "up-sni.test",
            "up-badname.test", "up-system.test", "up-reuse.test")

SITE, SHOP, SITE2, UPSTREAM, REUSE = 0x5101, 0x5201, 0x5102, 0x5301, 0x5302

cases = Cases("tls")
with Env(cases) as env:
    certs = Certs(env.dir / "certs")
    CA = certs.ca
    site_cert, site_key = certs.leaf("site", "site.example.com",
                                     ["DNS:site.example.com", "IP:127.0.0.1"], SITE)
    shop_cert, shop_key = certs.leaf("shop", "shop.example.com",
                                     ["DNS:shop.example.com", "DNS:*.shop.example.com"], SHOP)
    certs.leaf("site-v2", "site-v2.example.com",
               ["DNS:site.example.com", "IP:127.0.0.1"], SITE2)
    certs.leaf("other", "other.example.com", ["DNS:other.example.com"], 0x5999)
    up_cert, up_key = certs.leaf("upstream", "upstream.test",
                                 ["DNS:upstream.test", "IP:127.0.0.1"], UPSTREAM)
    reuse_cert, reuse_key = certs.leaf("reuse", "reuse.test", ["IP:127.0.0.1"], REUSE)
    # What the listener serves lives at fixed paths that reload cases overwrite.
    live = env.dir / "live"
    live.mkdir()
    install(site_cert, site_key, live / "site.pem", live / "site.key")
    install(shop_cert, shop_key, live / "shop.pem", live / "shop.key")

    echo = env.upstream("echo")
    tls_up = TlsUpstream("tls-up", up_cert, up_key)
    reuse_up = TlsUpstream("tls-reuse", reuse_cert, reuse_key)
    idle_up = TlsUpstream("tls-idle", reuse_cert, reuse_key, idle_timeout=0.3)
    health_up = TlsUpstream("tls-health", reuse_cert, reuse_key)
    try:
        plain_port, tls_port, admin_port = free_port(), free_port(), free_port()
        pools = {"echo": [echo.addr]}
        routes = [route("app", {"blue": "echo"}, {"blue": 1}, host="app.test")]
        # client_header_ms also bounds a TLS handshake that never completes (case below).
        doc = config_doc(plain_port, pools, routes, admin_port=admin_port,
                         timeouts={"client_header_ms": 1500})
        up = doc["upstreams"]
        tls_pools = {
            "up-good": {"servers": [tls_up.addr], "tls": True, "ca_file": CA},
            "up-wrongca": {"servers": [tls_up.addr], "tls": True, "ca_file": certs.wrong_ca},
            "up-noverify": {"servers": [tls_up.addr], "tls": True, "tls_verify": False,
                            "ca_file": certs.wrong_ca},
            "up-sni": {"servers": [tls_up.addr], "tls": True, "ca_file": CA,
                       "sni": "upstream.test"},
            "up-badname": {"servers": [tls_up.addr], "tls": True, "ca_file": CA,
                           "sni": "wrong.test"},
            "up-system": {"servers": [tls_up.addr], "tls": True},
            "up-reuse": {"servers": [reuse_up.addr], "tls": True, "ca_file": CA},
            "up-idle": {"servers": [idle_up.addr], "tls": True, "ca_file": CA},
            "up-health": {"servers": [health_up.addr], "tls": True, "ca_file": CA,
                          "health": Inline(path="/healthz", interval_ms=200, timeout_ms=1000,
                                           unhealthy_after=2, healthy_after=1)},
        }
        up.update(tls_pools)
        for pool in tls_pools:
            doc["routes"].append(route(pool, {"blue": pool}, {"blue": 1}, host=pool + ".test"))
        # Relative paths: resolved against the config file's directory (env.dir).
        listener = {"address": "127.0.0.1:%d" % tls_port,
                    "tls": Inline(cert="live/site.pem", key="live/site.key"),
                    "sni": [{"names": ["shop.example.com", "*.shop.example.com"],
                             "cert": "live/shop.pem", "key": "live/shop.key"}]}
        doc["listener"] = [listener]
        env.start_proxy(doc)
        wait_until(lambda: can_tls(tls_port), 10, "the TLS listener to accept")

        def https(path="/", host="app.test", sni="site.example.com", headers=()):
            ctx = client_context(CA)
            with TlsClient(tls_port, ctx, sni) as c:
                return c.request("GET", path, host=host, headers=headers)

        # -- 1 ------------------------------------------------------------------------------
        @cases.case("HTTPS GET verified against the test CA: 200, upstream sees "
                    "X-Forwarded-Proto: https")
        def _():
            ctx = client_context(CA)
            with TlsClient(tls_port, ctx, "site.example.com") as c:
                r = c.request("GET", "/tls-one", host="app.test")
                eq(r.status, 200, "status over TLS")
                eq(r.json()["path"], "/tls-one", "echoed path")
                # Same connection, second request (keep-alive over TLS).
                r2 = c.request("GET", "/tls-two", host="app.test")
                eq(r2.status, 200, "second request on the TLS connection")
            rec = echo.wait_records(lambda x: x["target"] == "/tls-one")[0]
            eq(header_of(rec, "X-Forwarded-Proto"), "https", "X-Forwarded-Proto at the upstream")
            # Contrast: plain listener says http; a client-sent value is not trusted over TLS.
            with Client(plain_port) as c:
                eq(c.request("GET", "/plain-one").status, 200, "plain status")
            rec = echo.wait_records(lambda x: x["target"] == "/plain-one")[0]
            eq(header_of(rec, "X-Forwarded-Proto"), "http", "X-Forwarded-Proto over plain HTTP")
            eq(https("/tls-spoof", headers=[("X-Forwarded-Proto", "http")]).status, 200,
               "status (spoofed X-Forwarded-Proto)")
            rec = echo.wait_records(lambda x: x["target"] == "/tls-spoof")[0]
            eq([v for k, v in rec["headers"] if k.lower() == "x-forwarded-proto"], ["https"],
               "X-Forwarded-Proto values at the upstream when the client sent 'http' over TLS")

        # -- 2 ------------------------------------------------------------------------------
        @cases.case("SNI: exact, wildcard (1 and 2 labels), case-insensitive, unknown and "
                    "absent -> default; no resumption across names")
        def _():
            want = {
                "site.example.com": (SITE, "site.example.com"),
                "shop.example.com": (SHOP, "shop.example.com"),
                "a.shop.example.com": (SHOP, "shop.example.com"),
                "x.y.shop.example.com": (SHOP, "shop.example.com"),
                "SHOP.Example.COM": (SHOP, "shop.example.com"),
                "unknown.example.org": (SITE, "site.example.com"),
                "xshop.example.com": (SITE, "site.example.com"),   # not a label boundary
                None: (SITE, "site.example.com"),                  # no SNI at all
            }
            for name, (serial, cn) in want.items():
                got = peer_of(tls_port, CA, name)
                eq((hex(got[0]), got[1]), (hex(serial), cn), "certificate served for SNI %r" % name)
            # And with full hostname verification, as a browser would do it.
            for name in ("site.example.com", "shop.example.com", "a.shop.example.com"):
                peer_of(tls_port, CA, name, check_hostname=True)
            r = https("/sni", sni="a.shop.example.com")
            eq(r.status, 200, "request over the wildcard-SNI connection")
            # Session resumption works, and (RFC 6066 section 3) a session made under one
            # certificate is never resumed under an SNI that selects another: the client would
            # be talking to the wrong virtual host (nginx's CVE-2014-3616).
            wrong = []
            for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
                ctx = client_context(CA, check_hostname=False, max_version=v)
                for first, second in (("site.example.com", "site.example.com"),
                                      ("shop.example.com", "shop.example.com"),
                                      ("shop.example.com", "site.example.com"),
                                      ("site.example.com", "shop.example.com")):
                    with TlsClient(tls_port, ctx, first) as a:
                        eq(a.request("GET", "/resume", host="app.test").status, 200, "first")
                        sess = a.sock.session
                    raw = socket.create_connection(("127.0.0.1", tls_port), timeout=10)
                    with ctx.wrap_socket(raw, server_hostname=second, session=sess) as b:
                        got = b.getpeercert()
                        cn = [x for rdn in got["subject"] for k, x in rdn if k == "commonName"]
                        want = second  # the CN of each certificate is its main name
                        if cn != [want]:
                            wrong.append("%s: SNI %s after a session made with SNI %s got "
                                         "certificate %s (session resumed: %s)"
                                         % (v.name, second, first, cn[0], b.session_reused))
                        if first == second and not b.session_reused:
                            wrong.append("%s: session for %s not resumed" % (v.name, first))
            expect(not wrong, "; ".join(wrong))


        # -- 3 ------------------------------------------------------------------------------
        @cases.case("versions: TLS 1.0/1.1 refused, 1.2 and 1.3 accepted; ALPN h2/http/1.1; ciphers")
        def _():
            old_ctx = lambda v: client_context(None, min_version=v, max_version=v,
                                               ciphers="DEFAULT:@SECLEVEL=0")
            # Control: this client really can speak TLS 1.0/1.1 here (against a Python server that
            # allows them), so a failure against the proxy is the proxy refusing.
            for v in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
                eq(control_handshake(site_cert, site_key, old_ctx(v)),
                   {"TLSv1": "TLSv1", "TLSv1_1": "TLSv1.1"}[v.name],
                   "control handshake with an old-TLS server")
                try:
                    with TlsClient(tls_port, old_ctx(v), "site.example.com") as c:
                        raise AssertionError("%s handshake accepted by the proxy (%s, %s)"
                                             % (v.name, c.sock.version(), c.sock.cipher()))
                except ssl.SSLError as e:
                    print("     %s refused: %s" % (v.name, e))
                    expect("protocol version" in str(e).lower() or
                           "unsupported protocol" in str(e).lower(),
                           "%s refused, but not with a protocol-version alert: %s" % (v.name, e))
            for v, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
                            (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
                ctx = client_context(CA, min_version=v, max_version=v)
                with TlsClient(tls_port, ctx, "site.example.com") as c:
                    eq(c.sock.version(), name, "negotiated version")
                    eq(c.request("GET", "/v-" + name, host="app.test").status, 200,
                       "request over " + name)
            # SPEC §12: h2 is preferred whenever the client offers it (tests/integration/
            # test_http2.py speaks it); a client offering only http/1.1 gets it.
            ctx = client_context(CA, alpn=["h2", "http/1.1"])
            with TlsClient(tls_port, ctx, "site.example.com") as c:
                eq(c.sock.selected_alpn_protocol(), "h2", "ALPN for [h2, http/1.1]")
            ctx = client_context(CA, alpn=["http/1.1"])
            with TlsClient(tls_port, ctx, "site.example.com") as c:
                eq(c.sock.selected_alpn_protocol(), "http/1.1", "ALPN for [http/1.1]")
                eq(c.request("GET", "/alpn", host="app.test").status, 200, "request after ALPN")
            ctx = client_context(CA, alpn=["spdy/3"])
            with TlsClient(tls_port, ctx, "site.example.com") as c:
                eq(c.sock.selected_alpn_protocol(), None, "ALPN when only an unknown one is offered")
            # TLS 1.2: a CBC suite outside the list is refused; the server's order wins.
            ctx = client_context(CA, max_version=ssl.TLSVersion.TLSv1_2,
                                 ciphers="ECDHE-ECDSA-AES128-SHA")
            try:
                with TlsClient(tls_port, ctx, "site.example.com") as c:
                    raise AssertionError("CBC suite accepted: %s" % (c.sock.cipher(),))
            except ssl.SSLError:
                pass
            ctx = client_context(CA, max_version=ssl.TLSVersion.TLSv1_2,
                                 ciphers="ECDHE-ECDSA-AES256-GCM-SHA384:"
                                         "ECDHE-ECDSA-AES128-GCM-SHA256")
            with TlsClient(tls_port, ctx, "site.example.com") as c:
                eq(c.sock.cipher()[0], "ECDHE-ECDSA-AES128-GCM-SHA256",
                   "TLS 1.2 suite (client prefers AES256, server order has AES128 first)")

        # -- 4 ------------------------------------------------------------------------------
        @cases.case("certificate replaced on disk + SIGHUP: new handshakes get it, old "
                    "connection keeps working")
        def _():
            ctx = client_context(CA)
            old = TlsClient(tls_port, ctx, "site.example.com")
            try:
                eq(old.request("GET", "/before-reload", host="app.test").status, 200, "before")
                eq(old.peer()[0], SITE, "serial before the reload")
                install(certs.dir / "site-v2.pem", certs.dir / "site-v2.key",
                        live / "site.pem", live / "site.key")
                eq(sighup_and_wait(env, admin_port), "success", "reload result")
                # The workers pick the snapshot up asynchronously: poll briefly, then every new
                # handshake must get the new certificate.
                wait_until(lambda: peer_of(tls_port, CA, "site.example.com")[0] == SITE2, 3,
                           "a new handshake to get the new certificate")
                for i in range(10):
                    got = peer_of(tls_port, CA, "site.example.com")
                    eq((hex(got[0]), got[1]), (hex(SITE2), "site-v2.example.com"),
                       "certificate of new connection %d after the reload" % i)
                eq(https("/after-reload").status, 200, "request on a new connection")
                # The connection made before the reload is untouched.
                r = old.request("GET", "/old-conn-after-reload", host="app.test")
                eq(r.status, 200, "request on the pre-reload connection")
                eq(old.peer()[0], SITE, "pre-reload connection's certificate")
                echo.wait_records(lambda x: x["target"] == "/old-conn-after-reload")
                # SNI certificates are re-read too.
                install(certs.dir / "other.pem", certs.dir / "other.key",
                        live / "shop.pem", live / "shop.key")
                eq(sighup_and_wait(env, admin_port), "success", "reload result (shop cert)")
                wait_until(lambda: peer_of(tls_port, CA, "shop.example.com")[0] == 0x5999, 3,
                           "the SNI certificate to change")
            finally:
                old.close()
                install(shop_cert, shop_key, live / "shop.pem", live / "shop.key")
                sighup_and_wait(env, admin_port)

        # -- 5 ------------------------------------------------------------------------------
        @cases.case("broken certificate on reload: old one kept, failure counted, POST /reload "
                    "400 names the file")
        def _():
            served = peer_of(tls_port, CA, "site.example.com")[0]
            good_pem = (live / "site.pem").read_bytes()
            good_key = (live / "site.key").read_bytes()
            bad_variants = [
                ("garbage PEM", "site.pem",
                 lambda: write_atomic(live / "site.pem",
                                      b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n"
                                      b"-----END CERTIFICATE-----\n")),
                ("key not matching", "site.key",
                 lambda: write_atomic(live / "site.key",
                                      (certs.dir / "other.key").read_bytes())),
                ("unreadable (missing) key", "site.key",
                 lambda: os.unlink(live / "site.key")),
            ]
            try:
                for what, fname, breakit in bad_variants:
                    breakit()
                    _, bad0 = reload_counts(admin_port)
                    eq(sighup_and_wait(env, admin_port), "failure", "SIGHUP reload with " + what)
                    _, bad1 = reload_counts(admin_port)
                    eq(bad1, bad0 + 1, "failure counter after SIGHUP (%s)" % what)
                    for i in range(4):
                        eq(hex(peer_of(tls_port, CA, "site.example.com")[0]), hex(served),
                           "certificate of a new connection after the failed reload (%s)" % what)
                    eq(https("/after-failed-reload").status, 200, "request after failed reload")
                    r = admin_request(admin_port, "POST", "/reload")
                    eq(r.status, 400, "POST /reload status with " + what)
                    expect(fname.encode() in r.body,
                           "POST /reload body does not name %s (%s): %r" % (fname, what, r.body))
                    _, bad2 = reload_counts(admin_port)
                    eq(bad2, bad1 + 1, "failure counter after POST /reload (%s)" % what)
                    write_atomic(live / "site.pem", good_pem)
                    write_atomic(live / "site.key", good_key)
                expect("site.pem" in env.proxy.log_tail(200) and
                       "reload failed" in env.proxy.log_tail(200),
                       "proxy log has no 'reload failed' line naming site.pem")
                r = admin_request(admin_port, "POST", "/reload")
                eq(r.status, 200, "POST /reload once the files are good again (%r)" % r.body)
            finally:
                write_atomic(live / "site.pem", good_pem)
                write_atomic(live / "site.key", good_key)

        # -- 5b -----------------------------------------------------------------------------
        @cases.case("reload adds a TLS listener, then removes it")
        def _():
            extra_port = free_port()
            doc2 = copy.deepcopy(doc)
            doc2["listener"].append({"address": "127.0.0.1:%d" % extra_port,
                                     "tls": Inline(cert="live/shop.pem", key="live/shop.key")})
            original = env.proxy.config_path.read_text()
            try:
                env.proxy.config_path.write_text(dump_toml(doc2) + "\n")
                eq(sighup_and_wait(env, admin_port), "success", "reload adding a listener")
                wait_until(lambda: can_tls(extra_port), 3, "the added TLS listener")
                got = peer_of(extra_port, CA, "anything.test")
                eq(hex(got[0]), hex(SHOP), "default certificate of the added listener")
                ctx = client_context(CA)
                with TlsClient(extra_port, ctx, "shop.example.com") as c:
                    eq(c.request("GET", "/extra-listener", host="app.test").status, 200,
                       "request on the added listener")
            finally:
                env.proxy.config_path.write_text(original)
                eq(sighup_and_wait(env, admin_port), "success", "reload removing it")
            wait_until(lambda: not can_connect(extra_port), 3,
                       "the removed listener to refuse connections")
            eq(https("/still-there").status, 200, "the original TLS listener")

        # -- 6 ------------------------------------------------------------------------------
        def via(pool, path, expect_status):
            with Client(plain_port) as c:
                r = c.request("GET", path, host=pool + ".test")
            eq(r.status, expect_status, "GET %s via pool %s: %r" % (path, pool, r))
            return r

        def requests_at(server, path):
            with server.lock:
                return [x for x in server.requests if x["path"] == path]

        @cases.case("TLS upstream: right CA 200 (IP SAN, no SNI); sni = name sent and verified")
        def _():
            r = via("up-good", "/good", 200)
            eq(r.json()["upstream"], "tls-up", "answering upstream")
            got = requests_at(tls_up, "/good")
            eq(len(got), 1, "requests /good at the TLS upstream")
            with tls_up.lock:
                sni = tls_up.snis[got[0]["conn"] - 1]
            eq(sni, None, "SNI sent to an IP-address server")
            r = via("up-sni", "/sni", 200)
            got = requests_at(tls_up, "/sni")
            with tls_up.lock:
                sni = tls_up.snis[got[0]["conn"] - 1]
            eq(sni, "upstream.test", "SNI sent with sni = \"upstream.test\"")

        @cases.case("TLS upstream: wrong CA -> 502 + log names server and 'certificate verify "
                    "failed'; "
                    "tls_verify = false works; name mismatch and system store -> 502")
        def _():
            _, _, fails0 = tls_up.counts()
            via("up-wrongca", "/wrongca", 502)
            expect(not requests_at(tls_up, "/wrongca"),
                   "the request reached the upstream over an unverified connection")
            pat = re.compile(r"upstream %s: .*certificate verify failed" % re.escape(tls_up.addr))
            line = wait_until(lambda: next((l for l in env.proxy.log_tail(400).splitlines()
                                            if pat.search(l)), None), 3,
                              "a log line naming %s and 'certificate verify failed'" % tls_up.addr)
            print("     log: %s" % line.strip())
            wait_until(lambda: len(tls_up.counts()[2]) > len(fails0), 3,
                       "the upstream to see the aborted handshake")
            r = via("up-noverify", "/noverify", 200)
            eq(r.json()["upstream"], "tls-up", "answering upstream with tls_verify = false")
            eq(len(requests_at(tls_up, "/noverify")), 1, "requests /noverify at the upstream")
            def log_count(what):
                return sum(1 for l in env.proxy.log_tail(1000).splitlines()
                           if ("upstream %s:" % tls_up.addr) in l and what in l)
            n = log_count("hostname mismatch")
            via("up-badname", "/badname", 502)
            expect(not requests_at(tls_up, "/badname"),
                   "request sent to a server whose certificate does not match sni = wrong.test")
            wait_until(lambda: log_count("hostname mismatch") > n, 3,
                       "a log line with 'hostname mismatch' for sni = wrong.test")
            n = log_count("unable to get local issuer certificate")
            via("up-system", "/system", 502)
            expect(not requests_at(tls_up, "/system"),
                   "request sent to a server not trusted by the system store")
            wait_until(lambda: log_count("unable to get local issuer certificate") > n, 3,
                       "a log line with 'unable to get local issuer certificate' (ca_file = \"\")")

        # -- 7 ------------------------------------------------------------------------------
        @cases.case("TLS upstream keep-alive: 50 sequential requests, far fewer TLS connections")
        def _():
            h0, n0, f0 = reuse_up.counts()
            with Client(plain_port) as c:
                for i in range(25):
                    eq(c.request("GET", "/ka-%d" % i, host="up-reuse.test").status, 200,
                       "request %d on one client connection" % i)
            for i in range(25, 50):
                with Client(plain_port) as c:
                    eq(c.request("GET", "/ka-%d" % i, host="up-reuse.test").status, 200,
                       "request %d on its own client connection" % i)
            h1, n1, f1 = reuse_up.counts()
            eq(n1 - n0, 50, "requests at the TLS upstream")
            eq(f1[len(f0):], [], "failed handshakes at the TLS upstream")
            print("     50 requests -> %d TLS connections at the upstream" % (h1 - h0))
            # 2 workers: ideally 2; anything near one per request means no reuse.
            expect(1 <= h1 - h0 <= 6,
                   "%d TLS connections for 50 sequential requests (want <= 6)" % (h1 - h0))
            with reuse_up.lock:
                per_conn = {}
                for x in reuse_up.requests[n0:]:
                    per_conn[x["conn"]] = per_conn.get(x["conn"], 0) + 1
            expect(max(per_conn.values()) >= 10,
                   "no upstream TLS connection carried 10+ requests: %r" % per_conn)

        # -- robustness and framing over TLS ------------------------------------------------
        def client_conns():
            return metric(admin_port, 'switchyard_connections_active{side="client"}')

        @cases.case("TLS listener: plain HTTP, garbage, stalled handshakes, clients vanishing "
                    "mid-response: all closed, no connection leaks")
        def _():
            wait_until(lambda: client_conns() == 0, 5, "no client connections before")

            def settled(what):
                try:
                    wait_until(lambda: client_conns() == 0, 5, "")
                except TimeoutError:
                    raise AssertionError(
                        "%s: switchyard_connections_active{side=\"client\"} still %s 5 s later "
                        "(the proxy keeps a connection whose client is gone)"
                        % (what, client_conns())) from None

            with Client(tls_port) as c:
                c.send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
                expect(c.closed_by_peer(5), "plain HTTP on the TLS port: connection not closed")
            settled("plain HTTP sent to the TLS port")
            with Client(tls_port) as c:
                c.send(os.urandom(4096))
                expect(c.closed_by_peer(5), "random bytes on the TLS port: connection not closed")
            settled("random bytes sent to the TLS port")
            # Half a ClientHello, then silence; and a bare TCP connection: both must be closed
            # by the proxy (client_header_ms = 1.5 s here), not held forever.
            hello = bytearray(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03") + os.urandom(40)
            t0 = time.monotonic()
            with Client(tls_port) as a, Client(tls_port) as b:
                a.send(bytes(hello))
                expect(a.closed_by_peer(8), "a half-sent ClientHello was not closed within 8 s")
                expect(b.closed_by_peer(8), "a silent TCP connection was not closed within 8 s")
            print("     stalled handshakes closed after %.1fs" % (time.monotonic() - t0))
            settled("stalled handshakes")
            ctx = client_context(CA)
            c = TlsClient(tls_port, ctx, "site.example.com")
            c.sock.close()
            settled("a client closing right after the handshake")
            # A client that disappears while a large response is being sent to it (its receive
            # buffer is full, the proxy's output is above the watermark, the upstream is paused).
            for how in ("RST (SO_LINGER 0)", "close() with unread data"):
                c = TlsClient(tls_port, ctx, "site.example.com")
                c.send(b"GET /bytes?n=20000000 HTTP/1.1\r\nHost: app.test\r\n\r\n")
                c.read_some()
                stalled(c, tls_port)
                if how.startswith("RST"):
                    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                      b"\x01\x00\x00\x00\x00\x00\x00\x00")
                c.sock.close()
                settled("a TLS client gone mid-response by %s" % how)
            # The same while the proxy only flushes the tail of a Connection: close response
            # (the upstream has finished, the proxy is closing after the flush).
            for how in ("RST (SO_LINGER 0)", "close() with unread data"):
                for size in (2000000, 6000000):
                    c = TlsClient(tls_port, ctx, "site.example.com")
                    c.send(b"GET /bytes?n=%d HTTP/1.1\r\nHost: app.test\r\nConnection: close"
                           b"\r\n\r\n" % size)
                    c.read_some()
                    stalled(c, tls_port)
                    if how.startswith("RST"):
                        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                          b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    c.sock.close()
                    settled("a TLS client gone by %s while a %d-byte Connection: close "
                            "response is flushed" % (how, size))
            # The same over plain HTTP, for contrast.
            with Client(plain_port) as c:
                c.send(b"GET /bytes?n=20000000 HTTP/1.1\r\nHost: app.test\r\n\r\n")
                c.read_some()
                stalled(c, plain_port)
                c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                  b"\x01\x00\x00\x00\x00\x00\x00\x00")
            settled("a plain-HTTP client gone mid-response by RST")
            expect(env.proxy.alive(), "proxy died")
            eq(https("/after-garbage").status, 200, "a normal HTTPS request afterwards")

        @cases.case("bodies over TLS (listener): 8 MiB response, 8 MiB CL and chunked uploads, "
                    "byte-exact")
        def _():
            n = 8 << 20
            ctx = client_context(CA)
            with TlsClient(tls_port, ctx, "site.example.com") as c:
                r = c.request("GET", "/bytes?n=%d" % n, host="app.test")
                eq(r.status, 200, "status")
                eq(len(r.body), n, "response length")
                eq(sha256(r.body), sha256(pattern_bytes(0, n)), "response sha256")
                body = os.urandom(n)
                for chunked in (False, True):
                    r = c.request("POST", "/echo", host="app.test", body=body, chunked=chunked)
                    eq(r.status, 200, "POST /echo status (chunked=%s)" % chunked)
                    eq(len(r.body), n, "echoed length (chunked=%s)" % chunked)
                    eq(sha256(r.body), sha256(body), "echoed sha256 (chunked=%s)" % chunked)
                r = c.request("GET", "/bytes?n=%d&close=1" % (1 << 20), host="app.test")
                eq(sha256(r.body), sha256(pattern_bytes(0, 1 << 20)),
                   "close-delimited upstream response over TLS")

        @cases.case("bodies to a TLS upstream: 8 MiB response (CL and close-delimited), "
                    "8 MiB upload")
        def _():
            n = 8 << 20
            with Client(plain_port) as c:
                r = c.request("GET", "/bytes?n=%d" % n, host="up-good.test")
                eq(r.status, 200, "status")
                eq(sha256(r.body), sha256(pattern_bytes(0, n)),
                   "sha256 of 8 MiB from the TLS upstream (got %d bytes)" % len(r.body))
                body = os.urandom(n)
                for chunked in (False, True):
                    r = c.request("POST", "/upload", host="up-good.test", body=body,
                                  chunked=chunked)
                    eq(r.status, 200, "POST status (chunked=%s)" % chunked)
                    eq(r.json(), {"body_bytes": n, "body_sha256": sha256(body)},
                       "what the TLS upstream received (chunked=%s)" % chunked)
            # Close-delimited, ended by a TCP close without close_notify (what Python's ssl, and
            # many servers, do): the body ends there, as it does over plain TCP.
            for size in (1000, 100000, 1 << 20):
                with Client(plain_port) as c:
                    c.send(build_request("GET", "/bytes?n=%d&close=1" % size,
                                         host="up-good.test"))
                    try:
                        r = c.read_response()
                    except ConnectionError as e:
                        raise AssertionError(
                            "close-delimited %d-byte response from the TLS upstream: %s; the "
                            "proxy cut the client connection (%d raw bytes received)"
                            % (size, e, len(c.buf))) from None
                    eq(r.status, 200, "status (close-delimited, %d bytes)" % size)
                    eq(sha256(r.body), sha256(pattern_bytes(0, size)),
                       "close-delimited body from the TLS upstream (got %d of %d bytes)"
                       % (len(r.body), size))

        @cases.case("WebSocket upgrade over the TLS listener: 101, bytes echoed both ways")
        def _():
            ctx = client_context(CA)
            with TlsClient(tls_port, ctx, "site.example.com") as c:
                key = base64.b64encode(os.urandom(16)).decode()
                c.send(build_request("GET", "/ws", host="app.test", headers=[
                    ("Upgrade", "websocket"), ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]))
                r = c.read_response()
                eq(r.status, 101, "upgrade status")
                for size in (5, 70000, 1 << 20):
                    data = os.urandom(size)
                    c.send(data)
                    got = c.read_exact(size)
                    eq(sha256(got), sha256(data), "%d bytes echoed through the TLS tunnel" % size)

        @cases.case("Connection: close over TLS: full response, then the proxy closes")
        def _():
            ctx = client_context(CA)
            with TlsClient(tls_port, ctx, "site.example.com") as c:
                r = c.request("GET", "/bytes?n=300000", host="app.test",
                              headers=[("Connection", "close")])
                eq(sha256(r.body), sha256(pattern_bytes(0, 300000)), "body")
                expect(c.closed_by_peer(5), "connection still open after Connection: close")

        @cases.case("64 concurrent HTTPS clients x 5 requests: all 200")
        def _():
            ctx = client_context(CA)

            def run(ids):
                out = []
                for i in ids:
                    with TlsClient(tls_port, ctx, "site.example.com") as c:
                        for k in range(5):
                            out.append(c.request("GET", "/par/%d/%d" % (i, k),
                                                 host="app.test").status)
                return out
            statuses = [s for chunk in parallel(run, list(range(64)), threads=64) for s in chunk]
            eq(sorted(set(statuses)), [200], "statuses")
            eq(len(statuses), 320, "responses")

        @cases.case("idle TLS upstream connection closed by the server is not reused (no 502)")
        def _():
            for i in range(4):
                with Client(plain_port) as c:
                    eq(c.request("GET", "/idle-%d" % i, host="up-idle.test").status, 200,
                       "request %d (the server closes idle connections after 0.3 s)" % i)
                # The point of the case: the server closes the idle connection (after 0.3 s),
                # and the proxy has seen it, before the next request.
                wait_until(idle_up.all_closed, 5, "the server to close its idle connections")
                wait_closed_by_proxy(idle_up.port)
            eq(idle_up.counts()[1], 4, "requests at the upstream")

        @cases.case("active health checks of a TLS pool speak TLS: the server stays healthy")
        def _():
            series = 'switchyard_upstream_healthy{pool="up-health",server="%s"}' % health_up.addr
            # interval 200 ms, unhealthy_after 2: a second is several checks.
            wait_until(lambda: health_up.counts()[0] + len(health_up.counts()[2]) >= 3, 5,
                       "3 health-check connections at the TLS upstream")

            def checks_seen():  # a check is a /healthz request, or a failed handshake
                with health_up.lock:
                    return (len([x for x in health_up.requests if x["path"] == "/healthz"])
                            + len(health_up.failures))
            # Several more checks (more than unhealthy_after), then look at the verdict.
            seen = checks_seen()
            wait_until(lambda: checks_seen() >= seen + 4, 5, "4 more health checks")
            hs, nreq, fails = health_up.counts()
            checks = [x for x in health_up.requests if x["path"] == "/healthz"]
            with Client(plain_port) as c:
                status = c.request("GET", "/through-health", host="up-health.test").status
            expect(not fails, "health checks failed the TLS handshake at the upstream (%d "
                   "failures, e.g. %r): they are sent without TLS; %s = %s; a request to the "
                   "pool gets %d" % (len(fails), fails[:1], series, metric(admin_port, series),
                                     status))
            expect(checks, "no /healthz request reached the TLS upstream")
            eq(metric(admin_port, series), 1.0, series)
            with Client(plain_port) as c:
                eq(c.request("GET", "/through-health", host="up-health.test").status, 200,
                   "request to the health-checked TLS pool")

        if os.environ.get("SY_TLS_ONLY"):  # run only the cases whose name contains this
            cases.cases = [c for c in cases.cases if os.environ["SY_TLS_ONLY"] in c[0]]
        cases.run()
    finally:
        for u in (tls_up, reuse_up, idle_up, health_up):
            u.stop()
cases.exit()
