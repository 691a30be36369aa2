#!/usr/bin/env python3
"""Reload leaks: 100 successful reloads (and 5 rejected ones) under a little keep-alive traffic,
cycling through configs that create and drop everything a snapshot owns: RE2 matchers, upstream
pools replaced together with their idle connections, pools with health checks, a TLS upstream
pool (client SSL_CTX with a CA file), a TLS listener (server SSL_CTX), an extra plain listener,
shadow mirroring, an access-log file and the config-file watch. Then SIGTERM.

    python3 tests/integration/test_reload_leaks.py build/proxy/switchyard
    tools/sanitize    # the same file against build-asan/proxy/switchyard

Under AddressSanitizer (tools/sanitize) LeakSanitizer checks the heap when the proxy exits: a
snapshot, SSL_CTX, RE2 or pool that a reload dropped without freeing makes the exit status
non-zero (abort_on_error) and the report says what leaked and where it was allocated. With any
build the test also checks that 100 reloads leave the open file descriptors and threads where
they were after the first 10 (a leaked socket, inotify watch or timer thread shows here even when
the memory is still reachable), and, without ASan (whose allocator quarantine hides it), that the
resident memory did not keep growing.
"""

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from harness import Cases, Client, Env, Inline, Proxy, config_doc, dump_toml, eq, expect, \
    free_port, proxy_binary, route, wait_until

cases = Cases("reload_leaks")
S = SimpleNamespace()
VARIANTS = ("blue", "green", "canary", "shadow")
RELOADS = 100
WARMUP = 10
BAD_EVERY = 20  # a rejected config after every 20th reload


# ---- helpers -----------------------------------------------------------------------------

def make_certificate(directory):
    """A self-signed EC certificate for 127.0.0.1 (the openssl command; fast)."""
    cert, key = Path(directory) / "site.pem", Path(directory) / "site.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def watching(n):
    """Whether config number n watches its file (then the next write reloads by itself)."""
    return n % 4 == 3


def make_doc(n):
    """Config number n: the same route "main" (traffic always works), and around it a rotating
    set of everything a snapshot can own."""
    weights = ({"blue": 100, "green": 0, "canary": 0}, {"blue": 50, "green": 25, "canary": 25},
               {"blue": 0, "green": 100, "canary": 0})[n % 3]
    extra = {"salt": "s%d" % n}
    if n % 2 == 0:
        extra["shadow"] = Inline(percent=50.0, compare=(n % 4 == 0))
    if n % 5 == 1:
        extra["assign_cookie"] = "sy_id"
    routes = []
    if n % 3 == 1:  # a route with path matcher and overrides first (RE2 objects)
        routes.append(route("regex-%d" % n, {"blue": "blue", "canary": "canary"},
                            {"blue": 1, "canary": 1}, path="^/only-here-%d/(a|b)+$" % n,
                            overrides=[{"header": "X-Canary", "regex": "^(1|yes)$",
                                        "variant": "canary"},
                                       {"client_ip": ["10.0.0.0/8", "::1/128"],
                                        "variant": "blue"}]))
    routes.append(route("main", {v: v for v in VARIANTS}, weights, **extra))
    if n % 4 == 2:  # a route on a TLS pool nobody requests (client SSL_CTX with a CA file)
        routes.append(route("tls-pool", {"blue": "secure"}, {"blue": 1}, host="tls.test"))
    pools = {v: [S.ups[v].addr] for v in VARIANTS}
    if n % 2 == 1:
        # Another server list, so every reload replaces the green pool, which has idle
        # connections (green gets traffic at n % 3 != 0), with a new one.
        pools["green"] = [S.ups["green"].addr] * 2
    if n % 4 == 2:
        pools["secure"] = [S.ups["blue"].addr]
    server = {"access_log": str(S.dir / ("access-%d.log" % (n % 2))) if n % 3 == 0 else "",
              "watch_config": watching(n)}
    doc = config_doc(S.port, pools=pools, routes=routes, admin_port=S.admin, server=server)
    if n % 2 == 1:
        doc["server"]["listen"].append("127.0.0.1:%d" % S.extra_port)
    if n % 4 == 2:
        doc["upstreams"]["secure"].update(tls=True, ca_file=str(S.cert), sni="127.0.0.1")
    if n % 5 == 3:
        doc["upstreams"]["green"]["health"] = Inline(path="/healthz", interval_ms=100,
                                                     timeout_ms=500, unhealthy_after=3,
                                                     healthy_after=1)
    if n % 3 == 2:
        doc["listener"] = [{"address": "127.0.0.1:%d" % S.tls_port,
                            "tls": Inline(cert=str(S.cert), key=str(S.key))}]
    return doc


def write_config(doc):
    path = S.env.proxy.config_path
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(dump_toml(doc) + "\n")
    os.replace(tmp, path)


