#!/usr/bin/env python3
"""Reload (SPEC §6, §7 POST /reload): weight changes by SIGHUP, by POST /reload and by a file
change with watch_config (editor rename, Kubernetes ConfigMap symlink swap); invalid files keep
the old snapshot; admin_token; 25 reloads under keep-alive load lose nothing; listeners added,
removed, and an address already in use; a keep-alive connection picks up the new weights on its
next request while an in-flight request finishes on its old snapshot."""

import hashlib
import os
import random
import re
import signal
import socket
import subprocess
import threading
import uuid
from pathlib import Path
from types import SimpleNamespace

from harness import Cases, Client, Env, config_doc, dump_toml, eq, expect, free_port, \
    header_of, proxy_binary, route, wait_until, can_connect

cases = Cases("reload")
S = SimpleNamespace(token=None)
VARIANTS = ("blue", "green", "canary")
BLUE = {"blue": 100, "green": 0, "canary": 0}
CANARY = {"blue": 0, "green": 0, "canary": 100}
GREEN = {"blue": 0, "green": 100, "canary": 0}


# ---- helpers -----------------------------------------------------------------------------

def make_doc(weights, listen=None, admin_port=None, server=None, alt_route=False, salt=None,
             port=None):
    """A config: route "main" (everything on app.test) over the three upstreams; alt_route puts
    a route "alt" matching ^/echo first (green/canary 50/50)."""
    srv = dict(server or {})
    if S.token:
        srv["admin_token"] = S.token
    routes = []
    if alt_route:
        routes.append(route("alt", {v: v for v in VARIANTS}, {"green": 50, "canary": 50},
                            path="^/echo"))
    extra = {"salt": salt} if salt else {}
    routes.append(route("main", {v: v for v in VARIANTS}, weights, **extra))
    doc = config_doc(port or S.port, pools={v: [u.addr] for v, u in S.ups.items()}, routes=routes,
                     admin_port=admin_port or S.admin, server=srv)
    if listen is not None:
        doc["server"]["listen"] = ["127.0.0.1:%d" % p for p in listen]
    return doc


def write_atomic(path, text):
    """Writes a file the way editors do: a temp name in the same directory, renamed over."""
    path = Path(path)
    tmp = path.with_name(".%s.tmp-%s" % (path.name, uuid.uuid4().hex[:6]))
    tmp.write_text(text)
    os.replace(tmp, path)


def write_config(doc, path=None):
    text = dump_toml(doc) + "\n"
    write_atomic(path or S.env.proxy.config_path, text)
    return text


def admin(method, target, port=None, headers=(), body=None):
    port = port or S.admin
    if method == "POST" and body is None:
        body = b""
    with Client(port, timeout=10) as c:
        return c.request(method, target, host="127.0.0.1:%d" % port, headers=headers, body=body)


def post_reload(port=None, token="default"):
    token = S.token if token == "default" else token
    headers = [("Authorization", "Bearer " + token)] if token else []
    return admin("POST", "/reload", port=port, headers=headers)


def status(port=None):
    r = admin("GET", "/status", port=port)
    eq(r.status, 200, "GET /status")
    return r.json()


def generation(port=None):
    return status(port)["generation"]


def metrics(port=None):
    r = admin("GET", "/metrics", port=port)
    eq(r.status, 200, "GET /metrics")
    out = {}
    for line in r.body.decode().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        out[name] = float(value)
    return out


def reloads(result, port=None):
    return metrics(port).get('switchyard_config_reloads_total{result="%s"}' % result)


def probe(port, tag, keys=12):
    """keys requests (distinct split keys) on one connection; returns [(variant header,
    X-Upstream)] and checks each is a 200 whose variant header names the answering upstream."""
    out = []
    with Client(port) as c:
        for i in range(keys):
            r = c.request("GET", "/probe?tag=%s&i=%d" % (tag, i),
                          headers=[("X-User-Id", "key-%d" % i)])
            eq(r.status, 200, "status of probe %s #%d" % (tag, i))
            v, u = r.header("X-Switchyard-Variant"), r.header("X-Upstream")
            eq(v, u, "X-Switchyard-Variant vs X-Upstream of probe %s #%d" % (tag, i))
            out.append(v)
            if c.eof:
                break
    return out


