#!/usr/bin/env python3
"""Traffic split (SPEC §4.3): 2,000 keys over blue/green/canary at 50/30/20 — sticky, near
the weights, and the variant header names the upstream that answered."""

from collections import Counter
from types import SimpleNamespace

from harness import Cases, Client, Env, config_doc, eq, expect, free_port, header_of, \
    parallel, route

cases = Cases("split")
S = SimpleNamespace()
KEYS = ["user-%d" % i for i in range(2000)]
WEIGHTS = {"blue": 50, "green": 30, "canary": 20}
TOLERANCE_POINTS = 4.0  # 2,000 keys: one sigma is at most ~1.1 points


def assign(keys):
    """One pass over keys on one keep-alive connection: {key: (variant header, X-Upstream)}."""
    out = {}
    c = Client(S.env.proxy.port)
    try:
        for k in keys:
            r = c.request("GET", "/split?k=" + k, headers=[("X-User-Id", k)])
            if r.status != 200:
                raise AssertionError("key %s: status %d %r" % (k, r.status, r.body[:200]))
            out[k] = (r.header("X-Switchyard-Variant"), r.header("X-Upstream"))
            if c.eof:
                c.close()
                c = Client(S.env.proxy.port)
    finally:
        c.close()
    return out


def run_pass():
    result = {}
    for part in parallel(assign, KEYS, threads=8):
        result.update(part)
    return result


@cases.case("first pass: every response's X-Switchyard-Variant equals the answering upstream")
def _():
    S.first = run_pass()
    bad = [(k, v) for k, v in S.first.items() if v[0] != v[1]]
    eq(bad[:5], [], "keys whose variant header differs from X-Upstream (first 5 of %d)"
       % len(bad))


@cases.case("shares within %.0f points of the weights 50/30/20" % TOLERANCE_POINTS)
def _():
    expect(hasattr(S, "first"), "depends on the first pass, which failed")
    counts = Counter(v[1] for v in S.first.values())
    shares = {name: 100.0 * counts.get(name, 0) / len(KEYS) for name in WEIGHTS}
    off = {n: round(shares[n], 2) for n in WEIGHTS
           if abs(shares[n] - WEIGHTS[n]) > TOLERANCE_POINTS}
    eq(off, {}, "variants off their weight (shares %s)" % {n: round(s, 2)
                                                          for n, s in shares.items()})
    print("     shares: %s" % ", ".join("%s %.1f%%" % (n, shares[n]) for n in WEIGHTS))


@cases.case("second pass: every key is sticky (same variant again)")
def _():
    expect(hasattr(S, "first"), "depends on the first pass, which failed")
    second = run_pass()
    moved = [(k, S.first[k][1], second[k][1]) for k in KEYS if second[k][1] != S.first[k][1]]
    eq(moved[:5], [], "keys that changed variant (first 5 of %d)" % len(moved))
    bad = [(k, v) for k, v in second.items() if v[0] != v[1]]
    eq(bad[:5], [], "second pass: variant header differs from X-Upstream")


@cases.case("each upstream received X-Switchyard-Variant naming itself")
def _():
    for name, u in S.ups.items():
        recs = u.find(lambda rec: rec["target"].startswith("/split"))
        wrong = [header_of(rec, "X-Switchyard-Variant") for rec in recs
                 if header_of(rec, "X-Switchyard-Variant") != name]
        eq(wrong[:5], [], "variant headers at upstream %s (first 5 of %d)" % (name, len(wrong)))


@cases.case("override X-Canary: 1 forces canary for keys that hash elsewhere")
def _():
    expect(hasattr(S, "first"), "depends on the first pass, which failed")
    keys = [k for k in KEYS if S.first[k][1] != "canary"][:20]
    with Client(S.env.proxy.port) as c:
        for k in keys:
            r = c.request("GET", "/forced", headers=[("X-User-Id", k), ("X-Canary", "1")])
            eq(r.status, 200, "status")
            eq(r.header("X-Upstream"), "canary", "X-Upstream of key %s with X-Canary: 1" % k)
            eq(r.header("X-Switchyard-Variant"), "canary", "variant of key %s" % k)


@cases.case("override regex is a full match (X-Canary: 10 does not force canary)")
def _():
    expect(hasattr(S, "first"), "depends on the first pass, which failed")
    k = next(k for k in KEYS if S.first[k][1] == "blue")
    with Client(S.env.proxy.port) as c:
        r = c.request("GET", "/not-forced", headers=[("X-User-Id", k), ("X-Canary", "10")])
    eq(r.header("X-Upstream"), "blue", "X-Upstream of a blue key with X-Canary: 10")


@cases.case("a request without the key header is still served (fallback random)")
def _():
    with Client(S.env.proxy.port) as c:
        for _i in range(10):
            r = c.request("GET", "/nokey")
            eq(r.status, 200, "status")
            expect(r.header("X-Upstream") in WEIGHTS, "X-Upstream %r" % r.header("X-Upstream"))
            eq(r.header("X-Switchyard-Variant"), r.header("X-Upstream"), "variant header")


def main():
    with Env(cases) as env:
        S.env = env
        S.ups = {name: env.upstream(name) for name in WEIGHTS}
        env.start_proxy(config_doc(
            free_port(),
            pools={name: [u.addr] for name, u in S.ups.items()},
            routes=[route("split", {n: n for n in WEIGHTS}, WEIGHTS,
                          overrides=[{"header": "X-Canary", "regex": "^(1|true|yes)$",
                                      "variant": "canary"}])]))
        cases.run()
    cases.exit()


if __name__ == "__main__":
    main()
