#!/usr/bin/env python3
"""switchyard-ctl rollout (SPEC §11 "Operator tool") against the real proxy and its rollout
engine: `rollout status` prints the rollouts and their checks as GET /rollouts has them; the
actions reach POST /rollouts/{route}/{action} with the token, the reason (it shows up in the
history) and ?to=100, and 409/404/401 answers exit 1 with the server's words; `rollout preview`
prints what the running proxy then does: keys only move into the variant as the share rises,
and a rollback gives every key back the variant it had before.

    python3 tests/integration/test_ctl_rollout.py build/proxy/switchyard build/tools/switchyard-ctl
"""

import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from harness import Cases, Client, Env, Inline, config_doc, eq, expect, free_port, route, \
    wait_until

cases = Cases("ctl_rollout")
S = SimpleNamespace()
TOKEN = "rollout-token"
ROUTE = "shop"
PLAIN = "plain"  # a route without a rollout
RID = "shop-3.1"
WEIGHTS = {"blue": 60, "green": 40, "canary": 0}
# Holds of an hour: the test moves the rollout on with promote, so every step is its own.
STAGES = [{"percent": 10, "hold": "1h"}, {"percent": 50, "hold": "1h", "gate": "manual"},
          {"percent": 100, "hold": "1h"}]
KEYS = ["user-%d" % i for i in range(400)]


def ctl_binary():
    if len(sys.argv) > 2:
        return Path(sys.argv[2])
    return Path(sys.argv[1]).resolve().parents[1] / "tools" / "switchyard-ctl" \
        if len(sys.argv) > 1 else Path("build/tools/switchyard-ctl")


def ctl(*args, timeout=60):
    p = subprocess.run([str(S.ctl)] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout)
    return SimpleNamespace(code=p.returncode, out=p.stdout, err=p.stderr)


def ctl_ok(*args):
    r = ctl(*args)
    eq(r.code, 0, "switchyard-ctl %s exit code (stderr %r)" % (" ".join(map(str, args)), r.err))
    return r.out


def admin():
    return ("--admin", "127.0.0.1:%d" % S.admin_port)


def admin_json(path):
    with Client(S.admin_port, timeout=10) as c:
        r = c.request("GET", path, host="127.0.0.1:%d" % S.admin_port)
    eq(r.status, 200, "GET %s status" % path)
    return r.json()


def rollout():
    return admin_json("/rollouts/" + ROUTE)


def doc():
    shop = route(ROUTE, {n: n for n in WEIGHTS}, WEIGHTS)
    shop["rollout"] = {
        "id": RID, "variant": "canary", "baseline": "blue",
        "stages": [Inline(st) for st in STAGES],
        "analysis": {"interval": "1s", "warmup": "0s", "min_requests": 0},
    }
    plain = route(PLAIN, {"blue": "blue"}, {"blue": 1}, host="plain.test")
    return config_doc(S.port, pools={n: [u.addr] for n, u in S.ups.items()},
                      routes=[plain, shop], admin_port=S.admin_port,
                      server={"admin_token": TOKEN, "state_dir": str(S.env.dir / "state")})


def served():
    """{key: variant} as the proxy serves KEYS now."""
    out = {}
    with Client(S.env.proxy.port) as c:
        for k in KEYS:
            r = c.request("GET", "/r", headers=[("X-User-Id", k)])
            eq(r.status, 200, "status for key %s" % k)
            out[k] = r.header("X-Switchyard-Variant")
    return out


def settled_split(percent):
    """The split once the proxy serves the rollout's share `percent`: a new share reaches the
    workers with a new generation, so poll until two samples in a row agree and the canary share
    is plausible."""
    last = [None]

    def stable():
        now = served()
        share = sum(1 for v in now.values() if v == "canary") / len(now)
        ok = now == last[0] and abs(share - percent / 100.0) <= 0.12
        last[0] = now
        return now if ok else None
    return wait_until(stable, 15, "the proxy to serve canary at %s%%" % percent, interval=0.2)


