#!/usr/bin/env python3
"""Process lifecycle (SPEC §2): SIGTERM/SIGINT graceful drain (in-flight requests finish,
/healthz 503, new connections refused, idle keep-alive connections closed, exit 0, the drain
timeout bounds it), --pid-file, --check and --version."""

import re
import select
import signal
import socket
import subprocess
import threading
import time
import uuid
from types import SimpleNamespace

from harness import ROOT, Cases, Client, Env, can_connect, config_doc, dump_toml, eq, expect, \
    free_port, proxy_binary, route, wait_until

cases = Cases("lifecycle")
S = SimpleNamespace()


# ---- helpers -----------------------------------------------------------------------------

class Switchyard:
    """switchyard with extra arguments (harness.Proxy takes none, e.g. no --pid-file); each
    case starts its own, since each ends it."""

    def __init__(self, name, drain_timeout_ms=10000, extra=(), workers=2, start_timeout=15.0):
        self.port, self.admin = free_port(), free_port()
        self.dir = S.env.dir / name
        self.dir.mkdir()
        self.config_path = self.dir / "switchyard.toml"
        doc = config_doc(self.port, pools={"blue": [S.blue.addr]},
                         routes=[route("main", {"blue": "blue"}, {"blue": 100})],
                         admin_port=self.admin,
                         timeouts={"drain_timeout_ms": drain_timeout_ms})
        self.config_path.write_text(dump_toml(doc) + "\n")
        self.log_path = self.dir / "switchyard.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(proxy_binary()), "--config", str(self.config_path), "--workers", str(workers)]
            + [str(a) for a in extra],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        S.started.append(self)

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError("switchyard exited with %s at start:\n%s"
                                   % (self.proc.returncode, self.log_tail()))
            return can_connect(self.port)
        wait_until(ready, start_timeout, "switchyard to accept on port %d" % self.port)

    def log_tail(self, lines=25):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        """The exit status, or a failure saying it did not exit within timeout."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("switchyard did not exit within %.1fs" % timeout) from None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def admin_get(port, target):
    with Client(port, timeout=5) as c:
        return c.request("GET", target, host="127.0.0.1:%d" % port)


def run_case(p, fn):
    """Runs fn(); on failure the error carries the tail of that proxy's log; the proxy is
    killed if it is still running at the end."""
    try:
        fn()
    except Exception as e:
        raise AssertionError("%s\n--- tail of %s ---\n%s\n--- end ---"
                             % (e, p.log_path, p.log_tail())) from e
    finally:
        p.kill()


def in_background(fn):
    """Runs fn() in a thread; returns (thread, result dict with "r" or "e")."""
    result = {}

    def run():
        try:
            result["r"] = fn()
        except Exception as e:  # noqa: BLE001
            result["e"] = e
    th = threading.Thread(target=run)
    th.start()
    return th, result


def new_connection_outcome(port, timeout):
    """What a new client gets: "refused", "closed" (EOF/reset without a byte), "answered: ..."
    or "hang" (accepted, then neither answered nor closed within timeout)."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except ConnectionRefusedError:
        return "refused"
    except socket.timeout:
        return "hang (connect timed out)"
    try:
        try:
            s.sendall(b"GET /during-drain HTTP/1.1\r\nHost: app.test\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            return "closed"
        ready, _, _ = select.select([s], [], [], timeout)
        if not ready:
            return "hang"
        try:
            data = s.recv(4096)
        except ConnectionResetError:
            return "closed"
        return "closed" if not data else "answered: %r" % data[:120]
    finally:
        s.close()


# ---- 6. SIGTERM during a request ---------------------------------------------------------

def sigterm_scenario():
    """SIGTERM while GET /sleep?ms=1000 is in flight. Records what was observed in S.drain
    (the cases below assert on it one by one, so one failure does not hide the others)."""
    p = Switchyard("sigterm-inflight", drain_timeout_ms=10000)
    obs = S.drain = {"log": p}
    eq(admin_get(p.admin, "/healthz").status, 200, "/healthz before SIGTERM")
    tag = obs["tag"] = uuid.uuid4().hex[:8]
    c = Client(p.port)
    th, result = in_background(
        lambda: c.request("GET", "/sleep?ms=1000&tag=" + tag, headers=[("X-User-Id", "u")]))
    try:
        S.blue.wait_records(lambda rec: ("tag=" + tag) in rec["target"])
        t0 = time.monotonic()
        p.signal(signal.SIGTERM)
        # During the drain, while the slow request is still in flight:
        deadline = t0 + 0.8
        while True:
            try:
                r = admin_get(p.admin, "/healthz")
                obs["healthz"] = (r.status, r.body)
            except OSError as e:
                obs["healthz"] = ("error", repr(e))
            if obs["healthz"][0] == 503 or time.monotonic() > deadline:
                break
            time.sleep(0.02)  # poll interval (bounded by the deadline above)
        obs["healthz_in_flight"] = th.is_alive()
        obs["new_conn"] = new_connection_outcome(p.port, 0.3)
        obs["new_conn_at"] = time.monotonic() - t0
        obs["new_conn_in_flight"] = th.is_alive()
        th.join(timeout=10)
        obs["result"] = result
        obs["closed_after"] = c.closed_by_peer(3) if "r" in result else None
    finally:
        th.join(timeout=10)
        c.close()
    try:
        obs["exit"] = p.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        obs["exit"] = "still running 5 s after SIGTERM"
    obs["exit_after"] = time.monotonic() - t0
    p.kill()


def drain_case(fn):
    expect(hasattr(S, "drain"), "depends on the SIGTERM scenario, which failed to run")
    p = S.drain["log"]
    try:
        fn(S.drain)
    except Exception as e:
        raise AssertionError("%s\n--- tail of %s ---\n%s\n--- end ---"
                             % (e, p.log_path, p.log_tail())) from e


@cases.case("SIGTERM during a 1 s request (/sleep?ms=1000): the scenario runs")
def _():
    sigterm_scenario()


@cases.case("SIGTERM: the in-flight request finishes with 200 and its connection then closes")
def _():
    def check(obs):
        res = obs["result"]
        expect("e" not in res, "the in-flight request failed: %r" % res.get("e"))
        r = res["r"]
        eq(r.status, 200, "status of the in-flight request")
        eq(r.header("X-Upstream"), "blue", "X-Upstream of the in-flight request")
        eq(r.json()["path"], "/sleep?ms=1000&tag=" + obs["tag"], "body of the in-flight request")
        expect(obs["closed_after"], "its connection stayed open after the response")
        eq(len(S.blue.find(lambda rec: ("tag=" + obs["tag"]) in rec["target"])), 1,
           "requests the upstream received for the slow request")
    drain_case(check)


@cases.case("SIGTERM: GET /healthz answers 503 draining while the request is in flight")
def _():
    def check(obs):
        eq(obs["healthz"], (503, b"draining\n"), "/healthz while draining")
        expect(obs["healthz_in_flight"], "inconclusive: the slow request had already finished")
    drain_case(check)


@cases.case("SIGTERM: a new connection is refused (or closed without a response), not left "
            "hanging")
def _():
    def check(obs):
        expect(obs["new_conn"] in ("refused", "closed"),
               "a new connection to the proxy port %.2fs after SIGTERM: %s (wanted refused, "
               "or closed without a response)" % (obs["new_conn_at"], obs["new_conn"]))
        expect(obs["new_conn_in_flight"], "inconclusive: the slow request had already "
               "finished when the new connection was tried")
        expect(not S.blue.find(lambda rec: rec["target"] == "/during-drain"),
               "a request sent during the drain reached the upstream")
    drain_case(check)


@cases.case("SIGTERM: exit 0 once the request is done, well before drain_timeout_ms (10 s)")
def _():
    def check(obs):
        eq(obs["exit"], 0, "exit status after SIGTERM")
        expect(obs["exit_after"] < 5, "exit %.1fs after SIGTERM (drain_timeout_ms = 10000, the "
               "only request ended after ~1 s)" % obs["exit_after"])
    drain_case(check)


# ---- 7. --pid-file -----------------------------------------------------------------------

@cases.case("--pid-file holds the pid while running and is removed at exit (SIGINT)")
def _():
    pid_file = S.env.dir / ("sw-%s.pid" % uuid.uuid4().hex[:6])
    p = Switchyard("pid-file", extra=["--pid-file", pid_file])

    def run():
        # Polled until complete: the file may be seen between its creation and its write.
        def pid_written():
            try:
                text = pid_file.read_text()
            except FileNotFoundError:
                return None
            return text if text.endswith("\n") else None
        text = wait_until(pid_written, 5, "the pid file %s to be written" % pid_file)
        eq(text, "%d\n" % p.proc.pid, "pid file content")
        with Client(p.port) as c:
            eq(c.request("GET", "/pid", headers=[("X-User-Id", "u")]).status, 200,
               "a request while running")
        p.signal(signal.SIGINT)
        eq(p.wait_exit(5), 0, "exit status after SIGINT")
        expect(not pid_file.exists(), "the pid file %s is still there after exit" % pid_file)
    run_case(p, run)


# ---- 8. idle keep-alive connections ------------------------------------------------------

@cases.case("drain closes idle keep-alive connections promptly (drain_timeout_ms = 10000)")
def _():
    p = Switchyard("idle-drain", drain_timeout_ms=10000)

    def run():
        used = Client(p.port)
        silent = Client(p.port)  # connected, never sent a byte
        try:
            r = used.request("GET", "/idle", headers=[("X-User-Id", "u")])
            eq(r.status, 200, "request before SIGTERM")
            expect(not used.eof, "the proxy closed the keep-alive connection before SIGTERM")
            eq(len(S.blue.find(lambda rec: rec["target"] == "/idle")), 1,
               "requests at the upstream")
            t0 = time.monotonic()
            p.signal(signal.SIGTERM)
            expect(used.closed_by_peer(3),
                   "the idle keep-alive connection was not closed within 3 s of SIGTERM")
            expect(silent.closed_by_peer(3),
                   "the connection that never sent a request was not closed within 3 s")
            closed_after = time.monotonic() - t0
            eq(p.wait_exit(3), 0, "exit status")
            elapsed = time.monotonic() - t0
            print("     idle connections closed %.0f ms, exit %.0f ms after SIGTERM"
                  % (closed_after * 1000, elapsed * 1000))
        finally:
            used.close()
            silent.close()
    run_case(p, run)


@cases.case("SIGTERM under load (20 keep-alive clients sending back to back, as wrk -c20): "
            "every request sent is answered, connections close only after a response")
def _():
    # SPEC §10: during a drain an open keep-alive connection is not closed under the client's
    # feet. A "read error" here is what wrk counts as one: a request went out and the
    # connection ended without its response. Before the fix every idle connection was closed
    # at once, racing the client's next request.
    p = Switchyard("drain-load", drain_timeout_ms=10000)
    stats = {"answered": 0, "read_errors": [], "closed_after_response": 0}
    lock = threading.Lock()
    stop = threading.Event()

    def client(n):
        c = None
        while not stop.is_set():
            if c is None:
                try:
                    c = Client(p.port, timeout=5)
                except OSError:
                    return  # refused: the listener is closed (the drain started)
                sent = 0
            try:
                r = c.request("GET", "/load/%d" % n)
                sent += 1
            except (ConnectionError, OSError) as e:
                with lock:
                    stats["read_errors"].append("client %d, request %d on its connection: %s"
                                                % (n, sent + 1, e))
                c.close()
                return
            with lock:
                stats["answered"] += 1
            if (r.header("connection") or "").lower() == "close":
                with lock:
                    stats["closed_after_response"] += 1
                c.close()
                c = None
        if c is not None:
            c.close()

    def run():
        threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: stats["answered"] >= 200, 10, "200 answers before SIGTERM")
            p.signal(signal.SIGTERM)
            eq(p.wait_exit(8), 0, "exit status")
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        print("     %d answered, %d connections closed after a Connection: close response"
              % (stats["answered"], stats["closed_after_response"]))
        eq(stats["read_errors"], [], "requests sent whose connection ended without a response")
    run_case(p, run)


