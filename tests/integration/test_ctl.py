#!/usr/bin/env python3
"""switchyard-ctl (SPEC §8) against the real proxy: `explain` names the same variant the running
proxy serves (X-Switchyard-Variant) for every key, override and route tried, and the same shadow
sample the proxy mirrors; `check` reports what `switchyard --check` reports; `status` and
`reload` talk to the admin endpoint.

    python3 tests/integration/test_ctl.py build/proxy/switchyard build/tools/switchyard-ctl
"""

import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from harness import Cases, Client, Env, HOST, config_doc, dump_toml, eq, expect, free_port, \
    header_of, route, wait_until

cases = Cases("ctl")
S = SimpleNamespace()
TOKEN = "ctl-test-token"
WEIGHTS = {"blue": 50, "green": 30, "canary": 20}
SHADOW_PERCENT = 40
COOKIE_HOST = "cookie.test"
# 200 keys of different shapes: ids, UUID-like, e-mail, punctuation, long.
KEYS = (["user-%d" % i for i in range(120)]
        + ["%08x-4c3e-9a1b-%012x" % (i * 2654435761 % 2**32, i) for i in range(40)]
        + ["person%d@example.com" % i for i in range(20)]
        + ["k/%d+x=y.%d" % (i, i * i) for i in range(15)]
        + ["long-" + "x" * (300 + i) for i in range(5)])


def ctl_binary():
    """argv[2] (meson passes switchyard_ctl_exe.full_path()), else next to the proxy's build."""
    if len(sys.argv) > 2:
        return Path(sys.argv[2])
    return Path(sys.argv[1]).resolve().parents[1] / "tools" / "switchyard-ctl" \
        if len(sys.argv) > 1 else Path("build/tools/switchyard-ctl")


def ctl(*args, timeout=30):
    p = subprocess.run([str(S.ctl)] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout)
    return SimpleNamespace(code=p.returncode, out=p.stdout, err=p.stderr)


def explain(*args):
    """(variant, shadow line) from switchyard-ctl explain's output."""
    r = ctl("explain", S.env.proxy.config_path, *args)
    eq(r.code, 0, "switchyard-ctl explain %s exit code (stderr %r)" % (" ".join(args), r.err))
    m = re.search(r"^variant  (\S+)$", r.out, re.M)
    expect(m is not None, "no 'variant' line in explain's output:\n" + r.out)
    shadow = re.search(r"^shadow   (.*)$", r.out, re.M)
    return m.group(1), shadow.group(1) if shadow else None


def explained_variant(*args):
    return explain(*args)[0]


def served_variant(client, host, headers, path="/ctl"):
    r = client.request("GET", path, host=host, headers=headers)
    eq(r.status, 200, "status")
    eq(r.header("X-Switchyard-Variant"), r.header("X-Upstream"), "variant header vs upstream")
    return r.header("X-Switchyard-Variant")


def doc(weights, admin_port):
    web = route("web", dict({n: n for n in WEIGHTS}, shadow="shadow"), weights,
                key=("header:X-User-Id", "cookie:session"), shadow={"percent": SHADOW_PERCENT},
                overrides=[{"header": "X-Canary", "regex": "^(1|true|yes)$",
                            "variant": "canary"},
                           {"cookie": "beta", "regex": "on", "variant": "green"}])
    # A second route with a cookie key and its own salt, picked by Host.
    shop = route("cookies", {n: n for n in WEIGHTS}, {"blue": 10, "green": 10, "canary": 80},
                 host=COOKIE_HOST, key=("cookie:sid",), salt="pepper")
    pools = {n: [u.addr] for n, u in S.ups.items()}
    pools["shadow"] = [S.shadow.addr]
    return config_doc(S.port, pools=pools,
                      routes=[shop, web], admin_port=admin_port,
                      server={"admin_token": TOKEN})


def agree(keys, route_args, host, make_headers):
    """Returns the keys where explain and the proxy disagree, as (key, explain, proxy)."""
    bad = []
    with Client(S.env.proxy.port) as c:
        for k in keys:
            want = explained_variant(*route_args(k))
            got = served_variant(c, host, make_headers(k))
            if want != got:
                bad.append((k[:40], want, got))
    return bad


