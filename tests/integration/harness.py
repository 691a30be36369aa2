"""Integration-test harness: the real switchyard binary against real upstreams on 127.0.0.1.

Python 3 stdlib only. A test file does:

    from harness import Env, Cases, Client, expect, eq

    cases = Cases("forwarding")
    with Env(cases) as env:
        blue = env.upstream("blue")                      # tools/echo-upstream on a free port
        env.start_proxy(config_doc(env, pools=..., routes=...))
        @cases.case("GET is proxied")
        def _():
            r = env.client().request("GET", "/x")
            eq(r.status, 200, "status")
        cases.run()
    cases.exit()

Every wait polls with a deadline (wait_until); nothing sleeps blindly. Env's exit stops the
proxy (SIGTERM, then SIGKILL after a deadline) and every upstream, also when a case or the
set-up failed, and prints the tail of the proxy's log when something failed.
"""

import hashlib
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ECHO_UPSTREAM = ROOT / "tools" / "echo-upstream"
DEFAULT_BINARY = ROOT / "build" / "proxy" / "switchyard"
HOST = "app.test"  # the Host the generated configs route on


def proxy_binary():
    """argv[1] (meson passes switchyard_exe.full_path()), else build/proxy/switchyard."""
    return Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_BINARY


# ---- small utilities ---------------------------------------------------------------------

class CaseFailure(AssertionError):
    pass


def expect(cond, message):
    if not cond:
        raise CaseFailure(message)


def eq(got, want, what):
    if got != want:
        raise CaseFailure("%s: got %r, want %r" % (what, _short(got), _short(want)))