def act(*args):
    """A rollout action through switchyard-ctl with the token; the rollout afterwards."""
    ctl_ok("rollout", *args, *admin(), "--route", ROUTE, "--token", TOKEN)
    return rollout()


@cases.case("rollout status: the table and the checks of GET /rollouts")
def _():
    r = wait_until(lambda: (lambda x: x if x["state"] == "running" and x["checks"] else None)(
        rollout()), 10, "the rollout to run with checks", interval=0.1)
    out = ctl_ok("rollout", "status", *admin())
    expect(re.search(r"^  ROUTE +ROLLOUT +VARIANT +STATE +STAGE +PERCENT +SINCE +NEXT +"
                     r"SEEN/NEEDED$", out, re.M), "status header:\n" + out)
    expect(re.search(r"^  %s +%s +canary vs blue +running +1/3 +10\.00%% " % (ROUTE, RID),
                     out, re.M), "status row of %s:\n%s" % (ROUTE, out))
    expect("%s (%s): canary vs blue, running" % (ROUTE, RID) in out, "details head:\n" + out)
    expect("  stages    [10% 1h] -> 50% 1h gate -> 100% 1h\n" in out, "stage plan:\n" + out)
    for c in r["checks"]:
        expect(re.search(r"^  %s +\S+ +\S+ +\S+ +(no|FAILED) " % re.escape(c["name"]), out,
                         re.M), "check row %s:\n%s" % (c["name"], out))
    expect(re.search(r"^  \S+ +start +running +1 +10\.00% +", out, re.M),
           "the start event in the history:\n" + out)
    # Only the route asked for; a route without a rollout is a 404, exit 1.
    eq(ctl_ok("rollout", "status", *admin(), "--route", ROUTE, "--token", TOKEN).count(
        "canary vs blue, running"), 1, "status --route shop")
    res = ctl("rollout", "status", *admin(), "--route", PLAIN)
    eq(res.code, 1, "status --route plain exit code")
    expect("HTTP 404" in res.err, "status --route plain stderr %r" % res.err)


@cases.case("keys only move into canary as stages rise; abort returns every key (as preview "
            "says)")
def _():
    out = ctl_ok("rollout", "preview", S.env.proxy.config_path, "--route", ROUTE, "--keys",
                 "20000")
    expect("keys only move into canary, never out of it or between the others" in out,
           "preview:\n" + out)
    expect("every key returns to the variant it had before the rollout: 20,000 of 20,000" in out,
           "preview:\n" + out)
    expect(re.search(r"^  2 +50\.00% +1h +manual +blue=60 green=40 canary=100 ", out, re.M),
           "preview's stage 2 row:\n" + out)

    s1 = settled_split(10)
    eq(act("promote")["stage"], 2, "stage after promote")
    s2 = settled_split(50)
    r = act("promote", "--to", "100")
    eq((r["stage"], r["percent"]), (3, 100.0), "stage, percent after promote --to 100")
    s3 = settled_split(100)
    eq(act("abort")["state"], "aborted", "state after abort")
    s0 = settled_split(0)

    into = lambda a, b: [k for k in KEYS if a[k] != b[k] and b[k] != "canary"]  # noqa: E731
    eq(into(s1, s2)[:5], [], "keys that moved 10% -> 50% other than into canary")
    eq(into(s2, s3)[:5], [], "keys that moved 50% -> 100% other than into canary")
    eq(sorted(set(s3.values())), ["canary"], "variants at 100%")
    eq(sorted(set(s0.values())), ["blue", "green"], "variants after the abort")
    # A key not on canary at 10% was on its pre-rollout variant: it has it again.
    back = [k for k in KEYS if s1[k] != "canary" and s0[k] != s1[k]]
    eq(back[:5], [], "keys whose variant after the abort differs from the one before")
    print("     canary: %d%% -> %d%% -> %d%% of %d keys; abort: blue %d, green %d" % (
        100 * list(s1.values()).count("canary") // len(KEYS),
        100 * list(s2.values()).count("canary") // len(KEYS),
        100 * list(s3.values()).count("canary") // len(KEYS), len(KEYS),
        list(s0.values()).count("blue"), list(s0.values()).count("green")))
    r = act("retry")
    eq((r["state"], r["stage"]), ("running", 1), "state, stage after retry")


