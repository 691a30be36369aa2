#!/usr/bin/env python3
"""Automated rollouts (SPEC §11) end to end: the real proxy, real upstreams, steady background
load, and what clients got, what GET /rollouts, the journal, /status, /metrics, switchyard-ctl
and a notification receiver say.

  - a healthy canary goes through every stage (a manual gate opened by switchyard-ctl) to
    complete, its share of the answers following the stage; overrides still win;
  - a canary answering 10% 500s is rolled back and every user key gets exactly its previous
    variant again (keys only ever moved from blue/green into canary), also after a SIGKILL;
  - a canary 200 ms slower fails the latency check; on_failure = "pause" keeps the share;
  - 4xx answers and clients that disconnect (FIN or RST) are not errors;
  - too little traffic holds and never fails;
  - operator controls (pause, resume, promote, promote ?to=100, abort, retry; 409, 401);
  - reload with the same id (and an invalid one), a new id, the block removed, the old id back;
    SIGKILL mid-stage and restart; a start time in the future (pending);
  - validation (`switchyard --check`), notify_url (a receiver that works, one that is down).

Every case runs its own proxy (own ports, own state_dir) for seconds: holds and intervals are
short, and waiting is polling GET /rollouts with a deadline.

    python3 tests/integration/test_rollout.py build/proxy/switchyard build/tools/switchyard-ctl
"""

import contextlib
import json
import math
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

from harness import (CaseFailure, Cases, Client, Env, Inline, Proxy, build_request, config_doc,
                     dead_address, dump_toml, eq, expect, free_port, header_of, metrics,
                     proxy_binary, route, wait_until)

cases = Cases("rollout")
S = SimpleNamespace()
VARIANTS = ("blue", "green", "canary")
HDR = "X-Switchyard-Variant"
TOKEN = "rollout-test-token"


def ctl_binary():
    """argv[2] (meson passes switchyard_ctl_exe.full_path()), else next to the proxy's build."""
    if len(sys.argv) > 2:
        return Path(sys.argv[2])
    return proxy_binary().resolve().parents[1] / "tools" / "switchyard-ctl"


# ---- configs -----------------------------------------------------------------------------

def stages(*specs):
    """stages((10, "2s"), (50, "2s", "manual"), ...) -> the [[routes.rollout.stages]] list."""
    out = []
    for spec in specs:
        st = {"percent": spec[0], "hold": spec[1]}
        if len(spec) > 2:
            st["gate"] = spec[2]
        out.append(st)
    return out


def rollout_block(id="r1", stage_list=None, on_failure="rollback", notify_url=None,
                  variant="canary", baseline="blue", **analysis):
    a = {"interval": "500ms", "warmup": "0s", "confidence": 0.99, "min_requests": 20,
         "error_ratio": Inline(relative=1.5, absolute=0.002),
         "latency": Inline(quantile=0.95, relative=1.5),
         "critical_error_ratio": 0.5}
    a.update(analysis)
    r = {"id": id, "variant": variant, "baseline": baseline, "start": "on_load",
         "on_failure": on_failure}
    if notify_url is not None:
        r["notify_url"] = notify_url
    r["analysis"] = a
    r["stages"] = stage_list or stages((10, "2s"), (50, "2s"), (100, "2s"))
    return r


class Run:
    """One case's proxy: its own ports, work dir and state_dir; background loads and watchers
    it started are stopped with it."""

    def __init__(self, name):
        self.name = name
        self.dir = S.env.dir / name
        self.dir.mkdir()
        self.state_dir = self.dir / "state"
        self.port = free_port()
        self.admin = free_port()
        self.token = None
        self.proxy = None
        self.last_doc = None
        self.starts = 0
        self.loads = []
        self.probe_statuses = []
        self.tag = "%s-%s" % (name, uuid.uuid4().hex[:6])

    def doc(self, weights, rollout=None, canary="canary", server=None, upstreams=None,
            overrides=()):
        pools = {"blue": [S.ups["blue"].addr], "green": [S.ups["green"].addr],
                 "canary": [S.ups[canary].addr]}
        ups = upstreams or {v: v for v in VARIANTS}
        r = route("main", ups, weights, overrides=overrides)
        if rollout is not None:
            r["rollout"] = rollout
        srv = {"state_dir": str(self.state_dir)}
        if self.token:
            srv["admin_token"] = self.token
        srv.update(server or {})
        return config_doc(self.port, pools={k: v for k, v in pools.items() if k in ups.values()},
                          routes=[r], admin_port=self.admin, server=srv)

    def start(self, doc):
        self.starts += 1
        d = self.dir / ("run%d" % self.starts)
        d.mkdir()
        self.proxy = Proxy(d, doc)
        self.last_doc = doc
        return self.proxy

    def write(self, doc):
        text = dump_toml(doc) + "\n"
        tmp = self.proxy.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.proxy.config_path)

    def reload(self, doc):
        """Writes the config and POSTs /reload; returns the new generation."""
        self.write(doc)
        r = self.post("/reload")
        eq(r.status, 200, "POST /reload (body %r)" % r.body)
        self.last_doc = doc
        return r.json()["generation"]

    # -- admin --

    def request(self, method, target, headers=(), body=None, token="default"):
        token = self.token if token == "default" else token
        hdrs = list(headers)
        if token:
            hdrs.append(("Authorization", "Bearer " + token))
        if method == "POST" and body is None:
            body = b""
        with Client(self.admin, timeout=10) as c:
            return c.request(method, target, host="127.0.0.1:%d" % self.admin, headers=hdrs,
                             body=body)

    def post(self, target, reason=None, token="default"):
        body = json.dumps({"reason": reason}).encode() if reason is not None else None
        hdrs = [("Content-Type", "application/json")] if body else []
        return self.request("POST", target, headers=hdrs, body=body, token=token)

    def action(self, action, reason=None, query="", want=200):
        r = self.post("/rollouts/main/%s%s" % (action, query), reason=reason)
        eq(r.status, want, "POST /rollouts/main/%s%s status (body %r)" % (action, query, r.body))
        return r

    def rollouts(self):
        r = self.request("GET", "/rollouts")
        eq(r.status, 200, "GET /rollouts")
        return r.json()

    def rollout(self):
        r = self.request("GET", "/rollouts/main")
        eq(r.status, 200, "GET /rollouts/main (body %r)" % r.body)
        return r.json()

    def status(self):
        r = self.request("GET", "/status")
        eq(r.status, 200, "GET /status")
        return r.json()

    def weights(self):
        return {r["name"]: r["weights"] for r in self.status()["routes"]}["main"]

    def metrics(self):
        return metrics(self.admin)

    def wait(self, pred, timeout, what, interval=0.05):
        """Polls GET /rollouts/main until pred(rollout) holds; returns the rollout."""
        last = {}

        def check():
            ro = self.rollout()
            last["ro"] = ro
            return ro if pred(ro) else None
        try:
            return wait_until(check, timeout, what, interval=interval)
        except TimeoutError as e:
            ro = last.get("ro") or {}
            raise CaseFailure("%s; last /rollouts/main: state %s, stage %s, percent %s, seen %s, "
                              "verdict %r, events %s" % (
                                  e, ro.get("state"), ro.get("stage"), ro.get("percent"),
                                  ro.get("seen"), ro.get("verdict"), events(ro)))

    def wait_stage(self, stage, states=("running",), timeout=15):
        return self.wait(lambda ro: ro["stage"] == stage and ro["state"] in states, timeout,
                         "stage %d (%s)" % (stage, "/".join(states)))

    def journal(self, id="r1"):
        path = self.state_dir / "rollouts" / "main" / ("%s.jsonl" % id)
        expect(path.exists(), "journal %s does not exist" % path)
        return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]

    # -- traffic --

    def load(self, **kw):
        kw.setdefault("tag", self.tag)
        ld = Load(self.port, **kw)
        self.loads.append(ld)
        return ld

    def probe(self, keys, target=None):
        """{key: variant} for each key, one keep-alive connection."""
        out = {}
        c = Client(self.port, timeout=10)
        try:
            for k in keys:
                r = c.request("GET", target or "/probe?case=%s" % self.tag,
                              headers=[("X-User-Id", k)])
                v = r.header(HDR)
                self.probe_statuses.append(r.status)
                expect(v in VARIANTS, "probe key %s: variant header %r (status %d)"
                       % (k, v, r.status))
                out[k] = v
                if c.eof or (r.header("Connection") or "").lower() == "close":
                    c.close()
                    c = Client(self.port, timeout=10)
        finally:
            c.close()
        return out

    def kill9(self):
        self.proxy.proc.send_signal(signal.SIGKILL)
        self.proxy.proc.wait(timeout=10)
        self.proxy._log.close()

    def stop(self):
        for ld in self.loads:
            ld.stop()
        if self.proxy:
            self.proxy.stop()