def _short(v, limit=300):
    if isinstance(v, (bytes, bytearray)) and len(v) > limit:
        return bytes(v[:limit]) + b"...(%d bytes)" % len(v)
    if isinstance(v, str) and len(v) > limit:
        return v[:limit] + "...(%d chars)" % len(v)
    return v


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def wait_until(pred, timeout, what, interval=0.02):
    """Polls pred() until it returns a truthy value (returned) or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def wait_settled(fn, quiet=0.2, timeout=3.0, interval=0.02):
    """Polls fn() until its value has not changed for `quiet` seconds, or the deadline passes;
    returns the last value either way. For "the buffers have filled up": a value that keeps
    moving is for the caller to judge, not an error here."""
    deadline = time.monotonic() + timeout
    last = fn()
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(interval)
        now = fn()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


# ---- the kernel's view of loopback TCP sockets (/proc/net/tcp) ----------------------------

TCP_CLOSE_WAIT = 0x08


def tcp_sockets():
    """[(local port, remote port, state, tx_queue, rx_queue)] of the IPv4 TCP sockets."""
    out = []
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            tx, rx = (int(x, 16) for x in parts[4].split(":"))
            out.append((int(parts[1].split(":")[1], 16), int(parts[2].split(":")[1], 16),
                        int(parts[3], 16), tx, rx))
    return out


def tcp_queues():
    """{(local port, remote port): (tx_queue, rx_queue)} of the IPv4 TCP sockets."""
    return {(l, r): (tx, rx) for l, r, _, tx, rx in tcp_sockets()}


def wait_closed_by_proxy(server_port, timeout=2.0):
    """After a server on server_port closed connections, polls until no socket toward it is
    left in CLOSE_WAIT (the proxy has seen the FIN and closed its side). True if so by the
    deadline; False otherwise (a proxy may also notice only when it next uses the connection,
    which the caller's requests then show)."""
    try:
        wait_until(lambda: not any(r == server_port and st == TCP_CLOSE_WAIT
                                   for _, r, st, _, _ in tcp_sockets()),
                   timeout, "the proxy to close the connections the server closed")
        return True
    except TimeoutError:
        return False


_PATTERN = bytes(range(256)) * 256


def pattern_bytes(offset, n):
    """Bytes [offset, offset+n) of echo-upstream's /bytes body: byte i is i % 256."""
    out = bytearray()
    while n > 0:
        start = offset % len(_PATTERN)
        take = min(n, len(_PATTERN) - start)
        out += _PATTERN[start:start + take]
        offset += take
        n -= take
    return bytes(out)


def free_port():
    """A port that was free a moment ago (bound to 0 by the kernel, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_reserved = []


def dead_address():
    """127.0.0.1:PORT where connecting is refused. The port stays bound (without listen())
    for the life of the process, so nothing else can start listening on it meanwhile."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    _reserved.append(s)
    return "127.0.0.1:%d" % s.getsockname()[1]


def can_connect(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


# ---- TOML generation ---------------------------------------------------------------------

def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join("%s = %s" % (k, _toml_value(x)) for k, x in v.items()) + " }"
    raise TypeError("cannot write %r as TOML" % (v,))


def _is_table_array(v):
    return isinstance(v, list) and v and all(isinstance(x, dict) for x in v)


def dump_toml(doc, prefix=""):
    """Writes a dict as TOML: scalars and inline tables (wrap a dict in Inline) first, then
    sub-tables, then arrays of tables, recursively."""
    out = []
    for k, v in doc.items():
        if isinstance(v, Inline):
            out.append("%s = %s" % (k, _toml_value(dict(v))))
        elif not isinstance(v, dict) and not _is_table_array(v):
            out.append("%s = %s" % (k, _toml_value(v)))
    for k, v in doc.items():
        name = prefix + k
        if isinstance(v, dict) and not isinstance(v, Inline):
            out.append("\n[%s]" % name)
            out.append(dump_toml(v, name + "."))
    for k, v in doc.items():
        name = prefix + k
        if _is_table_array(v):
            for item in v:
                out.append("\n[[%s]]" % name)
                out.append(dump_toml(item, name + "."))
    return "\n".join(x for x in out if x)


class Inline(dict):
    """A dict written as a TOML inline table (match = { host = ... })."""


def route(name, upstreams, weights, host=HOST, path=None, key=("header:X-User-Id",),
          fallback="random", overrides=(), **extra):
    """A [[routes]] entry. upstreams/weights: {variant: pool name} / {variant: weight}."""
    match = Inline()
    if host:
        match["host"] = host
    if path:
        match["path"] = path
    r = {"name": name}
    if match:
        r["match"] = match
    r["key"] = list(key)
    r["fallback"] = fallback
    r.update(extra)
    r["upstreams"] = dict(upstreams)
    r["weights"] = dict(weights)
    if overrides:
        r["override"] = [dict(o) for o in overrides]
    return r


def config_doc(listen_port, pools, routes, admin_port=None, timeouts=None, limits=None,
               server=None):
    """A complete config: pools {name: [addr, ...]}, routes [route(...), ...]."""
    srv = {"listen": ["127.0.0.1:%d" % listen_port], "workers": 2}
    if admin_port:
        srv["admin"] = "127.0.0.1:%d" % admin_port
    srv.update(server or {})
    t = {"drain_timeout_ms": 2000}
    t.update(timeouts or {})
    srv["timeouts"] = t
    if limits:
        srv["limits"] = dict(limits)
    return {
        "server": srv,
        "upstreams": {name: {"servers": list(servers)} for name, servers in pools.items()},
        "routes": list(routes),
    }


# ---- processes ---------------------------------------------------------------------------

class RawServer:
    """A TCP server on 127.0.0.1 for an upstream that misbehaves on purpose: a thread accepts,
    and each connection is handed to self.serve(*self.adopt(sock, number)) in a thread of its
    own (number counts from 1; adopt runs on the accepting thread, in accept order, and by
    default passes (sock, number) on). Subclasses define serve(); stop() closes the listening
    socket."""

    def __init__(self, backlog=64):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(backlog)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.lock = threading.Lock()
        self.accepted = 0
        self.stopped = False
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while not self.stopped:
            try:
                s, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.accepted += 1
                n = self.accepted
            threading.Thread(target=self.serve, args=self.adopt(s, n), daemon=True).start()

    def adopt(self, sock, number):
        return (sock, number)

    def serve(self, *args):
        raise NotImplementedError

    def stop(self):
        self.stopped = True
        self.lsock.close()
        self.thread.join(2)


class Upstream:
    """tools/echo-upstream as a child process, logging every request: on a free port, or on
    `port` (a server that comes back where a pool was pointing)."""

    def __init__(self, workdir, name, start_timeout=10.0, port=0, args=()):
        self.name = name
        self.log_path = Path(workdir) / ("upstream-%s.jsonl" % name)
        self.err_path = Path(workdir) / ("upstream-%s.stderr" % name)
        self._err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(ECHO_UPSTREAM), "--port", str(port), "--name", name,
             "--log", str(self.log_path)] + [str(a) for a in args],  # e.g. --delay-ms 200
            stdout=subprocess.PIPE, stderr=self._err, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + start_timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("echo-upstream %s did not start: %s" % (
                    name, self.err_path.read_text(errors="replace")[-2000:]))
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                ch = os.read(self.proc.stdout.fileno(), 1)
                if not ch:
                    continue
                line += ch
        parts = line.decode().split()
        if len(parts) != 3 or parts[0] != "ready":
            self.stop()
            raise RuntimeError("echo-upstream %s: unexpected first line %r" % (name, line))
        self.port = int(parts[2].rsplit(":", 1)[1])
        self.addr = "127.0.0.1:%d" % self.port

    def records(self):
        """Every request the upstream received so far, as dicts (see tools/echo-upstream)."""
        try:
            text = self.log_path.read_text()
        except FileNotFoundError:
            return []
        # Only complete lines: another request's record may be half-written right now.
        return [json.loads(l) for l in text.split("\n")[:-1] if l.strip()]

    def find(self, pred):
        return [r for r in self.records() if pred(r)]

    def wait_records(self, pred, count=1, timeout=5.0):
        """Polls the log until at least count records match; returns them."""
        return wait_until(lambda: (lambda m: m if len(m) >= count else None)(self.find(pred)),
                          timeout, "%d request(s) at upstream %s" % (count, self.name))

    def stats(self):
        c = Client(self.port, timeout=5)
        try:
            return c.request("GET", "/__stats", host="upstream").json()
        finally:
            c.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self._err.close()


class Proxy:
    """The switchyard binary under test, started on a generated config."""

    def __init__(self, workdir, doc, binary=None, workers=2, start_timeout=15.0,
                 preexec_fn=None):
        self.binary = Path(binary or proxy_binary())
        self.config_path = Path(workdir) / "switchyard.toml"
        self.config_path.write_text(dump_toml(doc) + "\n")
        self.log_path = Path(workdir) / "switchyard.log"
        self.port = int(doc["server"]["listen"][0].rsplit(":", 1)[1])
        self.exit_code = None
        if not self.binary.exists():
            raise RuntimeError("proxy binary %s does not exist" % self.binary)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(self.binary), "--config", str(self.config_path), "--workers", str(workers)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=preexec_fn)  # e.g. resource limits for the child only

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError("switchyard exited with code %s at start:\n%s" % (
                    self.proc.returncode, self.log_tail()))
            return can_connect(self.port)
        try:
            wait_until(ready, start_timeout, "switchyard to accept on port %d" % self.port)
        except TimeoutError as e:
            self.stop()
            raise RuntimeError("%s\n%s" % (e, self.log_tail()))

    def log_tail(self, lines=40):
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=8.0):
        """SIGTERM, then SIGKILL if it has not exited by the deadline. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.exit_code = "killed (no exit %.0fs after SIGTERM)" % timeout
        if self.exit_code is None:
            self.exit_code = self.proc.returncode
        self._log.close()
        return self.exit_code


class Env:
    """A temp dir, upstreams and a proxy; everything is stopped on exit, even on failure."""

    def __init__(self, cases):
        self.cases = cases
        self.dir = Path(tempfile.mkdtemp(prefix="sy-it-%s-" % cases.name))
        self.upstreams = []
        self.proxy = None

    def __enter__(self):
        self.cases.on_failure = self._proxy_state
        return self

    def _proxy_state(self):
        if self.proxy and not self.proxy.alive():
            return "switchyard is no longer running: exit status %s" % self.proxy.proc.returncode
        return None

    def upstream(self, name, args=()):
        u = Upstream(self.dir, name, args=args)
        self.upstreams.append(u)
        return u

    def start_proxy(self, doc, **kw):
        self.proxy = Proxy(self.dir, doc, **kw)
        return self.proxy

    def client(self, timeout=10.0):
        return Client(self.proxy.port, timeout=timeout)

    def __exit__(self, exc_type, exc, tb):
        if exc is not None:
            # Set-up failed (e.g. the proxy did not start): every case counts as failed.
            self.cases.setup_failed(exc)
        proxy_code = None
        if self.proxy:
            proxy_code = self.proxy.stop()
        for u in self.upstreams:
            u.stop()
        if self.proxy and self.cases.failed:
            print("--- tail of switchyard log (%s) ---" % self.proxy.log_path)
            print(self.proxy.log_tail())
            print("--- end of log ---")
        if self.proxy and proxy_code not in (0, None):
            print("note: switchyard exit status after SIGTERM: %s" % proxy_code)
        if self.cases.failed:
            print("note: kept %s for inspection" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        return True  # the failure was recorded; Cases.exit() sets the exit code


def run_against_one_upstream(cases, state):
    """The common set-up: one echo upstream "blue" (state.blue) behind one catch-all route,
    the proxy in state.env; runs the cases and exits with their result."""
    with Env(cases) as env:
        state.env = env
        state.blue = env.upstream("blue")
        env.start_proxy(config_doc(
            free_port(),
            pools={"blue": [state.blue.addr]},
            routes=[route("app", {"blue": "blue"}, {"blue": 100})]))
        cases.run()
    cases.exit()


class Cases:
    """Registers and runs named cases, one output line each; exit() is non-zero on failure."""

    def __init__(self, name):
        self.name = name
        self.cases = []
        self.passed = 0
        self.failed = 0
        self.on_failure = None  # () -> str or None: extra context for a failure line

    def case(self, name):
        def register(fn):
            self.cases.append((name, fn))
            return fn
        return register

    def run(self):
        pat = os.environ.get("SY_TEST_MATCH")  # run only the cases whose name contains this
        if pat:
            self.cases = [(n, f) for n, f in self.cases if pat in n]
        for name, fn in self.cases:
            t0 = time.monotonic()
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - any error fails the case, not the run
                self.failed += 1
                what = str(e) if isinstance(e, CaseFailure) else "%s: %s" % (type(e).__name__, e)
                extra = self.on_failure() if self.on_failure else None
                print("FAIL %s: %s%s" % (name, what, " [%s]" % extra if extra else ""),
                      flush=True)
                if os.environ.get("SY_TEST_TRACE"):
                    traceback.print_exc()
                continue
            self.passed += 1
            print("ok   %s (%.2fs)" % (name, time.monotonic() - t0), flush=True)
        self.cases = []

    def setup_failed(self, exc):
        print("FAIL %s set-up: %s: %s" % (self.name, type(exc).__name__, exc), flush=True)
        for name, _ in self.cases:  # cases registered but never run
            print("FAIL %s: not run (set-up failed)" % name, flush=True)
        self.failed += max(1, len(self.cases))
        self.cases = []

    def exit(self):
        print("%s: %d passed, %d failed" % (self.name, self.passed, self.failed), flush=True)
        # For tools/test, which counts cases, not programs: a fixed prefix, always the last line.
        print("cases: %d passed, %d failed" % (self.passed, self.failed), flush=True)
        sys.exit(1 if self.failed or not self.passed else 0)


# ---- admin endpoint ----------------------------------------------------------------------

def admin_get(admin_port, path):
    """GET path on the admin endpoint; the body as text (raises on a non-200 answer)."""
    c = Client(admin_port, timeout=5)
    try:
        r = c.request("GET", path, host="admin")
    finally:
        c.close()
    if r.status != 200:
        raise CaseFailure("admin GET %s: status %d %r" % (path, r.status, _short(r.body)))
    return r.body.decode()


def parse_metrics(text):
    """Prometheus text -> {(name, frozenset({(label, value), ...})): value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        if m is None:
            raise CaseFailure("unparsable metrics line %r" % line)
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def metrics(admin_port):
    """/metrics of the proxy, parsed (parse_metrics)."""
    return parse_metrics(admin_get(admin_port, "/metrics"))


# ---- raw HTTP/1.1 client -----------------------------------------------------------------

class Response:
    def __init__(self, version, status, reason, headers, body, interim):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers      # [(name, value), ...] as received
        self.body = body
        self.interim = interim      # [(status, headers), ...] 1xx responses before this one
        self.trailers = []          # [(name, value), ...] of a chunked body's trailer section

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<%d %s %r %r>" % (self.status, self.reason, self.headers, _short(self.body, 200))


def build_request(method, target, host=HOST, headers=(), body=None, chunked=False,
                  chunk_size=65536, version="HTTP/1.1", trailers=()):
    """Bytes of one request. Content-Length is added for a body unless chunked or already
    given; chunked bodies are cut into chunk_size pieces and end with `trailers`."""
    lines = ["%s %s %s" % (method, target, version)]
    if host is not None:
        lines.append("Host: " + host)
    names = {k.lower() for k, _ in headers}
    lines += ["%s: %s" % (k, v) for k, v in headers]
    payload = b""
    if body is not None:
        if chunked:
            if "transfer-encoding" not in names:
                lines.append("Transfer-Encoding: chunked")
            payload = encode_chunked(body, chunk_size, trailers)
        else:
            if "content-length" not in names:
                lines.append("Content-Length: %d" % len(body))
            payload = body
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def encode_chunked(body, chunk_size=65536, trailers=()):
    out = bytearray()
    sizes = chunk_size if isinstance(chunk_size, (list, tuple)) else [chunk_size]
    i = 0
    k = 0
    while i < len(body):
        n = sizes[k % len(sizes)]
        k += 1
        piece = body[i:i + n]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
        i += n
    out += b"0\r\n"
    for k, v in trailers:
        out += ("%s: %s\r\n" % (k, v)).encode("latin-1")
    out += b"\r\n"
    return bytes(out)


class Client:
    """One TCP connection to the proxy; reads responses with CL/chunked/close framing."""

    def __init__(self, port, host="127.0.0.1", timeout=10.0, source=None):
        # source: the local address to connect from (e.g. "127.0.0.2", any of 127.0.0.0/8)
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False
        self.local_port = self.sock.getsockname()[1]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def request(self, method, target, host=HOST, headers=(), body=None, chunked=False,
                **kw):
        self.send(build_request(method, target, host=host, headers=headers, body=body,
                                chunked=chunked, **kw))
        return self.read_response(method)

    # -- buffered reading --

    def _fill(self):
        if self.eof:
            return False
        try:
            data = self.sock.recv(262144)
        except ConnectionResetError:
            data = b""
        except socket.timeout:
            raise TimeoutError("no data from the proxy within %.0fs (%d unparsed bytes: %r)" % (
                self.sock.gettimeout(), len(self.buf), _short(bytes(self.buf), 120))) from None
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_line(self):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return line
            if not self._fill():
                raise ConnectionError("connection closed while reading a line (have %r)"
                                      % _short(bytes(self.buf)))

    def read_exact(self, n):
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionError("connection closed after %d of %d bytes"
                                      % (len(self.buf), n))
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read_some(self):
        """Whatever is buffered, else one recv; b"" at EOF."""
        if not self.buf:
            self._fill()
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def read_to_eof(self):
        while self._fill():
            pass
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def read_head(self):
        """Status line + headers. Returns (version, status, reason, headers)."""
        line = self.read_line()
        parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise ConnectionError("bad status line %r" % _short(line))
        version, status = parts[0], int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = []
        while True:
            line = self.read_line()
            if line in (b"\r\n", b"\n"):
                break
            k, _, v = line.decode("latin-1").rstrip("\r\n").partition(":")
            headers.append((k, v.strip()))
        return version, status, reason, headers

    def read_response(self, method="GET", stop_at_101=True):
        """Reads one final response (1xx other than 101 are collected in .interim)."""
        interim = []
        while True:
            version, status, reason, headers = self.read_head()
            if 100 <= status < 200 and not (status == 101 and stop_at_101):
                interim.append((status, headers))
                continue
            break
        resp = Response(version, status, reason, headers, b"", interim)
        if method == "HEAD" or status in (101, 204, 304) or 100 <= status < 200:
            return resp
        te = ",".join(resp.header_all("transfer-encoding")).lower()
        cl = resp.header("content-length")
        if "chunked" in te:
            body = bytearray()
            while True:
                size = int(self.read_line().split(b";")[0].strip(), 16)
                if size == 0:
                    while True:
                        line = self.read_line()
                        if line in (b"\r\n", b"\n"):
                            break
                        k, _, v = line.decode("latin-1").rstrip("\r\n").partition(":")
                        resp.trailers.append((k, v.strip()))
                    break
                body += self.read_exact(size)
                if self.read_exact(2) != b"\r\n":
                    raise ConnectionError("bad chunk terminator")
            resp.body = bytes(body)
        elif cl is not None:
            resp.body = self.read_exact(int(cl))
        else:
            resp.body = self.read_to_eof()
        return resp

    def wait_for_data(self, timeout):
        """True if bytes (or EOF) arrive within timeout."""
        if self.buf:
            return True
        r, _, _ = select.select([self.sock], [], [], timeout)
        return bool(r)

    def closed_by_peer(self, timeout=5.0):
        """True if the peer closes (EOF or reset) within timeout, discarding any bytes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.wait_for_data(deadline - time.monotonic()):
                return False
            self.buf.clear()
            if not self._fill():
                return True
        return False


def parallel(fn, items, threads=8):
    """Runs fn(chunk) for items split in `threads` chunks; returns the results, in order;
    re-raises the first exception."""
    chunks = [items[i::threads] for i in range(threads)]
    results = [None] * threads
    errors = []

    def run(i):
        try:
            results[i] = fn(chunks[i])
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
    return results


def header_of(record, name):
    """First value of a header in an upstream log record, or None."""
    name = name.lower()
    for k, v in record["headers"]:
        if k.lower() == name:
            return v
    return None


def header_names(record):
    return [k.lower() for k, _ in record["headers"]]


# ---- headless Chromium (test_dashboard.py, test_http2_browser.py) -----------------------------

CHROMIUM_TIMEOUT = 90.0


def chromium_path():
    path = os.environ.get("SY_CHROMIUM") or shutil.which("chromium")
    if not path:
        raise CaseFailure("chromium is not installed: this test needs Debian's 'chromium' "
                          "package (tools/bootstrap installs it)")
    return path


def run_chromium(work_dir, *args):
    """Runs headless Chromium on a fresh profile under `work_dir`; returns stdout. Certificate
    errors are ignored (the tests' certificates are self-signed). Bounded by a deadline: the
    whole process group is killed when it is exceeded."""
    profile = tempfile.mkdtemp(prefix="chromium-", dir=work_dir)
    cmd = [chromium_path(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
           "--ignore-certificate-errors", "--user-data-dir=" + profile,
           "--virtual-time-budget=6000", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=CHROMIUM_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise CaseFailure("chromium did not finish within %.0fs: %s" % (CHROMIUM_TIMEOUT, cmd))
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if proc.returncode != 0:
        raise CaseFailure("chromium exited with %d; stderr tail:\n%s" % (
            proc.returncode, err.decode(errors="replace")[-3000:]))
    return out.decode(errors="replace")