def wait_variant(want, port=None, timeout=5.0, what=""):
    """Polls until every probe answer comes from variant `want`; returns the probe tag used."""
    port = port or S.port
    last = {}

    def check():
        tag = uuid.uuid4().hex[:10]
        got = probe(port, tag)
        last["got"] = got
        return tag if set(got) == {want} else None
    try:
        tag = wait_until(check, timeout, "all responses from %s %s" % (want, what), interval=0.05)
    except TimeoutError as e:
        raise AssertionError("%s; last probe answered by %s" % (e, last.get("got")))
    # The upstream's side: it received the probe with the variant header naming itself.
    recs = S.ups[want].wait_records(lambda rec: ("tag=%s&" % tag) in rec["target"], count=12)
    bad = [header_of(rec, "X-Switchyard-Variant") for rec in recs
           if header_of(rec, "X-Switchyard-Variant") != want]
    eq(bad, [], "X-Switchyard-Variant received by upstream %s" % want)
    for other in VARIANTS:
        if other != want:
            eq(S.ups[other].find(lambda rec: ("tag=%s&" % tag) in rec["target"]), [],
               "requests of probe %s at upstream %s" % (tag, other))
    return tag


def line_of(text, needle):
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError("%r not in the generated config" % needle)


class Switchyard:
    """switchyard on a config path of our choosing (harness.Proxy always writes its own
    switchyard.toml in the work dir, which the ConfigMap layout cannot use)."""

    def __init__(self, config_path, port, log_path, extra=(), workers=2, start_timeout=15.0):
        self.port = port
        self.config_path = Path(config_path)
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(proxy_binary()), "--config", str(config_path), "--workers", str(workers)]
            + list(extra), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError("switchyard exited with %s at start:\n%s"
                                   % (self.proc.returncode, self.log_tail()))
            return can_connect(port)
        try:
            wait_until(ready, start_timeout, "switchyard to accept on port %d" % port)
        except TimeoutError:
            self.stop()
            raise

    def log_tail(self, lines=30):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self, timeout=8.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def with_proxy_log(proxy, fn):
    """Runs fn(); on failure the error carries the tail of that proxy's log."""
    try:
        fn()
    except Exception as e:
        raise AssertionError("%s\n--- tail of %s ---\n%s\n--- end ---"
                             % (e, proxy.log_path, proxy.log_tail())) from e


def sighup():
    S.env.proxy.proc.send_signal(signal.SIGHUP)


# ---- 1. weight changes -------------------------------------------------------------------

@cases.case("SIGHUP: blue 100 -> canary 100 takes effect, generation +1")
def _():
    wait_variant("blue", what="(initial config)")
    gen = generation()
    ok = reloads("success")
    write_config(make_doc(CANARY))
    sighup()
    wait_variant("canary", what="after SIGHUP")
    eq(generation(), gen + 1, "generation after one SIGHUP")
    eq(reloads("success"), ok + 1, "reloads_total{success}")
    m = metrics()
    eq(m.get('switchyard_route_weight{route="main",variant="canary"}'), 100.0,
       "switchyard_route_weight{main,canary}")
    eq(m.get('switchyard_route_weight{route="main",variant="blue"}'), 0.0,
       "switchyard_route_weight{main,blue}")
    weights = {r["name"]: r["weights"] for r in status()["routes"]}
    eq(weights.get("main"), CANARY, "/status weights of route main")