@cases.case("drain_timeout_ms bounds the drain: a 5 s request, drain_timeout_ms = 400, "
            "exit 0 soon after")
def _():
    p = Switchyard("drain-timeout", drain_timeout_ms=400)

    def run():
        tag = uuid.uuid4().hex[:8]
        c = Client(p.port)
        th, result = in_background(
            lambda: c.request("GET", "/sleep?ms=5000&tag=" + tag, headers=[("X-User-Id", "u")]))
        try:
            S.blue.wait_records(lambda rec: ("tag=" + tag) in rec["target"])
            t0 = time.monotonic()
            p.signal(signal.SIGTERM)
            eq(p.wait_exit(4), 0, "exit status")
            elapsed = time.monotonic() - t0
            expect(elapsed >= 0.3, "exited %.2fs after SIGTERM, before drain_timeout_ms "
                   "(400) with a request in flight" % elapsed)
            th.join(timeout=5)
            expect(not th.is_alive(), "the client of the cut request is still waiting "
                   "after the proxy exited")
        finally:
            c.close()
            th.join(timeout=5)
    run_case(p, run)


# ---- 9. --check and --version ------------------------------------------------------------

def run_binary(*args, timeout=10):
    return subprocess.run([str(proxy_binary())] + [str(a) for a in args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def check_files():
    d = S.env.dir / "check"
    d.mkdir(exist_ok=True)
    doc = config_doc(free_port(), pools={"blue": [S.blue.addr]},
                     routes=[route("main", {"blue": "blue", "canary": "blue"},
                                   {"blue": 100, "canary": 0})])
    good = dump_toml(doc) + "\n"
    (d / "good.toml").write_text(good)
    bad = good.replace("canary = 0", "canary = -5")
    (d / "bad.toml").write_text(bad)
    line = next(i for i, l in enumerate(bad.splitlines(), 1) if "canary = -5" in l)
    return d, line


@cases.case("--check: a bad file exits 1 with bad.toml:line:col; a good one exits 0; "
            "--version prints the version")
def _():
    d, line = check_files()
    r = run_binary("--check", "--config", d / "bad.toml")
    eq(r.returncode, 1, "exit status of --check on bad.toml (stderr %r)" % r.stderr)
    expect(re.search(r"bad\.toml:%d:\d+: \S*canary\S*: \S" % line, r.stderr),
           "--check stderr %r does not say bad.toml:%d:COL: ...canary: message"
           % (r.stderr, line))
    r = run_binary("--check", "--config", d / "good.toml")
    eq(r.returncode, 0, "exit status of --check on good.toml (stderr %r)" % r.stderr)
    # An unknown key is located too.
    text = (d / "good.toml").read_text().replace("workers = 2", "workers = 2\nwokers = 3")
    (d / "typo.toml").write_text(text)
    r = run_binary("--check", "--config", d / "typo.toml")
    eq(r.returncode, 1, "exit status of --check with an unknown key (stderr %r)" % r.stderr)
    typo_line = next(i for i, l in enumerate(text.splitlines(), 1) if l.startswith("wokers"))
    expect(re.search(r"typo\.toml:%d:\d+: \S*wokers" % typo_line, r.stderr),
           "--check stderr %r does not locate the unknown key at line %d"
           % (r.stderr, typo_line))
    r = run_binary("--check", "--config", d / "missing.toml")
    eq(r.returncode, 1, "exit status of --check on a missing file (stderr %r)" % r.stderr)
    expect("missing.toml" in r.stderr, "--check on a missing file: stderr %r" % r.stderr)
    r = run_binary("--version")
    eq(r.returncode, 0, "exit status of --version")
    m = re.search(r"version\s*:\s*'([^']+)'", (ROOT / "meson.build").read_text())
    want = m.group(1) if m else None
    expect(re.fullmatch(r"switchyard %s\n" % re.escape(want or r"\S+"), r.stdout),
           "--version printed %r, want 'switchyard %s'" % (r.stdout, want))


@cases.case("a bad config at start is fatal: exit 1 with the same file:line:col message")
def _():
    d, line = check_files()
    try:
        r = run_binary("--config", d / "bad.toml", timeout=5)
    except subprocess.TimeoutExpired:
        raise AssertionError("switchyard kept running on an invalid config") from None
    eq(r.returncode, 1, "exit status (stderr %r)" % r.stderr)
    expect(re.search(r"bad\.toml:%d:\d+: \S*canary\S*: \S" % line, r.stderr),
           "stderr %r does not say bad.toml:%d:COL: ...canary: message" % (r.stderr, line))


def main():
    S.started = []
    with Env(cases) as env:
        S.env = env
        S.blue = env.upstream("blue")
        try:
            cases.run()
        finally:
            for p in S.started:
                p.kill()
    cases.exit()


if __name__ == "__main__":
    main()