@cases.case("explain agrees with the proxy for 200 header keys: variant and shadow sample")
def _():
    bad = []
    predicted = set()
    with Client(S.env.proxy.port) as c:
        for k in KEYS:
            variant, shadow = explain("--route", "web", "--key", k)
            got = served_variant(c, HOST, [("X-User-Id", k)], path="/ctl-shadow")
            if variant != got:
                bad.append((k[:40], variant, got))
            expect(shadow and shadow.split(":")[0] in ("mirrored", "not mirrored"),
                   "shadow line for key %s: %r" % (k, shadow))
            if shadow.startswith("mirrored:"):
                predicted.add(k)
    eq(bad[:5], [], "keys where explain and the proxy disagree (first 5 of %d)" % len(bad))
    expect(0 < len(predicted) < len(KEYS), "explain mirrors %d of %d keys at %d%%"
           % (len(predicted), len(KEYS), SHADOW_PERCENT))

    # Mirroring is asynchronous: poll the shadow's log until as many copies as explain
    # predicted have arrived, then compare the sets of keys.
    def mirrored():
        return {header_of(rec, "X-User-Id") for rec in S.shadow.records()
                if rec["target"] == "/ctl-shadow"}
    try:
        wait_until(lambda: len(mirrored()) >= len(predicted), 10,
                   "%d mirrored requests" % len(predicted))
    except TimeoutError:
        pass  # the comparison below says which keys are missing
    got = mirrored()
    eq(sorted(k[:40] for k in predicted - got)[:5], [],
       "keys explain says are mirrored that the shadow did not receive (of %d)"
       % len(predicted - got))
    eq(sorted(k[:40] for k in got - predicted)[:5], [],
       "keys the shadow received that explain says are not mirrored (of %d)"
       % len(got - predicted))


@cases.case("explain agrees for cookie keys on a salted route picked by --host/--path")
def _():
    keys = ["sess-%d" % i for i in range(60)]
    bad = agree(keys, lambda k: ("--host", COOKIE_HOST, "--path", "/ctl", "--key", k),
                COOKIE_HOST, lambda k: [("Cookie", "sid=" + k)])
    eq(bad[:5], [], "keys where explain and the proxy disagree (first 5 of %d)" % len(bad))
    seen = {explained_variant("--route", "cookies", "--key", k) for k in keys}
    expect(len(seen) > 1, "60 keys at 10/10/80 all on %s" % seen)


@cases.case("explain agrees on overrides and on the second key source")
def _():
    with Client(S.env.proxy.port) as c:
        for k in KEYS[:15]:
            eq(explained_variant("--route", "web", "--key", k, "--header", "X-Canary: yes"),
               served_variant(c, HOST, [("X-User-Id", k), ("X-Canary", "yes")]),
               "header override, key %s" % k)
            eq(explained_variant("--route", "web", "--key", k, "--cookie", "beta=on"),
               served_variant(c, HOST, [("X-User-Id", k), ("Cookie", "beta=on")]),
               "cookie override, key %s" % k)
            eq(explained_variant("--route", "web", "--cookie", "session=" + k),
               served_variant(c, HOST, [("Cookie", "session=" + k)]),
               "second key source (cookie session), key %s" % k)
    out = ctl("explain", S.env.proxy.config_path, "--route", "web", "--key", "a",
              "--header", "X-Canary: yes").out
    expect("routes[1].override[0] matched" in out, "override named in:\n" + out)


@cases.case("check: the running config is ok; a bad file exits 1 with file:line:col like --check")
def _():
    r = ctl("check", S.env.proxy.config_path)
    eq((r.code, r.out), (0, "%s: ok\n" % S.env.proxy.config_path), "check on the running config")
    bad = Path(S.env.dir) / "bad.toml"
    text = dump_toml(doc(WEIGHTS, None)).replace("canary = 20", "canary = -5")
    expect(text.count("canary = -5") == 1, "the test could not plant the bad weight")
    bad.write_text(text + "\n")
    line = next(i for i, l in enumerate(text.splitlines(), 1) if l == "canary = -5")
    r = ctl("check", bad)
    eq(r.code, 1, "exit code of check on a bad file")
    eq(r.out, "", "stdout of check on a bad file")
    expect(re.search(r"^%s:%d:\d+: routes\[1\]\.weights\.canary: " % (re.escape(str(bad)), line),
                     r.err, re.M), "error with file:line:col, got %r" % r.err)
    proxy_check = subprocess.run([str(S.env.proxy.binary), "--check", "--config", str(bad)],
                                 capture_output=True, text=True, timeout=30)
    eq((r.code, r.err), (proxy_check.returncode, proxy_check.stderr),
       "switchyard-ctl check vs switchyard --check")