@cases.case("POST /reload: canary 100 -> blue 100, 200 {\"generation\": N+1}")
def _():
    gen = generation()
    write_config(make_doc(BLUE))
    r = post_reload()
    eq(r.status, 200, "POST /reload status (body %r)" % r.body)
    eq(r.json(), {"generation": gen + 1}, "POST /reload body")
    wait_variant("blue", what="after POST /reload")
    eq(generation(), gen + 1, "/status generation")
    eq(metrics().get("switchyard_config_generation"), float(gen + 1),
       "switchyard_config_generation")


@cases.case("watch_config: a file renamed over the config (editor save) reloads it alone")
def _():
    d = S.env.dir / "watch-rename"
    d.mkdir()
    port, admin_port = free_port(), free_port()
    cfg = d / "sw.toml"
    cfg.write_text(dump_toml(make_doc(BLUE, admin_port=admin_port, port=port,
                                      server={"watch_config": True})) + "\n")
    p = Switchyard(cfg, port, d / "switchyard.log")

    def run():
        wait_variant("blue", port=port, what="(watched proxy, initial)")
        eq(generation(admin_port), 1, "generation at start")
        text = dump_toml(make_doc(CANARY, admin_port=admin_port, port=port,
                                  server={"watch_config": True})) + "\n"
        bad = text.replace("canary = 100", "canary = -1")
        write_atomic(cfg, text)
        wait_variant("canary", port=port, what="after renaming a new file over the config")
        eq(generation(admin_port), 2, "generation after one file change (one reload)")
        # An invalid file written by the same route: counted, the old snapshot keeps serving.
        write_atomic(cfg, bad)
        wait_until(lambda: reloads("failure", admin_port) == 1, 5,
                   "reloads_total{failure} = 1 after an invalid file was saved")
        wait_variant("canary", port=port, what="(invalid file must keep the old config)")
        eq(generation(admin_port), 2, "generation after an invalid file")
        # In-place rewrite (truncate + write, as `cp` or `echo >` do) is seen too.
        with open(cfg, "w") as f:
            f.write(text.replace("blue = 0", "blue = 100").replace("canary = 100", "canary = 0"))
        wait_variant("blue", port=port, what="after an in-place rewrite of the config")
        eq(generation(admin_port), 3, "generation after the in-place rewrite")
    with_proxy_log(p, run)
    eq(p.stop(), 0, "exit status of the watched proxy after SIGTERM")


@cases.case("watch_config: Kubernetes ConfigMap layout (..data symlink swap) reloads it, "
            "twice, after the old version dir is deleted")
def _():
    d = S.env.dir / "configmap"
    d.mkdir()
    port, admin_port = free_port(), free_port()

    def text_for(weights):
        return dump_toml(make_doc(weights, admin_port=admin_port, port=port,
                                  server={"watch_config": True})) + "\n"

    def publish(version, weights, first=False):
        """What the kubelet does: write ..<version>/sw.toml, point ..data_tmp at it, rename it
        over ..data, delete the previous version directory."""
        vdir = d / ("..%s" % version)
        vdir.mkdir()
        (vdir / "sw.toml").write_text(text_for(weights))
        if first:
            os.symlink("..%s" % version, d / "..data")
            os.symlink("..data/sw.toml", d / "sw.toml")
            return
        old = os.readlink(d / "..data")
        os.symlink("..%s" % version, d / "..data_tmp")
        os.replace(d / "..data_tmp", d / "..data")
        for f in (d / old).iterdir():
            f.unlink()
        (d / old).rmdir()

    publish("2024_01_01_v1", BLUE, first=True)
    p = Switchyard(d / "sw.toml", port, d.parent / "switchyard-configmap.log")

    def run():
        wait_variant("blue", port=port, what="(ConfigMap proxy, initial)")
        publish("2024_01_02_v2", CANARY)
        wait_variant("canary", port=port, what="after the ..data swap to v2")
        eq(generation(admin_port), 2, "generation after the first swap")
        publish("2024_01_03_v3", GREEN)
        wait_variant("green", port=port, what="after the ..data swap to v3 (v1 deleted)")
        eq(generation(admin_port), 3, "generation after the second swap")
        eq(reloads("failure", admin_port), 0.0, "reloads_total{failure}")
    with_proxy_log(p, run)
    eq(p.stop(), 0, "exit status of the ConfigMap proxy after SIGTERM")