@contextlib.contextmanager
def case_run(name):
    """A Run stopped at the end of the case; a failure carries the tail of the proxy's log."""
    run = Run(name)
    try:
        yield run
    except Exception as e:
        tail = run.proxy.log_tail(25) if run.proxy else ""
        raise CaseFailure("%s\n--- tail of %s ---\n%s\n--- end ---" % (
            e, run.proxy.log_path if run.proxy else "(no proxy)", tail)) from e
    finally:
        run.stop()


# ---- background traffic ------------------------------------------------------------------

class Load:
    """A steady stream of GETs with random user keys from `threads` keep-alive connections at
    about `rate` requests per second in all; every answer is kept as (sent at, key, status,
    variant), every failed exchange as (sent at, error)."""

    def __init__(self, port, rate=200, threads=4, target="/load", tag="", keys=None):
        self.port = port
        self.rate = rate
        self.threads = threads
        self.target = target + ("&" if "?" in target else "?") + "case=" + tag
        self.keys = keys
        self.results = []
        self.errors = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.workers = [threading.Thread(target=self._work, args=(i,), daemon=True)
                        for i in range(threads)]
        for t in self.workers:
            t.start()

    def _work(self, i):
        rnd = random.Random()
        period = self.threads / float(self.rate)
        nxt = time.monotonic() + rnd.random() * period
        c = None
        while not self.stopped.is_set():
            now = time.monotonic()
            if now < nxt:
                self.stopped.wait(nxt - now)
                continue
            nxt = max(nxt + period, now)  # behind schedule: no burst to catch up
            key = rnd.choice(self.keys) if self.keys else "u-%012x" % rnd.getrandbits(48)
            t = time.monotonic()
            try:
                if c is None:
                    c = Client(self.port, timeout=10)
                r = c.request("GET", self.target, headers=[("X-User-Id", key)])
                with self.lock:
                    self.results.append((t, key, r.status, r.header(HDR)))
                if c.eof or (r.header("Connection") or "").lower() == "close":
                    c.close()
                    c = None
            except Exception as e:  # noqa: BLE001 - recorded; the caller judges
                with self.lock:
                    self.errors.append((t, "%s: %s" % (type(e).__name__, e)))
                if c is not None:
                    c.close()
                c = None
                self.stopped.wait(0.05)
        if c is not None:
            c.close()

    def stop(self):
        self.stopped.set()
        for t in self.workers:
            t.join(15)

    def between(self, t0, t1=None):
        t1 = time.monotonic() if t1 is None else t1
        with self.lock:
            return [r for r in self.results if t0 <= r[0] <= t1]

    def count(self):
        with self.lock:
            return len(self.results)

    def wait_answers(self, t0, n, timeout=10):
        """Waits until n answers to requests sent after t0 came back; returns them."""
        return wait_until(lambda: (lambda rs: rs if len(rs) >= n else None)(self.between(t0)),
                          timeout, "%d answers of the background load" % n)


def share(results, variant="canary"):
    return sum(1 for r in results if r[3] == variant) / float(len(results)) if results else 0.0


def check_share(results, percent, what):
    """The variant's share of these answers is about percent (binomial slack + 2 points)."""
    n = len(results)
    expect(n >= 50, "%s: only %d answers to judge the share on" % (what, n))
    p = percent / 100.0
    got = share(results)
    slack = 4.5 * math.sqrt(p * (1 - p) / n) + 0.02
    expect(abs(got - p) <= slack, "%s: canary answered %.1f%% of %d requests, want %.0f%% "
           "(+- %.1f points)" % (what, 100 * got, n, percent, 100 * slack))


def measure(load, seconds, percent, what):
    """Measurement window: the answers to requests sent in the next `seconds`, share checked."""
    t0 = time.monotonic()
    time.sleep(seconds)  # a measurement window of steady traffic
    check_share(load.between(t0), percent, what)


def events(ro):
    return [h["event"] for h in ro.get("history", [])]


def check(ro, name):
    for c in ro["checks"]:
        if c["name"] == name:
            return c
    raise CaseFailure("no %s check in %r" % (name, [c["name"] for c in ro["checks"]]))


def rollout_metric(m, name, **labels):
    want = dict(route="main", rollout="r1")
    want.update(labels)
    return m.get((name, frozenset(want.items())))