def admin(method, target):
    with Client(S.admin, timeout=10) as c:
        return c.request(method, target, host="127.0.0.1:%d" % S.admin,
                         body=b"" if method == "POST" else None)


def generation():
    r = admin("GET", "/status")
    eq(r.status, 200, "GET /status")
    return r.json()["generation"]


def reload_counts():
    r = admin("GET", "/metrics")
    eq(r.status, 200, "GET /metrics")
    out = {}
    for m in re.finditer(r'^switchyard_config_reloads_total\{result="(\w+)"\} (\S+)$',
                         r.body.decode(), re.M):
        out[m.group(1)] = float(m.group(2))
    return out


def tcp_sockets():
    """{socket inode: (state, local port, remote port)} from /proc/net/tcp and tcp6."""
    out = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            local, remote, state, inode = f[1], f[2], f[3], f[9]
            out[inode] = (state, int(local.rsplit(":", 1)[1], 16),
                          int(remote.rsplit(":", 1)[1], 16))
    return out


def resources():
    """The proxy's open fds by kind, its threads and resident KiB:
    ({"listen": n, "upstream": n, "client": n, "other-socket": n, "file": n, ...}, threads, rss).
    Upstream connections are the pools' keep-alive connections to the echo upstreams."""
    pid = S.env.proxy.proc.pid
    tcp = tcp_sockets()
    upstream_ports = {u.port for u in S.ups.values()}
    kinds = {}
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue  # closed meanwhile
        m = re.match(r"socket:\[(\d+)\]$", target)
        if m:
            state, _, remote = tcp.get(m.group(1), (None, 0, 0))
            kind = ("listen" if state == "0A" else "upstream" if remote in upstream_ports
                    else "client" if state is not None else "other-socket")
        elif target.startswith("anon_inode:"):
            kind = target[len("anon_inode:"):]
        elif target.startswith("pipe:"):
            kind = "pipe"
        else:
            kind = "file"
        kinds[kind] = kinds.get(kind, 0) + 1
    threads = len(os.listdir("/proc/%d/task" % pid))
    rss = 0
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return kinds, threads, rss


def asan_build(binary):
    if os.environ.get("SWITCHYARD_SANITIZE"):  # set by tools/sanitize
        return True
    try:
        return b"__asan_init" in Path(binary).read_bytes()
    except OSError:
        return False


class Traffic:
    """Two keep-alive clients: GETs and small POSTs to /echo, counting any failure."""

    def __init__(self):
        self.stop = threading.Event()
        self.pause = threading.Event()
        self.idle = [threading.Event(), threading.Event()]
        self.lock = threading.Lock()
        self.ok = 0
        self.failures = []
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(2)]

    def run(self, t):
        c = None
        i = 0
        while not self.stop.is_set():
            if self.pause.is_set():
                if c:
                    c.close()
                    c = None
                self.idle[t].set()
                time.sleep(0.01)  # paused by the test: idle until resumed (checked every 10 ms)
                continue
            self.idle[t].clear()
            time.sleep(0.005)  # a little traffic, not a load test
            i += 1
            try:
                c = c or Client(S.port)
                if i % 2:
                    r = c.request("GET", "/t%d/%d" % (t, i),
                                  headers=[("X-User-Id", "u%d" % (i % 20))])
                    ok = r.status == 200
                else:
                    body = (b"%d-%d;" % (t, i)) * 50
                    r = c.request("POST", "/echo", body=body,
                                  headers=[("X-User-Id", "u%d" % (i % 20))])
                    ok = r.status == 200 and r.body == body
                if not ok:
                    with self.lock:
                        self.failures.append("request %d-%d: %d %r" % (t, i, r.status,
                                                                        r.body[:100]))
                else:
                    with self.lock:
                        self.ok += 1
                if c.eof:
                    c.close()
                    c = None
            except Exception as e:  # noqa: BLE001
                with self.lock:
                    self.failures.append("request %d-%d: %s: %s" % (t, i, type(e).__name__, e))
                if c:
                    c.close()
                c = None
        if c:
            c.close()

    def quiet(self):
        """Stops traffic and closes the clients' connections (for resource counts)."""
        self.pause.set()
        for e in self.idle:
            e.wait(10)

    def resume(self):
        self.pause.clear()

    def __enter__(self):
        for th in self.threads:
            th.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        for th in self.threads:
            th.join(timeout=30)


def settled_resources():
    """Resource counts once the proxy has closed the clients' connections (polled)."""
    samples = []

    def stable():
        samples.append(resources())
        return len(samples) >= 3 and samples[-1][:2] == samples[-2][:2] == samples[-3][:2]
    wait_until(stable, 10, "stable fd and thread counts", interval=0.1)
    return samples[-1]


# ---- the case ----------------------------------------------------------------------------