# ---- 2. invalid files, admin token -------------------------------------------------------

@cases.case("invalid file (negative weight) on SIGHUP: old config serves, failure counted, "
            "error logged with file:line:col")
def _():
    wait_variant("blue", what="(before)")
    gen, fail = generation(), reloads("failure")
    text = write_config(make_doc({"blue": 100, "green": 0, "canary": -5}))
    line = line_of(text, "canary = -5")
    sighup()
    wait_until(lambda: reloads("failure") == fail + 1, 5,
               "reloads_total{failure} to reach %s" % (fail + 1))
    wait_variant("blue", what="(the invalid file must keep the old config)")
    eq(generation(), gen, "generation after a failed reload")
    eq(metrics().get("switchyard_config_generation"), float(gen), "switchyard_config_generation")
    log = S.env.proxy.log_path.read_text(errors="replace")
    want = re.compile(r"switchyard\.toml:%d:\d+: \S*canary\S*: " % line)
    expect(want.search(log), "proxy log has no %r line; tail:\n%s"
           % (want.pattern, S.env.proxy.log_tail(8)))


@cases.case("invalid file on POST /reload: 400 with file:line:col, old config serves")
def _():
    gen, fail = generation(), reloads("failure")
    text = write_config(make_doc({"blue": 100, "green": 0, "canary": -5}))
    line = line_of(text, "canary = -5")
    r = post_reload()
    eq(r.status, 400, "POST /reload status for an invalid file")
    body = r.body.decode(errors="replace")
    expect(re.search(r"switchyard\.toml:%d:\d+: \S*canary\S*: \S" % line, body),
           "400 body %r does not name switchyard.toml:%d:COL: ...canary: message" % (body, line))
    eq(reloads("failure"), fail + 1, "reloads_total{failure}")
    eq(generation(), gen, "generation")
    wait_variant("blue", what="(after a 400 reload)")
    # A TOML syntax error is located too.
    text = write_config(make_doc(BLUE)).replace('fallback = "random"', 'fallback = "random',
                                                1)
    write_atomic(S.env.proxy.config_path, text)
    line = line_of(text, 'fallback = "random')
    r = post_reload()
    eq(r.status, 400, "POST /reload status for a TOML syntax error")
    body = r.body.decode(errors="replace")
    expect(re.search(r"switchyard\.toml:%d:\d+: " % line, body),
           "400 body %r does not locate the syntax error at line %d" % (body, line))
    eq(reloads("failure"), fail + 2, "reloads_total{failure}")
    eq(generation(), gen, "generation")


@cases.case("admin_token: POST /reload without / with a wrong token 401, with it 200")
def _():
    gen = generation()
    S.token = "s3cret-" + uuid.uuid4().hex[:8]
    write_config(make_doc(BLUE))  # the config that sets the token; loaded without one
    r = post_reload(token=None)
    eq(r.status, 200, "POST /reload that installs admin_token (body %r)" % r.body)
    eq(r.json()["generation"], gen + 1, "generation")
    write_config(make_doc(CANARY))
    for label, hdrs in (("no Authorization", []),
                        ("wrong token", [("Authorization", "Bearer wrong")]),
                        ("token without Bearer", [("Authorization", S.token)]),
                        ("token as a prefix", [("Authorization", "Bearer " + S.token[:-1])])):
        r = admin("POST", "/reload", headers=hdrs)
        eq(r.status, 401, "POST /reload with %s" % label)
        eq(generation(), gen + 1, "generation after a 401 (%s)" % label)
    wait_variant("blue", what="(a 401 must not reload)")
    r = post_reload()
    eq(r.status, 200, "POST /reload with the right token (body %r)" % r.body)
    eq(r.json(), {"generation": gen + 2}, "body")
    wait_variant("canary", what="after the authorised reload")
    eq(status()["generation"], gen + 2, "GET /status still needs no token")


