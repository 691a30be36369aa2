#!/usr/bin/env python3
"""Observability (SPEC §7): metrics that equal what clients saw, the JSON access log and its
reopen on SIGUSR1, /status after a reload."""

import json
import os
import re
import signal
import urllib.request
from collections import Counter
from types import SimpleNamespace

from harness import Cases, Client, Env, config_doc, dump_toml, eq, expect, free_port, route, \
    wait_until

cases = Cases("observability")
S = SimpleNamespace()
WEIGHTS = {"blue": 50, "green": 30, "canary": 20}
REQUESTS = 400
FIELDS = ["ts", "client", "method", "host", "path", "status", "bytes_out", "duration_ms",
          "route", "variant", "upstream", "request_id", "shadow", "protocol",
          "country"]


def admin(path, method="GET"):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (S.admin_port, path), method=method)
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.read().decode()


def metrics():
    """{(name, frozenset(labels)): value} from /metrics."""
    out = {}
    for line in admin("/metrics").splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        expect(m is not None, "unparsable metrics line %r" % line)
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def metric(ms, name, **labels):
    return ms.get((name, frozenset(labels.items())), 0.0)


def log_lines(path):
    try:
        text = open(path).read()
    except FileNotFoundError:
        return []
    return [l for l in text.split("\n")[:-1] if l]


@cases.case("%d requests: requests_total and the histogram's _count per variant equal what "
            "clients saw" % REQUESTS)
def _():
    seen = Counter()
    with Client(S.env.proxy.port) as c:
        for i in range(REQUESTS):
            # Every tenth request gets a 500 from its upstream: a 5xx row to check too.
            target = "/status?code=500" if i % 10 == 0 else "/obs/%d" % i
            r = c.request("GET", target, headers=[("X-User-Id", "u%d" % i)])
            variant = r.header("X-Switchyard-Variant")
            expect(variant in WEIGHTS, "variant header %r" % variant)
            seen[(variant, "%dxx" % (r.status // 100))] += 1
    S.seen = seen
    ms = metrics()
    for variant in WEIGHTS:
        total = 0
        for code in ("2xx", "5xx"):
            got = metric(ms, "switchyard_requests_total", route="obs", variant=variant, code=code)
            eq(got, seen[(variant, code)], "requests_total{%s,%s}" % (variant, code))
            total += seen[(variant, code)]
        eq(metric(ms, "switchyard_request_duration_seconds_count", route="obs", variant=variant),
           total, "duration histogram _count{%s}" % variant)
        eq(metric(ms, "switchyard_request_duration_seconds_bucket", route="obs", variant=variant,
                  le="+Inf"), total, "+Inf bucket{%s}" % variant)
    print("     client-observed: %s" % dict(sorted(seen.items())))


@cases.case("access log: one valid JSON line per request with every field, matching the "
            "responses")
def _():
    expect(hasattr(S, "seen"), "depends on the first case")
    wait_until(lambda: len(log_lines(S.log_path)) >= REQUESTS, 5, "%d access-log lines" % REQUESTS)
    lines = log_lines(S.log_path)
    eq(len(lines), REQUESTS, "access-log lines")
    logged = Counter()
    for line in lines:
        rec = json.loads(line)
        missing = [f for f in FIELDS if f not in rec]
        eq(missing, [], "fields missing in %s" % line[:200])
        eq(rec["route"], "obs", "route")
        eq(rec["method"], "GET", "method")
        eq(rec["client"], "127.0.0.1", "client")
        expect(rec["bytes_out"] > 0 and rec["duration_ms"] >= 0, "sizes in %s" % line[:200])
        expect(len(rec["request_id"]) == 32, "generated request id in %s" % line[:200])
        expect(rec["upstream"].startswith("127.0.0.1:"), "upstream in %s" % line[:200])
        logged[(rec["variant"], "%dxx" % (rec["status"] // 100))] += 1
    eq(dict(logged), dict(S.seen), "(variant, status class) counts in the log")


@cases.case("SIGUSR1 reopens the access log after a rename (log rotation)")
def _():
    rotated = S.log_path + ".1"
    os.rename(S.log_path, rotated)
    before = len(log_lines(rotated))
    S.env.proxy.proc.send_signal(signal.SIGUSR1)
    # The writer reopens at its next wake-up; requests after the signal go to the new file.
    wait_until(lambda: "reopening the access log" in S.env.proxy.log_path.read_text(), 5,
               "the proxy to log the reopen")
    with Client(S.env.proxy.port) as c:
        for i in range(5):
            eq(c.request("GET", "/rotated/%d" % i, headers=[("X-User-Id", "r%d" % i)]).status,
               200, "status")
    wait_until(lambda: len(log_lines(S.log_path)) >= 5, 5, "5 lines in the new file")
    eq(len(log_lines(S.log_path)), 5, "lines in the reopened file")
    eq(len(log_lines(rotated)), before, "lines in the rotated file (unchanged)")
    expect(all("/rotated/" in l for l in log_lines(S.log_path)), "new file holds the new lines")


@cases.case("/metrics: switchyard_access_log_dropped_lines_total is a counter, 0 while the "
            "writer keeps up")
def _():
    text = admin("/metrics")
    expect("# TYPE switchyard_access_log_dropped_lines_total counter" in text.splitlines(),
           "no '# TYPE switchyard_access_log_dropped_lines_total counter' line in /metrics")
    eq(metric(metrics(), "switchyard_access_log_dropped_lines_total"), 0.0,
       "dropped lines after every request above was logged")
    expect(("switchyard_access_log_dropped_lines_total", frozenset()) in metrics(),
           "the counter has no sample")


@cases.case("/status reflects a reload: generation and weights")
def _():
    status = json.loads(admin("/status"))
    eq(status["routes"][0]["weights"], {k: float(v) for k, v in WEIGHTS.items()}, "weights")
    generation = status["generation"]
    S.doc["routes"][0]["weights"] = {"blue": 10, "green": 0, "canary": 90}
    S.env.proxy.config_path.write_text(dump_toml(S.doc) + "\n")
    answer = json.loads(admin("/reload", method="POST"))
    eq(answer["generation"], generation + 1, "generation in the reload answer")
    status = json.loads(admin("/status"))
    eq(status["generation"], generation + 1, "generation in /status")
    eq(status["routes"][0]["weights"], {"blue": 10.0, "green": 0.0, "canary": 90.0}, "weights")
    ms = metrics()
    eq(metric(ms, "switchyard_route_weight", route="obs", variant="canary"), 90, "route_weight")
    eq(metric(ms, "switchyard_config_reloads_total", result="success"), 1, "reloads_total")


def main():
    with Env(cases) as env:
        S.env = env
        ups = {name: env.upstream(name) for name in WEIGHTS}
        S.admin_port = free_port()
        S.log_path = str(env.dir / "access.log")
        S.doc = config_doc(free_port(), pools={n: [u.addr] for n, u in ups.items()},
                           routes=[route("obs", {n: n for n in WEIGHTS}, WEIGHTS)],
                           admin_port=S.admin_port, server={"access_log": S.log_path})
        env.start_proxy(S.doc)
        cases.run()
    cases.exit()


if __name__ == "__main__":
    main()