def ctl(*args, timeout=30):
    p = subprocess.run([str(S.ctl)] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout)
    return SimpleNamespace(code=p.returncode, out=p.stdout, err=p.stderr,
                           text=p.stdout + p.stderr)


def ctl_rollout(run, action, *extra):
    args = ["rollout", action, "--admin", "127.0.0.1:%d" % run.admin, "--route", "main"]
    if run.token:
        args += ["--token", run.token]
    return ctl(*(args + list(extra)))


def no_errors(load, what="background load"):
    expect(not load.errors, "%s: %d failed exchanges, first %r" % (
        what, len(load.errors), load.errors[:3]))


# ---- 1. a healthy canary ---------------------------------------------------------------

@cases.case("healthy canary: every stage to complete, share follows the stage, gate opened by "
            "switchyard-ctl promote; history = journal; metrics")
def _():
    with case_run("healthy") as run:
        run.start(run.doc({"blue": 100, "green": 0, "canary": 0}, rollout_block(
            stage_list=stages((10, "2s"), (50, "2s", "manual"), (100, "2s")),
            interval="1s"), overrides=[{"header": "X-Force", "regex": "^blue$",
                                        "variant": "blue"}]))
        load = run.load(rate=250, threads=4)
        # Stage 1 (10%): the window between the first and the last time /rollouts said so.
        ro = run.wait_stage(1)
        t1 = time.monotonic()
        eq(ro["percent"], 10.0, "percent at stage 1")
        eq(ro["waiting_for"], "hold", "waiting_for at stage 1")
        ro = run.wait_stage(2, states=("running", "waiting_gate"), timeout=15)
        t2 = time.monotonic()
        check_share(load.between(t1 + 0.1, t2 - 0.4), 10, "stage 1")
        ro = run.wait(lambda ro: ro["state"] == "waiting_gate", 15, "the manual gate of stage 2")
        eq((ro["stage"], ro["percent"], ro["waiting_for"]), (2, 50.0, "promote"),
           "(stage, percent, waiting_for) at the gate")
        # The gate holds: the share stays 50% for as long as nobody promotes.
        measure(load, 1.5, 50, "stage 2 at the gate")
        eq(run.rollout()["state"], "waiting_gate", "state 1.5 s after the gate")
        r = ctl_rollout(run, "promote", "--reason", "looks good")
        eq(r.code, 0, "switchyard-ctl rollout promote exit code (output %r)" % r.text)
        expect("stage 3" in r.out, "promote's output names stage 3: %r" % r.out)
        ro = run.wait_stage(3, timeout=5)
        eq(ro["percent"], 100.0, "percent at stage 3")
        t3 = time.monotonic()
        ro = run.wait(lambda ro: ro["state"] == "complete", 15, "complete")
        t4 = time.monotonic()
        check_share(load.between(t3 + 0.1, t4), 100, "stage 3 (100%)")
        # Complete keeps the share; overrides still win over the rollout.
        measure(load, 0.5, 100, "after complete")
        with Client(run.port) as c:
            r = c.request("GET", "/forced?case=%s" % run.tag,
                          headers=[("X-User-Id", "someone"), ("X-Force", "blue")])
            eq((r.status, r.header(HDR), r.header("X-Upstream")), (200, "blue", "blue"),
               "(status, variant, upstream) with the override header at 100%")
        load.stop()
        no_errors(load)
        eq(sorted({r[2] for r in load.results}), [200], "statuses clients got")
        eq(sorted({r[3] for r in load.results}), ["blue", "canary"], "variants that answered")

        eq((ro["stage"], ro["percent"]), (3, 100.0), "(stage, percent) when complete")
        eq(ro["waiting_for"], "", "waiting_for when complete")
        for c in ro["checks"]:
            expect(not c["failed"], "check %s failed: %s" % (c["name"], c["summary"]))
        expect(ro["intervals"] >= 3, "judged intervals: %d" % ro["intervals"])
        evs = events(ro)
        eq([e for e in evs if e != "hold"], ["start", "advance", "gate", "promote", "complete"],
           "history events (without holds)")
        promote = [h for h in ro["history"] if h["event"] == "promote"][0]
        eq(promote["reason"], "looks good", "reason of the promote event")
        for h in ro["history"]:
            expect(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", h["at"]),
                   "history time %r is not RFC 3339 UTC" % h["at"])
        # The journal has the same events, in order, with the same times, stages and shares.
        journal = run.journal()
        eq([(j["event"], j["state"], j["stage"], j["percent"], j["at"]) for j in journal],
           [(h["event"], h["state"], h["stage"], h["percent"], h["at"]) for h in ro["history"]],
           "journal vs history (event, state, stage, percent, at)")
        # /status: at 100% the variant alone is weighted.
        w = run.weights()
        expect(w["canary"] > 0 and w["blue"] == 0 and w["green"] == 0,
               "/status weights when complete: %r" % w)
        m = run.metrics()
        for state in ("pending", "running", "holding", "waiting_gate", "paused", "failed",
                      "aborted", "complete"):
            eq(rollout_metric(m, "switchyard_rollout_state", state=state),
               1.0 if state == "complete" else 0.0, "switchyard_rollout_state{state=%s}" % state)
        eq(rollout_metric(m, "switchyard_rollout_percent"), 100.0, "switchyard_rollout_percent")
        eq(rollout_metric(m, "switchyard_rollout_stage"), 3.0, "switchyard_rollout_stage")
        for ev in ("start", "advance", "gate", "promote", "complete"):
            eq(rollout_metric(m, "switchyard_rollout_events_total", event=ev), 1.0,
               "switchyard_rollout_events_total{event=%s}" % ev)
        # The canary upstream got the canary's requests, marked as canary.
        recs = S.ups["canary"].find(lambda rec: "case=%s" % run.tag in rec["target"])
        eq(len(recs), sum(1 for r in load.results if r[3] == "canary"),
           "requests the canary upstream logged vs canary answers")
        eq({header_of(rec, HDR) for rec in recs}, {"canary"}, "variant header at the canary")


# ---- 2. errors: rollback, every key back where it was ----------------------------------

@cases.case("canary with 10% 5xx is rolled back (failed, 0%, verdict names 5xx); keys only "
            "moved into canary and all 300 return to exactly their previous variant")