@cases.case("actions: token, reason, 409 and 404 answers")
def _():
    # Without the token: 401, exit 1, and the rollout is untouched.
    res = ctl("rollout", "pause", *admin(), "--route", ROUTE)
    eq(res.code, 1, "pause without --token exit code")
    expect("needs an admin token (--token)" in res.err, "stderr %r" % res.err)
    eq(rollout()["state"], "running", "state after a refused pause")

    reason = "checking the \"checkout\" dashboards"
    out = ctl_ok("rollout", "pause", *admin(), "--route", ROUTE, "--token", TOKEN, "--reason",
                 reason)
    expect(out.startswith("%s (%s): paused, stage 1/3, 10.00%% of traffic to canary" % (
        ROUTE, RID)), "pause output %r" % out)
    last = rollout()["history"][-1]
    eq((last["event"], last["state"], last["reason"]), ("pause", "paused", reason),
       "the newest event records the reason")

    res = ctl("rollout", "pause", *admin(), "--route", ROUTE, "--token", TOKEN)
    eq(res.code, 1, "pause while paused exit code")
    expect("pause is not allowed now (HTTP 409)" in res.err, "stderr %r" % res.err)
    expect(re.search(r"\ncannot pause\b", res.err), "the server's error in %r" % res.err)
    eq(res.out, "", "stdout of a refused pause")

    out = ctl_ok("rollout", "resume", *admin(), "--route", ROUTE, "--token", TOKEN)
    expect("): running, stage 1/3," in out, "resume output %r" % out)

    for route_name in (PLAIN, "nope"):
        res = ctl("rollout", "abort", *admin(), "--route", route_name, "--token", TOKEN)
        eq(res.code, 1, "abort on %s exit code" % route_name)
        expect("no rollout on route \"%s\" (HTTP 404)" % route_name in res.err,
               "stderr %r" % res.err)
    eq(rollout()["state"], "running", "state after the 404s")

    res = ctl("rollout", "resume", *admin(), "--route", ROUTE, "--to", "100", "--token", TOKEN)
    eq(res.code, 2, "resume --to 100 is a usage error")
    events = [e["event"] for e in rollout()["history"]]
    eq(events[-2:], ["pause", "resume"], "the newest events")


@cases.case("rollout preview: a route without a rollout, or no such route, exits 1")
def _():
    res = ctl("rollout", "preview", S.env.proxy.config_path, "--route", PLAIN)
    eq(res.code, 1, "preview --route plain exit code")
    expect("has no rollout" in res.err, "stderr %r" % res.err)
    res = ctl("rollout", "preview", S.env.proxy.config_path, "--route", "nope")
    eq(res.code, 1, "preview --route nope exit code")
    expect("no route named \"nope\"" in res.err, "stderr %r" % res.err)
    # Same seed, same numbers; the first seed's numbers differ from another's.
    a = ctl_ok("rollout", "preview", S.env.proxy.config_path, "--route", ROUTE, "--keys", "5000")
    eq(ctl_ok("rollout", "preview", S.env.proxy.config_path, "--route", ROUTE, "--keys", "5000",
              "--seed", "1"), a, "preview with the default seed 1")
    expect(ctl_ok("rollout", "preview", S.env.proxy.config_path, "--route", ROUTE, "--keys",
                  "5000", "--seed", "2") != a, "another seed, other keys")


def main():
    S.ctl = ctl_binary()
    with Env(cases) as env:
        S.env = env
        if not S.ctl.exists():
            raise RuntimeError("switchyard-ctl binary %s does not exist" % S.ctl)
        S.ups = {name: env.upstream(name) for name in WEIGHTS}
        S.port = free_port()
        S.admin_port = free_port()
        env.start_proxy(doc())
        wait_until(lambda: admin_json("/rollouts") != [], 10, "GET /rollouts to list the rollout")
        cases.run()
    cases.exit()


if __name__ == "__main__":
    main()