@cases.case("%d reloads (+%d rejected) under traffic: all succeed, no request fails, fds and "
            "threads stay put, memory does not grow" % (RELOADS, RELOADS // BAD_EVERY))
def _():
    gen0 = generation()
    counts0 = reload_counts()
    warm = None
    bad = 0
    t0 = time.monotonic()
    with Traffic() as traffic:
        for n in range(1, RELOADS + 1):
            before = traffic.ok
            write_config(make_doc(n))
            if watching(n - 1):
                pass  # the file watch of the current config reloads it (a signal could race it)
            elif n % 10 == 0:
                r = admin("POST", "/reload")
                eq(r.status, 200, "POST /reload #%d (%r)" % (n, r.body[:300]))
            else:
                S.env.proxy.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: generation() == gen0 + n, 10,
                       "generation %d after reload #%d" % (gen0 + n, n))
            if n % BAD_EVERY == 0:
                # Rejected: the old snapshot stays, and so must nothing of the new one. (Config
                # n does not watch its file: n % 4 == 0.)
                doc = make_doc(n)
                doc["routes"][-1]["weights"] = {"blue": -1}
                write_config(doc)
                S.env.proxy.proc.send_signal(signal.SIGHUP)
                bad += 1
                wait_until(lambda: reload_counts().get("failure", 0)
                           >= counts0.get("failure", 0) + bad, 10,
                           "failed reload #%d counted" % bad)
                write_config(make_doc(n))
            wait_until(lambda: traffic.ok >= before + 4 or traffic.failures, 10,
                       "traffic after reload #%d" % n)
            expect(S.env.proxy.alive(), "the proxy died at reload #%d" % n)
            if n == WARMUP or n == RELOADS:
                traffic.quiet()
                counts = settled_resources()
                traffic.resume()
                if n == WARMUP:
                    warm = counts
        end = counts
    print("     %d reloads in %.1fs, %d requests; fds/threads/RSS KiB after %d reloads %s, "
          "after %d %s" % (RELOADS + bad, time.monotonic() - t0, traffic.ok, WARMUP, warm,
                           RELOADS, end))
    eq(traffic.failures[:5], [], "failed requests (first 5 of %d)" % len(traffic.failures))
    eq(generation(), gen0 + RELOADS, "generation after %d reloads" % RELOADS)
    counts = reload_counts()
    eq(counts.get("success", 0) - counts0.get("success", 0), RELOADS, "successful reloads")
    eq(counts.get("failure", 0) - counts0.get("failure", 0), bad, "rejected reloads")
    # Configs WARMUP and RELOADS (10 and 100) have the same listeners, weights, shadow, log
    # file and watch setting, so the counts compare directly.
    # Everything but the pools' idle upstream connections must be back where it was; those
    # are bounded by 2 workers x 4 pools x 2 concurrent clients, however many reloads passed
    # (connections of pools that reloads dropped must have been closed).
    fixed = lambda kinds: {k: v for k, v in kinds.items() if k != "upstream"}  # noqa: E731
    eq(fixed(end[0]), fixed(warm[0]), "open fds by kind after %d reloads (vs. after %d)"
       % (RELOADS, WARMUP))
    expect(end[0].get("upstream", 0) <= 2 * 4 * 2, "%d upstream connections open after %d "
           "reloads (at most 16 expected)" % (end[0].get("upstream", 0), RELOADS))
    expect(end[1] <= warm[1], "threads grew from %d after %d reloads to %d after %d"
           % (warm[1], WARMUP, end[1], RELOADS))
    if not S.asan:
        expect(end[2] - warm[2] < 4 * 1024, "resident memory grew by %d KiB over %d reloads"
               % (end[2] - warm[2], RELOADS - WARMUP))


@cases.case("SIGTERM after the reloads: exit status 0, no sanitizer report in the log")
def _():
    code = S.env.proxy.stop(timeout=60)  # LeakSanitizer's exit check can take a few seconds
    log = S.env.proxy.log_path.read_text(errors="replace")
    for marker in ("LeakSanitizer", "AddressSanitizer", "runtime error:"):
        expect(marker not in log, "%s report in the proxy log:\n%s"
               % (marker, log[log.find(marker) - 200:][:4000]))
    eq(code, 0, "exit status after SIGTERM (non-zero under ASan: a leak or an error was "
                "reported; see ASAN_OPTIONS log_path)")


def main():
    with Env(cases) as env:
        S.env = env
        S.dir = env.dir
        S.cert, S.key = make_certificate(env.dir)
        S.ups = {v: env.upstream(v) for v in VARIANTS}
        S.port, S.admin = free_port(), free_port()
        S.extra_port, S.tls_port = free_port(), free_port()
        S.asan = asan_build(proxy_binary())
        # The config gets a directory of its own: with watch_config the proxy watches the
        # config's directory, and the upstream and access logs next to it change constantly.
        conf = env.dir / "conf"
        conf.mkdir()
        env.proxy = Proxy(conf, make_doc(0))
        cases.run()
    cases.exit()


if __name__ == "__main__":
    main()