def _():
    with case_run("rollback") as run:
        weights = {"blue": 50, "green": 50, "canary": 0}
        run.start(run.doc(weights, canary="canary_err"))
        keys = ["key-%d" % i for i in range(300)]
        before = run.probe(keys)
        eq(sorted(set(before.values())), ["blue", "green"], "variants of the 300 keys before")
        gen = run.reload(run.doc(weights, canary="canary_err", rollout=rollout_block(
            stage_list=stages((10, "4s"), (50, "4s"), (100, "4s")))))
        expect(gen >= 2, "generation after the reload: %r" % gen)
        ro = run.wait_stage(1, timeout=5)
        load = run.load(rate=250, threads=4)
        moved = set()
        passes = 0
        while True:
            ro = run.rollout()
            if ro["state"] not in ("running", "holding"):
                break
            now = run.probe(keys)
            passes += 1
            bad = {k: (before[k], v) for k, v in now.items() if v not in (before[k], "canary")}
            eq(bad, {}, "keys that moved other than into canary (before, now) at stage %d"
               % ro["stage"])
            moved |= {k for k, v in now.items() if v == "canary"}
            expect(passes < 100, "still %s after 100 probe passes" % ro["state"])
        ro = run.wait(lambda ro: ro["state"] == "failed", 20, "the rollout to fail")
        t_fail = time.monotonic()
        expect(passes >= 1 and moved, "probes while it ran: %d passes, %d keys moved to canary"
               % (passes, len(moved)))
        eq(ro["percent"], 0.0, "percent after the rollback")
        expect("5xx" in ro["verdict"] and "rolled back" in ro["verdict"],
               "verdict names the 5xx check and the rollback: %r" % ro["verdict"])
        err = check(ro, "error_ratio")
        expect(err["failed"] and err["variant_events"] > 0,
               "error_ratio check: failed %r, variant_events %r" % (err["failed"],
                                                                    err["variant_events"]))
        eq(events(ro)[-1], "fail", "last event")
        eq(run.journal()[-1]["event"], "fail", "last journal event")
        eq(run.weights(), {"blue": 50.0, "green": 50.0, "canary": 0.0}, "/status weights")
        # The new weights reach the workers right after the event: the probe is retried
        # until it agrees (or the deadline passes, and the last difference is the failure).
        last = {}

        def back():
            after = run.probe(keys)
            last["diff"] = {k: (before[k], after[k]) for k in keys if after[k] != before[k]}
            return not last["diff"]
        try:
            wait_until(back, 3, "every key on its previous variant", interval=0.1)
        except TimeoutError:
            eq(last["diff"], {}, "keys whose variant after the rollback differs from before "
               "(before, after)")
        # Everybody else too: no canary answers once the rollback is seen.
        rs = load.wait_answers(t_fail + 0.2, 100)
        eq(share(rs), 0.0, "canary share of the answers after the rollback")
        load.stop()
        no_errors(load)
        expect(500 in run.probe_statuses + [r[2] for r in load.results],
               "clients never saw a canary 500")
        m = run.metrics()
        eq(rollout_metric(m, "switchyard_rollout_state", state="failed"), 1.0,
           "switchyard_rollout_state{failed}")
        eq(rollout_metric(m, "switchyard_rollout_percent"), 0.0, "switchyard_rollout_percent")
        # A crash after the rollback does not bring the canary back.
        run.kill9()
        run.start(run.last_doc)
        ro2 = run.rollout()
        eq((ro2["state"], ro2["stage"], ro2["percent"], ro2["history"]),
           ("failed", ro["stage"], 0.0, ro["history"]),
           "(state, stage, percent, history) after SIGKILL and restart")
        eq(run.probe(keys), before, "variants of the 300 keys after the restart")


# ---- 3. latency ----------------------------------------------------------------------

@cases.case("canary 200 ms slower fails the latency check (verdict: slower) and is rolled back")
def _():
    with case_run("slow") as run:
        run.start(run.doc({"blue": 100, "green": 0, "canary": 0}, canary="canary_slow",
                          rollout=rollout_block(stage_list=stages((20, "10s"), (100, "10s")))))
        load = run.load(rate=250, threads=10)
        ro = run.wait(lambda ro: ro["state"] == "failed", 20, "the rollout to fail")
        t_fail = time.monotonic()
        lat = check(ro, "latency")
        expect(lat["failed"], "latency check not failed: %s" % lat["summary"])
        expect("slower" in ro["verdict"], "verdict mentions 'slower': %r" % ro["verdict"])
        expect(lat["threshold_ms"] < 200, "baseline p95 %r ms" % lat["threshold_ms"])
        expect(not check(ro, "error_ratio")["failed"], "error check failed too: %s"
               % check(ro, "error_ratio")["summary"])
        eq((ro["stage"], ro["percent"]), (1, 0.0), "(stage, percent) after the rollback")
        rs = load.wait_answers(t_fail + 0.2, 100)
        eq(share(rs), 0.0, "canary share of the answers after the rollback")
        load.stop()
        no_errors(load)
        eq(sorted({r[2] for r in load.results}), [200], "statuses clients got")
        expect(any(r[3] == "canary" for r in load.results), "no canary answer at all")


# ---- on_failure = "pause" ------------------------------------------------------------------

@cases.case("on_failure = pause: a failing canary keeps its share (failed, percent unchanged); "
            "abort then rolls it back")
def _():
    with case_run("fail-pause") as run:
        run.start(run.doc({"blue": 100, "green": 0, "canary": 0}, canary="canary_err",
                          rollout=rollout_block(stage_list=stages((20, "10s"), (100, "10s")),
                                                on_failure="pause")))
        load = run.load(rate=250, threads=4)
        ro = run.wait(lambda ro: ro["state"] == "failed", 20, "the rollout to fail")
        eq((ro["stage"], ro["percent"]), (1, 20.0), "(stage, percent) after the failure")
        expect("5xx" in ro["verdict"] and "paused" in ro["verdict"],
               "verdict names 5xx and the pause: %r" % ro["verdict"])
        eq((ro["history"][-1]["event"], ro["history"][-1]["percent"]), ("fail", 20.0),
           "last history entry (event, percent)")
        w = run.weights()
        expect(abs(w["canary"] - 25.0) < 1e-6, "/status canary weight at 20%% of blue 100: %r" % w)
        measure(load, 1.5, 20, "after the failure (share kept)")
        ro = run.rollout()
        eq((ro["state"], ro["percent"]), ("failed", 20.0), "(state, percent) 1.5 s later")
        ro = run.action("abort", reason="roll it back").json()
        eq((ro["state"], ro["percent"]), ("aborted", 0.0), "(state, percent) after abort")
        t = time.monotonic()
        rs = load.wait_answers(t + 0.1, 100)
        eq(share(rs), 0.0, "canary share after abort")
        load.stop()
        no_errors(load)


# ---- 4. what is not an error ------------------------------------------------------------