@cases.case("status prints the version, generation, routes with weights and pools")
def _():
    r = ctl("status", "--admin", "127.0.0.1:%d" % S.admin_port)
    eq(r.code, 0, "exit code (stderr %r)" % r.err)
    expect(re.search(r"^generation  \d+ \(loaded \d{4}-\d\d-\d\dT", r.out, re.M),
           "generation line in:\n" + r.out)
    expect(re.search(r"^config      .*switchyard\.toml$", r.out, re.M), "config line in:\n" + r.out)
    for line in (r"web\s+blue\s+blue\s+50\s+50\.00%", r"green\s+green\s+30\s+30\.00%",
                 r"cookies\s+blue\s+blue\s+10\s+10\.00%"):
        expect(re.search(line, r.out), "no line matching %r in:\n%s" % (line, r.out))
    for name, u in S.ups.items():
        expect(re.search(r"^  %s\s+%s\s+healthy\b" % (name, re.escape(u.addr)), r.out, re.M),
               "pool %s with %s healthy in:\n%s" % (name, u.addr, r.out))
    S.generation = int(re.search(r"^generation  (\d+)", r.out, re.M).group(1))


@cases.case("reload: refused without the token, applied with it; explain agrees afterwards")
def _():
    admin = "127.0.0.1:%d" % S.admin_port
    S.env.proxy.config_path.write_text(
        dump_toml(doc({"blue": 20, "green": 0, "canary": 75}, S.admin_port)) + "\n")
    r = ctl("reload", "--admin", admin)
    eq(r.code, 1, "reload without --token")
    expect("admin token" in r.err, "stderr names the token: %r" % r.err)

    r = ctl("reload", "--admin", admin, "--token", TOKEN)
    eq(r.code, 0, "reload with --token (stderr %r)" % r.err)
    expect(re.search(r'"generation"\s*:\s*%d' % (S.generation + 1), r.out),
           "the answer body with the new generation, got %r" % r.out)
    st = ctl("status", "--admin", admin).out
    expect(re.search(r"web\s+blue\s+blue\s+20\s+21\.05%", st), "new weights in:\n" + st)
    expect(re.search(r"^generation  %d " % (S.generation + 1), st, re.M),
           "new generation in:\n" + st)
    bad = agree(KEYS[:60], lambda k: ("--route", "web", "--key", k), HOST,
                lambda k: [("X-User-Id", k)])
    eq(bad[:5], [], "keys where explain and the reloaded proxy disagree")


@cases.case("reload of an invalid file exits 1 with the error; the proxy keeps serving")
def _():
    admin = "127.0.0.1:%d" % S.admin_port
    text = dump_toml(doc({"blue": 20, "green": 0, "canary": 75}, S.admin_port))
    S.env.proxy.config_path.write_text(text.replace("canary = 75", "canary = -1") + "\n")
    r = ctl("reload", "--admin", admin, "--token", TOKEN)
    eq(r.code, 1, "exit code")
    expect("HTTP 400" in r.err and "routes[1].weights.canary" in r.err,
           "stderr with the status and the error, got %r" % r.err)
    S.env.proxy.config_path.write_text(text + "\n")
    with Client(S.env.proxy.port) as c:
        eq(served_variant(c, HOST, [("X-User-Id", "still-up")]),
           explained_variant("--route", "web", "--key", "still-up"), "variant after the failure")


@cases.case("status/reload against a closed port exit 1 with a clear message")
def _():
    dead = free_port()
    for cmd in (("status",), ("reload", "--token", "x")):
        r = ctl(*cmd, "--admin", "127.0.0.1:%d" % dead)
        eq(r.code, 1, "%s exit code" % cmd[0])
        expect("cannot connect" in r.err, "%s stderr: %r" % (cmd[0], r.err))


@cases.case("simulate on the running config prints every variant and the moves")
def _():
    r = ctl("simulate", S.env.proxy.config_path, "--route", "web", "--keys", "20000",
            "--weights", "blue=20,canary=85")
    eq(r.code, 0, "exit code (stderr %r)" % r.err)
    expect("canary -> blue" not in r.out and "UNEXPECTED" not in r.out,
           "only moves into canary:\n" + r.out)
    expect(re.search(r"^  (blue|green) -> canary: [\d,]+ ", r.out, re.M), "moves in:\n" + r.out)


def main():
    S.ctl = ctl_binary()
    with Env(cases) as env:
        S.env = env
        if not S.ctl.exists():
            raise RuntimeError("switchyard-ctl binary %s does not exist" % S.ctl)
        S.ups = {name: env.upstream(name) for name in WEIGHTS}
        S.shadow = env.upstream("shadow")
        S.port = free_port()
        S.admin_port = free_port()
        env.start_proxy(doc(WEIGHTS, S.admin_port))
        cases.run()
    cases.exit()


if __name__ == "__main__":
    main()