# ---- 3. under load -----------------------------------------------------------------------

@cases.case("25 reloads (weights, routes, salt; SIGHUP and POST) under 4 keep-alive clients "
            "POSTing /echo: no failed or mismatched response")
def _():
    stop = threading.Event()
    lock = threading.Lock()
    state = {"ok": 0, "failures": [], "reconnects": 0, "variants": {}, "sent": {}}

    def client(t):
        rng = random.Random(t)
        c = Client(S.port)
        i = 0
        while not stop.is_set():
            i += 1
            body = rng.randbytes(rng.randint(1024, 8192))
            rid = "t%d-%d" % (t, i)
            try:
                r = c.request("POST", "/echo?load=" + rid, body=body,
                              headers=[("X-User-Id", "load-%d-%d" % (t, i % 50))])
            except Exception as e:  # noqa: BLE001
                with lock:
                    state["failures"].append("%s: %s: %s" % (rid, type(e).__name__, e))
                c.close()
                c = Client(S.port)
                continue
            problem = None
            if r.status != 200:
                problem = "status %d %r" % (r.status, r.body[:200])
            elif r.body != body:
                problem = "body of %d bytes came back as %d bytes (differs)" % (
                    len(body), len(r.body))
            elif r.header("X-Switchyard-Variant") != r.header("X-Upstream"):
                problem = "variant %r answered by %r" % (r.header("X-Switchyard-Variant"),
                                                        r.header("X-Upstream"))
            with lock:
                if problem:
                    state["failures"].append("%s: %s" % (rid, problem))
                else:
                    state["ok"] += 1
                    state["sent"][rid] = hashlib.sha256(body).hexdigest()
                    v = r.header("X-Upstream")
                    state["variants"][v] = state["variants"].get(v, 0) + 1
            if c.eof:
                with lock:
                    state["reconnects"] += 1
                c.close()
                c = Client(S.port)
        c.close()

    configs = [
        dict(weights=BLUE),
        dict(weights={"blue": 50, "green": 0, "canary": 50}, alt_route=True),
        dict(weights=CANARY, salt="s1"),
        dict(weights={"blue": 30, "green": 30, "canary": 40}, alt_route=True, salt="s2"),
        dict(weights=GREEN),
    ]
    gen0, ok0 = generation(), reloads("success")
    threads = [threading.Thread(target=client, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    try:
        for n in range(25):
            before = state["ok"]
            write_config(make_doc(**configs[n % len(configs)]))
            if n % 2 == 0:
                sighup()
                wait_until(lambda: generation() == gen0 + n + 1, 5,
                           "generation %d after SIGHUP #%d" % (gen0 + n + 1, n + 1))
            else:
                r = post_reload()
                eq(r.status, 200, "POST /reload #%d (body %r)" % (n + 1, r.body))
                eq(r.json(), {"generation": gen0 + n + 1}, "POST /reload #%d body" % (n + 1))
            # Let traffic run on every snapshot before the next reload.
            wait_until(lambda: state["ok"] >= before + 40 or state["failures"], 10,
                       "40 more responses after reload #%d" % (n + 1))
    finally:
        stop.set()
        for th in threads:
            th.join(timeout=30)
    total = state["ok"] + len(state["failures"])
    print("     %d requests, %d failed, %d reconnects, answered by %s"
          % (total, len(state["failures"]), state["reconnects"], state["variants"]))
    eq(state["failures"][:5], [], "failed responses (first 5 of %d)" % len(state["failures"]))
    eq(state["reconnects"], 0, "keep-alive connections closed by the proxy during reloads")
    eq(generation(), gen0 + 25, "generation after 25 reloads")
    eq(reloads("success"), ok0 + 25, "reloads_total{success} increase")
    expect(len(state["variants"]) == 3, "the load saw all three variants: %s"
           % state["variants"])
    # The upstreams' side: each request arrived exactly once with the body sent.
    got = {}
    for name, u in S.ups.items():
        for rec in u.find(lambda rec: rec["target"].startswith("/echo?load=")):
            rid = rec["target"].split("=", 1)[1]
            expect(rid not in got, "request %s reached the upstreams twice" % rid)
            got[rid] = rec["body_sha256"]
            eq(header_of(rec, "X-Switchyard-Variant"), name,
               "variant header received by %s for %s" % (name, rid))
    missing = [rid for rid in state["sent"] if rid not in got]
    eq(missing[:5], [], "answered requests no upstream logged (first 5 of %d)" % len(missing))
    wrong = [rid for rid, sha in state["sent"].items() if got.get(rid) != sha]
    eq(wrong[:5], [], "requests whose body reached the upstream altered")


# ---- 4. listeners ------------------------------------------------------------------------

@cases.case("a listener added by reload accepts; the old one still answers")
def _():
    S.port2 = free_port()
    write_config(make_doc(BLUE, listen=[S.port, S.port2]))
    r = post_reload()
    eq(r.status, 200, "POST /reload adding 127.0.0.1:%d (body %r)" % (S.port2, r.body))
    wait_until(lambda: can_connect(S.port2), 3, "a connection to the new listener")
    wait_variant("blue", port=S.port2, what="on the added listener")
    wait_variant("blue", port=S.port, what="on the original listener")


@cases.case("a listener removed by reload refuses new connections; its in-flight request "
            "finishes and its keep-alive connections close once idle")
def _():
    expect(hasattr(S, "port2"), "depends on the previous case")
    idle = Client(S.port2)
    eq(idle.request("GET", "/idle", headers=[("X-User-Id", "i")]).status, 200,
       "request on the keep-alive connection to be left idle")
    busy = Client(S.port2)
    tag = uuid.uuid4().hex[:8]
    result = {}

    def slow():
        try:
            result["r"] = busy.request("GET", "/sleep?ms=800&tag=" + tag,
                                       headers=[("X-User-Id", "s")])
        except Exception as e:  # noqa: BLE001
            result["e"] = e
    th = threading.Thread(target=slow)
    th.start()
    try:
        S.ups["blue"].wait_records(lambda rec: ("tag=" + tag) in rec["target"])
        write_config(make_doc(BLUE, listen=[S.port]))
        r = post_reload()
        eq(r.status, 200, "POST /reload removing 127.0.0.1:%d (body %r)" % (S.port2, r.body))
        wait_until(lambda: not can_connect(S.port2), 3,
                   "connections to the removed listener %d to be refused" % S.port2)
        expect(idle.closed_by_peer(3), "the idle keep-alive connection on the removed "
               "listener was not closed within 3 s")
    finally:
        th.join(timeout=10)
        idle.close()
    try:
        expect("e" not in result, "in-flight request on the removed listener: %r"
               % result.get("e"))
        eq(result["r"].status, 200, "in-flight request on the removed listener")
        expect(busy.closed_by_peer(3), "its connection was not closed once idle")
    finally:
        busy.close()
    wait_variant("blue", port=S.port, what="on the remaining listener")


@cases.case("a reload adding an address already in use fails with 400; old listeners work")
def _():
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen(8)
        busy_port = taken.getsockname()[1]
        gen, fail = generation(), reloads("failure")
        write_config(make_doc(CANARY, listen=[S.port, busy_port]))
        r = post_reload()
        eq(r.status, 400, "POST /reload adding 127.0.0.1:%d, which is in use (body %r)"
           % (busy_port, r.body))
        expect(("127.0.0.1:%d" % busy_port).encode() in r.body,
               "the 400 body does not name the address: %r" % r.body)
        eq(generation(), gen, "generation")
        eq(reloads("failure"), fail + 1, "reloads_total{failure}")
        # Old config (blue) still served on the old listener; nothing was stolen.
        wait_variant("blue", what="(the failed reload must keep the old config)")
        taken.settimeout(0.05)
        try:
            conn, _ = taken.accept()
            conn.close()
            raise AssertionError("a connection reached the other socket on port %d" % busy_port)
        except socket.timeout:
            pass
        # SIGHUP with the same file fails the same way.
        sighup()
        wait_until(lambda: reloads("failure") == fail + 2, 5, "SIGHUP failure to be counted")
        eq(generation(), gen, "generation after SIGHUP")
        wait_variant("blue", what="(after the failed SIGHUP)")
    finally:
        taken.close()
    write_config(make_doc(BLUE))
    eq(post_reload().status, 200, "restoring a valid config")


# ---- 5. keep-alive connections and in-flight requests ------------------------------------

@cases.case("a keep-alive connection opened before a reload gets the new weights on its next "
            "request")
def _():
    wait_variant("blue", what="(before)")
    with Client(S.port) as c:
        r = c.request("GET", "/ka?n=0", headers=[("X-User-Id", "ka")])
        eq(r.header("X-Upstream"), "blue", "before the reload")
        write_config(make_doc(CANARY))
        eq(post_reload().status, 200, "POST /reload")
        tag = uuid.uuid4().hex[:8]
        n = [0]

        def next_is_canary():
            n[0] += 1
            r = c.request("GET", "/ka?n=%d&tag=%s" % (n[0], tag), headers=[("X-User-Id", "ka")])
            eq(r.status, 200, "status")
            expect(not c.eof, "the proxy closed the keep-alive connection")
            return r.header("X-Upstream") == "canary"
        wait_until(next_is_canary, 3, "the same connection to be routed to canary")
        rec = S.ups["canary"].wait_records(lambda rec: ("tag=" + tag) in rec["target"])[-1]
        eq(header_of(rec, "X-Switchyard-Variant"), "canary", "variant header at canary")
        if n[0] > 1:
            print("     (the new snapshot applied on request %d after the reload)" % n[0])


@cases.case("a request in flight during a reload finishes on its snapshot (blue); the next "
            "request on its connection uses the new one (canary)")
def _():
    write_config(make_doc(BLUE))
    eq(post_reload().status, 200, "POST /reload")
    wait_variant("blue")
    tag = uuid.uuid4().hex[:8]
    result = {}
    c = Client(S.port)

    def slow():
        try:
            result["r"] = c.request("GET", "/sleep?ms=700&tag=" + tag,
                                    headers=[("X-User-Id", "inflight")])
        except Exception as e:  # noqa: BLE001
            result["e"] = e
    th = threading.Thread(target=slow)
    th.start()
    try:
        S.ups["blue"].wait_records(lambda rec: ("tag=" + tag) in rec["target"])
        write_config(make_doc(CANARY))
        eq(post_reload().status, 200, "POST /reload during the request")
        wait_variant("canary", what="(new connections)")
        th.join(timeout=10)
        expect("e" not in result, "in-flight request: %r" % result.get("e"))
        eq(result["r"].status, 200, "in-flight request status")
        eq(result["r"].header("X-Upstream"), "blue", "in-flight request answered by")
        eq(result["r"].header("X-Switchyard-Variant"), "blue", "in-flight request variant")
        r = c.request("GET", "/after?tag=" + tag, headers=[("X-User-Id", "inflight")])
        eq(r.header("X-Upstream"), "canary", "next request on the same connection")
    finally:
        th.join(timeout=10)
        c.close()


def main():
    with Env(cases) as env:
        S.env = env
        S.ups = {v: env.upstream(v) for v in VARIANTS}
        S.port, S.admin = free_port(), free_port()
        env.start_proxy(make_doc(BLUE))
        cases.run()
    cases.exit()


if __name__ == "__main__":
    main()