def disconnecting_clients(run, stop, sent, reset, rate=20):
    """Clients that send GET /sleep?ms=1000 and close the socket after 100 ms: with a FIN
    (close()), or with reset (SO_LINGER 0: an RST)."""
    rnd = random.Random()
    while not stop.is_set():
        try:
            s = socket.create_connection(("127.0.0.1", run.port), timeout=5)
            if reset:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.sendall(build_request("GET", "/sleep?ms=1000&case=%s&reset=%d" % (run.tag, reset),
                                    headers=[("X-User-Id", "gone-%012x" % rnd.getrandbits(48))]))
            stop.wait(0.1)  # the client gives up after 100 ms
            s.close()
            sent.append(reset)
        except OSError:
            pass
        stop.wait(1.0 / rate)


@cases.case("4xx answers and clients that disconnect are not errors: the rollout completes, "
            "the error check counts 0 events")
def _():
    with case_run("not-errors") as run:
        run.start(run.doc({"blue": 100, "green": 0, "canary": 0}, rollout=rollout_block(
            stage_list=stages((50, "2s"), (100, "2s")))))
        load = run.load(rate=200, threads=4, target="/status?code=404")
        stop = threading.Event()
        sent = []
        threads = [threading.Thread(target=disconnecting_clients, args=(run, stop, sent, reset),
                                    daemon=True) for reset in (0, 1)]
        for t in threads:
            t.start()
        seen_states = set()
        try:
            def done(ro):
                seen_states.add(ro["state"])
                return ro["state"] in ("complete", "failed", "aborted")
            ro = run.wait(done, 20, "the rollout to end")
        finally:
            stop.set()
            for t in threads:
                t.join(5)
        load.stop()
        err = check(ro, "error_ratio")
        eq(ro["state"], "complete", "final state (verdict %r; error check %r)"
           % (ro["verdict"], err["summary"]))
        expect("failed" not in seen_states, "states seen: %r" % seen_states)
        eq((err["variant_events"], err["baseline_events"]), (0, 0),
           "error_ratio (variant_events, baseline_events)")
        expect(err["variant_requests"] > 0, "no judged canary requests")
        no_errors(load)
        eq(sorted({r[2] for r in load.results}), [404], "statuses clients got")
        expect(sent.count(0) >= 10 and sent.count(1) >= 10,
               "disconnecting clients: %d closed, %d reset" % (sent.count(0), sent.count(1)))
        # The disconnects did reach the canary; the resets are recorded as the client's doing
        # (a client's FIN after a complete request is taken as a half-close: it is answered).
        for reset in (0, 1):
            gone = S.ups["canary"].find(
                lambda rec: rec["target"].startswith("/sleep") and "case=%s&reset=%d"
                % (run.tag, reset) in rec["target"])
            expect(len(gone) >= 3, "only %d disconnecting requests (reset=%d) reached the canary"
                   % (len(gone), reset))
        m = run.metrics()
        client_ends = sum(v for (name, labels), v in m.items()
                          if name == "switchyard_requests_terminated_total"
                          and ("variant", "canary") in labels and ("source", "client") in labels)
        expect(client_ends >= 5, "requests_terminated_total{canary, source=client}: %r"
               % client_ends)


# ---- 5. too little traffic ---------------------------------------------------------------

@cases.case("too little traffic: holding with needed 1000 > seen, for several intervals, "
            "never failed")
def _():
    with case_run("holding") as run:
        run.start(run.doc({"blue": 100, "green": 0, "canary": 0}, rollout=rollout_block(
            stage_list=stages((10, "1s"), (100, "1s")), min_requests=1000)))
        load = run.load(rate=20, threads=2)
        ro = run.wait(lambda ro: ro["state"] == "holding", 10, "holding")
        eq((ro["stage"], ro["percent"], ro["needed"], ro["waiting_for"]),
           (1, 10.0, 1000, "requests"), "(stage, percent, needed, waiting_for) when holding")
        first = ro["intervals"]
        t_end = time.monotonic() + 3.0  # 6 intervals of 500 ms
        while time.monotonic() < t_end:
            ro = run.rollout()
            eq(ro["state"], "holding", "state while holding (verdict %r)" % ro["verdict"])
            time.sleep(0.1)
        expect(ro["seen"] < ro["needed"], "seen %r, needed %r" % (ro["seen"], ro["needed"]))
        expect(ro["seen"] > 0, "seen %r after 4 s of trickle" % ro["seen"])
        expect(ro["intervals"] >= first + 4, "judged intervals went from %d to %d in 3 s"
               % (first, ro["intervals"]))
        expect("holding" in ro["verdict"] and "1000" in ro["verdict"],
               "verdict says holding and 1000: %r" % ro["verdict"])
        eq(events(ro), ["start", "hold"], "history events")
        eq(rollout_metric(run.metrics(), "switchyard_rollout_state", state="holding"), 1.0,
           "switchyard_rollout_state{holding}")
        load.stop()
        no_errors(load)


# ---- 6. operator controls -------------------------------------------------------------

@cases.case("controls via switchyard-ctl: pause freezes, resume continues, promote opens the "
            "gate, --to 100, abort -> 0%, retry -> stage 1; 409 and exit 1 when not allowed; "
            "reason in history; 401 without the token")
def _():
    with case_run("controls") as run:
        run.token = TOKEN
        run.start(run.doc({"blue": 100, "green": 0, "canary": 0}, rollout=rollout_block(
            stage_list=stages((10, "3s"), (50, "1s", "manual"), (80, "60s"), (100, "60s")))))
        load = run.load(rate=200, threads=4)
        run.wait_stage(1, timeout=5)
        # Not allowed while running: 409 with the reason; ctl exits 1 and prints it.
        r = run.post("/rollouts/main/resume")
        eq(r.status, 409, "POST resume while running")
        expect("cannot resume" in r.json().get("error", ""), "409 body: %r" % r.body)
        for action in ("resume", "retry"):
            c = ctl_rollout(run, action)
            eq(c.code, 1, "switchyard-ctl rollout %s while running: exit code" % action)
            expect("cannot %s" % action in c.text and "running" in c.text,
                   "ctl %s output names the reason: %r" % (action, c.text))
        # The token.
        eq(run.post("/rollouts/main/pause", token=None).status, 401, "POST pause without token")
        eq(run.post("/rollouts/main/pause", token="wrong").status, 401, "POST with a wrong token")
        eq(run.rollout()["state"], "running", "state after the refused calls")
        c = ctl("rollout", "pause", "--admin", "127.0.0.1:%d" % run.admin, "--route", "main")
        expect(c.code != 0, "ctl pause without --token: exit %d %r" % (c.code, c.text))
        eq(run.post("/rollouts/nope/pause").status, 404, "POST pause on an unknown route")
        # Pause: frozen past the stage's hold.
        c = ctl_rollout(run, "pause", "--reason", "checking dashboards")
        eq(c.code, 0, "ctl pause exit code (%r)" % c.text)
        ro = run.rollout()
        eq((ro["state"], ro["stage"], ro["percent"], ro["waiting_for"]),
           ("paused", 1, 10.0, "resume"), "(state, stage, percent, waiting_for) after pause")
        eq(ro["history"][-1]["reason"], "checking dashboards", "reason of the pause event")
        measure(load, 3.5, 10, "while paused (longer than the 3 s hold)")
        ro = run.rollout()
        eq((ro["state"], ro["stage"], ro["percent"]), ("paused", 1, 10.0),
           "(state, stage, percent) 3.5 s into the pause")
        c = ctl_rollout(run, "promote")
        eq(c.code, 1, "ctl promote while paused: exit code (%r)" % c.text)
        expect("cannot promote" in c.text, "ctl promote output: %r" % c.text)
        # Resume: the rest of the hold runs, then stage 2 by itself, then its gate.
        c = ctl_rollout(run, "resume", "--reason", "all clear")
        eq(c.code, 0, "ctl resume exit code (%r)" % c.text)
        eq(run.rollout()["state"], "running", "state after resume")
        ro = run.wait(lambda ro: ro["state"] == "waiting_gate", 15, "the gate of stage 2")
        eq((ro["stage"], ro["percent"]), (2, 50.0), "(stage, percent) at the gate")
        # Promote opens the gate: stage 3 (80%).
        c = ctl_rollout(run, "promote", "--reason", "gate ok")
        eq(c.code, 0, "ctl promote exit code (%r)" % c.text)
        ro = run.rollout()
        eq((ro["state"], ro["stage"], ro["percent"]), ("running", 3, 80.0),
           "(state, stage, percent) after promote at the gate")
        t = time.monotonic()
        check_share(load.wait_answers(t + 0.1, 150), 80, "stage 3 after promote")
        # --to 100: straight to the last stage.
        c = ctl_rollout(run, "promote", "--to", "100")
        eq(c.code, 0, "ctl promote --to 100 exit code (%r)" % c.text)
        ro = run.rollout()
        eq((ro["state"], ro["stage"], ro["percent"]), ("running", 4, 100.0),
           "(state, stage, percent) after promote --to 100")
        t = time.monotonic()
        rs = load.wait_answers(t + 0.1, 100)
        eq(share(rs), 1.0, "canary share at 100%")
        # Abort: 0%, everybody back.
        c = ctl_rollout(run, "abort", "--reason", "business says no")
        eq(c.code, 0, "ctl abort exit code (%r)" % c.text)
        ro = run.rollout()
        eq((ro["state"], ro["percent"], ro["waiting_for"]), ("aborted", 0.0, "retry"),
           "(state, percent, waiting_for) after abort")
        t = time.monotonic()
        eq(share(load.wait_answers(t + 0.1, 100)), 0.0, "canary share after abort")
        for action in ("pause", "resume", "promote"):
            r = run.post("/rollouts/main/%s" % action)
            eq(r.status, 409, "POST %s while aborted (body %r)" % (action, r.body))
        # Retry: stage 1 again, with fresh evidence.
        r = run.action("retry", reason="second try")
        ro = r.json()
        eq((ro["state"], ro["stage"], ro["percent"]), ("running", 1, 10.0),
           "(state, stage, percent) after retry")
        eq([c["variant_requests"] for c in ro["checks"]], [0] * len(ro["checks"]),
           "judged requests of the checks right after retry")
        t = time.monotonic()
        check_share(load.wait_answers(t + 0.1, 300), 10, "stage 1 after retry")
        ro = run.rollout()
        reasons = {h["event"]: h["reason"] for h in ro["history"]}
        for ev, why in (("pause", "checking dashboards"), ("resume", "all clear"),
                        ("abort", "business says no"), ("retry", "second try")):
            eq(reasons.get(ev), why, "reason of the %s event in the history" % ev)
        eq([e for e in events(ro) if e != "hold"],
           ["start", "pause", "resume", "advance", "gate", "promote", "promote", "abort",
            "retry"], "history events")
        journal = run.journal()
        eq([j["event"] for j in journal], events(ro), "journal events")
        eq(journal[-1]["reason"], "second try", "reason of the last journal line")
        load.stop()
        no_errors(load)


# ---- 7. reload ---------------------------------------------------------------------------

@cases.case("reload: the same id keeps the state; a new id starts at stage 1; the block "
            "removed -> configured weights; the old id back -> its state again")
def _():
    with case_run("reload") as run:
        weights = {"blue": 100, "green": 0, "canary": 0}
        block = lambda id="r1": rollout_block(id=id, stage_list=stages((10, "1s"), (50, "60s"),
                                                                        (100, "1s")))
        run.start(run.doc(weights, rollout=block()))
        load = run.load(rate=200, threads=4)
        w = run.weights()
        expect(abs(w["canary"] - 100 * 10 / 90.0) < 1e-9 and w["blue"] == 100,
               "weights at 10%% (canary = 10/90 x 100): %r" % w)
        ro = run.wait_stage(2, timeout=15)
        eq(run.weights(), {"blue": 100.0, "green": 0.0, "canary": 100.0}, "weights at 50%")
        # An unrelated change, same id: same state, stage and history.
        run.reload(run.doc(weights, rollout=block(), server={
            "timeouts": {"drain_timeout_ms": 2000, "upstream_response_ms": 20000}}))
        after = run.rollout()
        eq((after["state"], after["stage"], after["percent"]), ("running", 2, 50.0),
           "(state, stage, percent) after a reload with the same id")
        eq(after["history"], ro["history"], "history after a reload with the same id")
        t = time.monotonic()
        check_share(load.wait_answers(t + 0.1, 200), 50, "after the reload with the same id")
        # An invalid rollout block: 400, the old snapshot and the rollout's state stay.
        run.write(run.doc(weights, rollout=block() | {"stages": stages((50, "1s"), (10, "1s"))}))
        r = run.post("/reload")
        eq(r.status, 400, "POST /reload of stages not increasing (body %r)" % r.body)
        expect(b"stages[1].percent" in r.body, "the 400 names the key: %r" % r.body)
        still = run.rollout()
        eq((still["state"], still["stage"], still["percent"], still["history"]),
           ("running", 2, 50.0, ro["history"]), "(state, stage, percent, history) after it")
        # A new id: a new rollout, at stage 1.
        run.reload(run.doc(weights, rollout=block("r2")))
        ro2 = run.rollout()
        eq((ro2["id"], ro2["state"], ro2["stage"], ro2["percent"]), ("r2", "running", 1, 10.0),
           "(id, state, stage, percent) after a reload with a new id")
        eq(events(ro2), ["start"], "history of the new id")
        eq([j["event"] for j in run.journal("r2")], ["start"], "journal of r2")
        eq([j["event"] for j in run.journal("r1")], events(ro), "journal of r1 (unchanged)")
        # The block removed: the configured weights, every answer from blue.
        run.reload(run.doc(weights))
        eq(run.rollouts(), [], "GET /rollouts without a rollout block")
        eq(run.request("GET", "/rollouts/main").status, 404, "GET /rollouts/main")
        eq(run.weights(), {"blue": 100.0, "green": 0.0, "canary": 0.0}, "/status weights")
        t = time.monotonic()
        eq(share(load.wait_answers(t + 0.1, 100)), 0.0, "canary share without the rollout")
        # r1 back: its state is kept per id (stage 2, whose 60 s hold still runs).
        run.reload(run.doc(weights, rollout=block()))
        ro1 = run.rollout()
        eq((ro1["id"], ro1["state"], ro1["stage"], ro1["percent"]), ("r1", "running", 2, 50.0),
           "(id, state, stage, percent) with r1 back")
        eq(events(ro1), events(ro), "history of r1 back")
        load.stop()
        no_errors(load)


# ---- 8. SIGKILL and restart ------------------------------------------------------------

@cases.case("SIGKILL at stage 2 and restart: same state, stage and history, then it goes on "
            "to complete")
def _():
    with case_run("sigkill") as run:
        doc = run.doc({"blue": 100, "green": 0, "canary": 0}, rollout=rollout_block(
            stage_list=stages((10, "1s"), (50, "4s"), (100, "1s"))))
        run.start(doc)
        load = run.load(rate=200, threads=4)
        before = run.wait_stage(2, timeout=15)
        run.kill9()
        lines = len(run.journal())
        run.start(doc)
        ro = run.rollout()
        eq((ro["state"], ro["stage"], ro["percent"]), ("running", 2, 50.0),
           "(state, stage, percent) after the restart")
        eq(ro["history"], before["history"], "history after the restart")
        eq(len(run.journal()), lines, "journal lines after the restart")
        eq(run.weights()["canary"], 100.0, "canary weight after the restart")
        t_ready = time.monotonic()
        check_share(load.wait_answers(t_ready + 0.1, 200), 50, "stage 2 after the restart")
        ro = run.wait(lambda ro: ro["state"] == "complete", 20, "complete after the restart")
        eq([e for e in events(ro) if e != "hold"], ["start", "advance", "advance", "complete"],
           "history events")
        eq(ro["history"][:len(before["history"])], before["history"], "history kept")
        eq([j["event"] for j in run.journal()], events(ro), "journal events")
        load.stop()
        late = [e for e in load.errors if e[0] > t_ready + 0.5]
        eq(late, [], "exchanges that failed once the restarted proxy accepted")


# ---- start at a given time -------------------------------------------------------------

@cases.case("start = an RFC 3339 time: pending (stage 0, 0%, waiting for start) until then, "
            "then stage 1")
def _():
    with case_run("pending") as run:
        at = int(time.time()) + 3
        start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
        block = rollout_block(stage_list=stages((50, "60s"), (100, "60s")))
        block["start"] = start
        run.start(run.doc({"blue": 100, "green": 0, "canary": 0}, rollout=block))
        load = run.load(rate=100, threads=2)
        ro = run.rollout()
        eq((ro["state"], ro["stage"], ro["percent"], ro["waiting_for"], ro["next_transition"]),
           ("pending", 0, 0.0, "start", start),
           "(state, stage, percent, waiting_for, next_transition) before the start time")
        eq(run.weights()["canary"], 0.0, "canary weight while pending")
        t = time.monotonic()
        rs = load.wait_answers(t, 50)
        eq(share(rs), 0.0, "canary share while pending")
        ro = run.wait(lambda ro: ro["state"] != "pending", 10, "the start time")
        expect(time.time() >= at - 0.3, "started %.2f s before its start time" % (at - time.time()))
        eq((ro["state"], ro["stage"], ro["percent"]), ("running", 1, 50.0),
           "(state, stage, percent) after the start time")
        eq(events(ro), ["start"], "history events")
        expect(start in ro["history"][0]["reason"], "reason of the start event: %r"
               % ro["history"][0]["reason"])
        t = time.monotonic()
        check_share(load.wait_answers(t + 0.1, 150), 50, "stage 1 after the start time")
        load.stop()
        no_errors(load)


# ---- 9. validation ---------------------------------------------------------------------

@cases.case("--check rejects each invalid rollout with file:line:col: key: message")
def _():
    run = Run("check")
    weights = {"blue": 100, "green": 0, "canary": 0}
    good = run.doc(weights, rollout=rollout_block())
    path = run.dir / "good.toml"
    path.write_text(dump_toml(good) + "\n")
    p = subprocess.run([str(proxy_binary()), "--check", "--config", str(path)],
                       capture_output=True, text=True, timeout=30)
    eq(p.returncode, 0, "--check of the valid config (output %r)" % (p.stdout + p.stderr))

    def variant(doc, **kw):
        doc["routes"][0]["rollout"].update(kw)

    def stage(i, **kw):
        return lambda doc: doc["routes"][0]["rollout"]["stages"][i].update(kw)

    def analysis(**kw):
        return lambda doc: doc["routes"][0]["rollout"]["analysis"].update(kw)

    def no_green_pool(doc):
        del doc["routes"][0]["upstreams"]["green"]
        del doc["routes"][0]["weights"]["green"]
        variant(doc, variant="green")

    def baseline_zero(doc):
        doc["routes"][0]["weights"].update(blue=0, green=100)

    def no_state_dir(doc):
        del doc["server"]["state_dir"]

    bad = [
        ("variant without a pool", no_green_pool, r"routes\[0\]\.rollout\.variant", "variant"),
        ("variant == baseline", lambda d: variant(d, baseline="canary"),
         r"routes\[0\]\.rollout\.(baseline|variant)", "canary"),
        ("baseline weight 0", baseline_zero, r"routes\[0\]\.(rollout\.baseline|weights\S*)",
         None),
        ("stages not increasing", stage(1, percent=5), r"routes\[0\]\.rollout\.stages\[1\]\S*",
         "percent"),
        ("stages equal", stage(1, percent=10), r"routes\[0\]\.rollout\.stages\[1\]\S*",
         "percent"),
        ("percent 0", stage(0, percent=0), r"routes\[0\]\.rollout\.stages\[0\]\.percent",
         "percent"),
        ("percent 101", stage(2, percent=101), r"routes\[0\]\.rollout\.stages\[2\]\.percent",
         "percent"),
        ("hold '2 s'", stage(0, hold="2 s"), r"routes\[0\]\.rollout\.stages\[0\]\.hold", "hold"),
        ("hold '10'", stage(0, hold="10"), r"routes\[0\]\.rollout\.stages\[0\]\.hold", "hold"),
        ("interval '1x'", analysis(interval="1x"), r"routes\[0\]\.rollout\.analysis\.interval",
         "interval"),
        ("warmup '-1s'", analysis(warmup="-1s"), r"routes\[0\]\.rollout\.analysis\.warmup",
         "warmup"),
        ("confidence 0.5", analysis(confidence=0.5),
         r"routes\[0\]\.rollout\.analysis\.confidence", "confidence"),
        ("confidence 1", analysis(confidence=1), r"routes\[0\]\.rollout\.analysis\.confidence",
         "confidence"),
        ("confidence 1.0", analysis(confidence=1.0),
         r"routes\[0\]\.rollout\.analysis\.confidence", "confidence"),
        ("missing state_dir", no_state_dir, r"(server\.state_dir|routes\[0\]\.rollout\S*)",
         None),
    ]
    problems = []
    for i, (what, mutate, key, leaf) in enumerate(bad):
        doc = json.loads(json.dumps(good))  # a deep copy (Inline tables become plain dicts)
        for k in ("error_ratio", "latency"):
            doc["routes"][0]["rollout"]["analysis"][k] = Inline(
                doc["routes"][0]["rollout"]["analysis"][k])
        mutate(doc)
        f = run.dir / ("bad-%02d.toml" % i)
        text = dump_toml(doc) + "\n"
        f.write_text(text)
        p = subprocess.run([str(proxy_binary()), "--check", "--config", str(f)],
                           capture_output=True, text=True, timeout=30)
        out = p.stdout + p.stderr
        m = re.search(r"^%s:(?P<line>\d+):(?P<col>\d+): (?P<key>%s): (?P<msg>.+)$"
                      % (re.escape(str(f)), key), out, re.M)
        if p.returncode != 1 or m is None:
            problems.append("%s: exit %d, output %r (want 'FILE:LINE:COL: %s: message')"
                            % (what, p.returncode, out.strip(), key))
            continue
        line = int(m.group("line"))
        lines = text.splitlines()
        if leaf and not (1 <= line <= len(lines) and leaf in lines[line - 1]):
            problems.append("%s: line %d is %r, which does not hold %r (%r)" % (
                what, line, lines[line - 1] if 1 <= line <= len(lines) else None, leaf,
                out.strip()))
        if what == "missing state_dir" and "state_dir" not in m.group("key") + m.group("msg"):
            problems.append("%s: the message does not name state_dir: %r" % (what, out))
    eq(problems, [], "rejections")


# ---- 10. notifications -----------------------------------------------------------------

class Receiver:
    """A notification receiver: POSTed JSON bodies, in arrival order."""

    def __init__(self):
        got = self.got = []
        lock = self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                with lock:
                    got.append((self.path, self.headers.get("Content-Type"), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d/hook" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self):
        with self.lock:
            return list(self.got)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@cases.case("notify_url: every event POSTed as JSON (route, rollout, event, state, stage, "
            "percent, reason, verdict, at); a receiver that is down does not stop the rollout")
def _():
    rec = Receiver()
    try:
        with case_run("notify") as run:
            run.start(run.doc({"blue": 100, "green": 0, "canary": 0}, rollout=rollout_block(
                stage_list=stages((50, "1s"), (100, "1s")), notify_url=rec.url)))
            load = run.load(rate=200, threads=4)
            ro = run.wait(lambda ro: ro["state"] == "complete", 15, "complete")
            got = wait_until(lambda: (lambda b: b if len(b) >= len(ro["history"]) else None)(
                rec.bodies()), 10, "%d notifications" % len(ro["history"]))
            load.stop()
            posted = []
            for path, ctype, body in got:
                eq(path, "/hook", "notification path")
                j = json.loads(body)
                missing = {"route", "rollout", "event", "state", "stage", "percent",
                           "reason", "verdict", "at"} - set(j)
                eq(sorted(missing), [], "keys missing in notification %r" % j)
                posted.append(j)
            eq([(j["route"], j["rollout"]) for j in posted], [("main", "r1")] * len(posted),
               "(route, rollout) of the notifications")
            eq([(j["event"], j["state"], j["stage"], j["percent"], j["reason"], j["verdict"],
                 j["at"]) for j in posted],
               [(h["event"], h["state"], h["stage"], h["percent"], h["reason"], h["verdict"],
                 h["at"]) for h in ro["history"]], "notifications vs history")
            eq([e for e in events(ro) if e != "hold"], ["start", "advance", "complete"],
               "history events")
    finally:
        rec.stop()
    # A receiver that is down: the rollout goes on as fast; the failures are counted.
    with case_run("notify-down") as run:
        run.start(run.doc({"blue": 100, "green": 0, "canary": 0}, rollout=rollout_block(
            stage_list=stages((50, "1s"), (100, "1s")),
            notify_url="http://%s/hook" % dead_address())))
        load = run.load(rate=200, threads=4)
        ro = run.wait(lambda ro: ro["state"] == "complete", 15,
                      "complete with the receiver down")
        eq([e for e in events(ro) if e != "hold"], ["start", "advance", "complete"],
           "history events")
        load.stop()
        no_errors(load)

        def failures():
            m = run.metrics()
            return sum(v for (name, labels), v in m.items()
                       if name == "switchyard_rollout_notify_failures_total") or None
        wait_until(failures, 15, "switchyard_rollout_notify_failures_total > 0", interval=0.25)


# ---- main --------------------------------------------------------------------------------

def main():
    S.ctl = ctl_binary()
    with Env(cases) as env:
        S.env = env
        S.ups = {"blue": env.upstream("blue"), "green": env.upstream("green"),
                 "canary": env.upstream("canary"),
                 "canary_err": env.upstream("canary_err", args=["--error-percent", "10"]),
                 "canary_slow": env.upstream("canary_slow", args=["--delay-ms", "200"])}
        cases.run()
    cases.exit()


if __name__ == "__main__":
    main()
