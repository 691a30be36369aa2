#!/usr/bin/env python3
"""Routing (SPEC §3 routes keys, §4): host/path matching and 404, each override kind, cookie
keys, assign_cookie stickiness, failover (connect refused and active health checks), and
several processes agreeing on every key.

Every case asserts what the client got and what the upstream received: requests carry a unique
X-Request-Id, which the echo upstreams log, so a case can tell which upstream (if any) saw it."""

import itertools
import json
import os
import re
import socket
import time
from collections import Counter
from types import SimpleNamespace

from harness import Cases, Client, Env, Inline, Proxy, Upstream, can_connect, \
    config_doc, eq, expect, free_port, header_of, parallel, route, wait_until

cases = Cases("routing")
S = SimpleNamespace()
VARIANTS = ("blue", "green", "canary")
SPLIT = {"blue": 50, "green": 30, "canary": 20}
ROUTE_UPSTREAMS = ("shop", "shopall", "wild", "first", "second", "search")
SET_COOKIE_RE = re.compile(r"^sy_id=([^;\s]+); Path=/; HttpOnly; SameSite=Lax$")


# ---- helpers of this file ----------------------------------------------------------------

class ReservedPort:
    """A 127.0.0.1 port bound without listen(): connecting is refused, and nothing else can
    take the port until release() hands it to the server that 'comes back'."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port

    def release(self):
        if self.sock:
            self.sock.close()
            self.sock = None


def ipv6_loopback():
    """None if [::1] can listen and be connected to, else the reason it cannot."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
            s.listen(1)
            with socket.create_connection(("::1", s.getsockname()[1]), timeout=1):
                pass
        return None
    except OSError as e:
        return "no IPv6 loopback in this sandbox (%s)" % e


_rid = itertools.count(1)


def send(host, target, headers=(), client=None, family=4, port=None):
    """One request with a fresh X-Request-Id. Returns (response, request id)."""
    rid = "rt-%d-%d" % (os.getpid(), next(_rid))
    hdrs = list(headers) + [("X-Request-Id", rid)]
    if client is not None:
        return client.request("GET", target, host=host, headers=hdrs), rid
    if family == 6:
        c = Client(S.port6, host="::1")
    else:
        c = Client(port or S.env.proxy.port)
    try:
        return c.request("GET", target, host=host, headers=hdrs), rid
    finally:
        c.close()


def complete_records(u):
    """u's log records, ignoring a last line still being written: other threads' requests
    may be logged while we read (harness.Upstream.records() would fail on the partial line)."""
    try:
        text = u.log_path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]


def seen_by(rid):
    """[(upstream name, record)] of every upstream that logged request rid (records are
    flushed before the upstream answers, so after the response this is complete)."""
    return [(u.name, rec) for u in S.env.upstreams for rec in complete_records(u)
            if header_of(rec, "X-Request-Id") == rid]


def served(what, resp, rid, upstream, variant, target=None):
    """Asserts a 200 from `upstream` as `variant`, and that exactly that upstream received the
    request once, with the variant header (and the target, when given). Returns the record."""
    eq(resp.status, 200, "%s: status (body %r)" % (what, resp.body[:120]))
    eq(resp.header("X-Upstream"), upstream, "%s: X-Upstream" % what)
    eq(resp.header("X-Switchyard-Variant"), variant, "%s: X-Switchyard-Variant" % what)
    seen = seen_by(rid)
    eq([name for name, _ in seen], [upstream], "%s: upstreams that received it" % what)
    rec = seen[0][1]
    eq(header_of(rec, "X-Switchyard-Variant"), variant,
       "%s: X-Switchyard-Variant at the upstream" % what)
    if target is not None:
        eq(rec["target"], target, "%s: target at the upstream" % what)
    return rec


def not_found(what, resp, rid):
    eq(resp.status, 404, "%s: status (X-Upstream %r)" % (what, resp.header("X-Upstream")))
    expect(0 < len(resp.body) <= 200, "%s: 404 body should be short text, got %r"
           % (what, resp.body[:200]))
    ctype = (resp.header("Content-Type") or "").lower()
    expect(ctype.startswith("text/plain"), "%s: 404 Content-Type %r" % (what, ctype))
    eq([name for name, _ in seen_by(rid)], [], "%s: upstreams that received it" % what)


def cookies_at_upstream(rec):
    """The cookies the upstream received, parsed over all its Cookie headers (RFC 6265)."""
    out = {}
    for k, v in rec["headers"]:
        if k.lower() != "cookie":
            continue
        for pair in v.split(";"):
            name, sep, value = pair.strip().partition("=")
            if sep:
                out.setdefault(name.strip(), value.strip())
    return out


def metrics():
    with Client(S.admin_port, timeout=5) as c:
        r = c.request("GET", "/metrics", host="admin")
    eq(r.status, 200, "GET /metrics status")
    return r.body.decode()


def healthy_gauge(pool, server):
    """switchyard_upstream_healthy{pool,server} as an int, or None if absent."""
    m = re.search(r'^switchyard_upstream_healthy\{pool="%s",server="%s"\} (\d+)$'
                  % (re.escape(pool), re.escape(server)), metrics(), re.M)
    return int(m.group(1)) if m else None


def variants_of(port, keys, tag, threads=4):
    """{key: (X-Switchyard-Variant, X-Upstream)} for keys sent as X-User-Id to the proxy on
    port, on keep-alive connections, path /agree/<tag>/<key>."""
    def run(chunk):
        out = {}
        c = Client(port)
        try:
            for k in chunk:
                r = c.request("GET", "/agree/%s/%s" % (tag, k), headers=[("X-User-Id", k)])
                if r.status != 200:
                    raise AssertionError("%s key %s: status %d %r" % (tag, k, r.status,
                                                                      r.body[:200]))
                out[k] = (r.header("X-Switchyard-Variant"), r.header("X-Upstream"))
                if c.eof:
                    c.close()
                    c = Client(port)
        finally:
            c.close()
        return out
    result = {}
    for part in parallel(run, list(keys), threads=threads):
        result.update(part)
    return result


# ---- 1. host/path routing ----------------------------------------------------------------

@cases.case("host exact, upper-case and with a port; first match wins over *.example.com")
def _():
    for host in ("shop.example.com", "SHOP.Example.COM", "shop.example.com:8080",
                 "shop.example.com."):
        r, rid = send(host, "/api/items")
        served("Host %r /api/items" % host, r, rid, "shop", "blue", "/api/items")
        # r-shop and r-wild both match /api/ on shop.example.com: the first (r-shop) wins.


@cases.case("host wildcard *.example.com: a. and a.b. match; example.com, xexample.com do not")
def _():
    for host in ("a.example.com", "a.b.example.com", "A.Example.Com:443"):
        r, rid = send(host, "/anything")
        served("Host %r" % host, r, rid, "wild", "blue", "/anything")
    for host in ("example.com", "xexample.com", "example.com.evil.test", ".example.com"):
        r, rid = send(host, "/anything")
        not_found("Host %r" % host, r, rid)


@cases.case("route order beats specificity: *.order.test listed before x.order.test wins")
def _():
    r, rid = send("x.order.test", "/")
    served("Host x.order.test", r, rid, "first", "blue", "/")
    r, rid = send("y.order.test", "/")
    served("Host y.order.test", r, rid, "first", "blue", "/")


@cases.case("path regex ^/(api|cart)/ is searched on the path only, never the query")
def _():
    for target in ("/api/x", "/cart/", "/api/x?debug=1"):
        r, rid = send("shop.example.com", target)
        served("shop %s" % target, r, rid, "shop", "blue", target)
    # Not matching r-shop's path: the next route for the host (no path) takes them.
    for target in ("/x?p=/api/", "/apix/1", "/x/api/", "/API/x", "/"):
        r, rid = send("shop.example.com", target)
        served("shop %s" % target, r, rid, "shopall", "blue", target)


@cases.case("unanchored path /v2/ matches anywhere in the path, not in the query; else 404")
def _():
    for target in ("/v2/", "/a/v2/b", "/a/v2/?x=1"):
        r, rid = send("search.test", target)
        served("search.test %s" % target, r, rid, "search", "blue", target)
    for target in ("/x?p=/v2/", "/v2", "/a?/v2/"):
        r, rid = send("search.test", target)
        not_found("search.test %s" % target, r, rid)


@cases.case("no route matches: 404 with a short text/plain body, no upstream saw it")
def _():
    for host, target in (("other.test", "/"), ("example.com", "/api/x"),
                         ("shop.example.org", "/api/x"), ("[::1]:8080", "/")):
        r, rid = send(host, target)
        not_found("Host %r %s" % (host, target), r, rid)
    # The connection survives a 404: a routed request on the same socket is served.
    with Client(S.env.proxy.port) as c:
        r, rid = send("nothing.test", "/", client=c)
        not_found("keep-alive 404", r, rid)
        r, rid = send("shop.example.com", "/api/after-404", client=c)
        served("request after a 404 on the same connection", r, rid, "shop", "blue")


@cases.case("absolute-form target routes on its authority and path (RFC 9112 §3.2.2)")
def _():
    # A gateway is the origin server for its clients: it MUST ignore Host and use the target's
    # authority (RFC 9112 §3.2.2), and it sends origin-form upstream (§3.2.1), where Host
    # names the target's authority (RFC 9110 §7.2).
    for host, target, authority in (
            ("other.test", "http://shop.example.com/api/abs", "shop.example.com"),
            ("shop.example.com", "http://SHOP.example.com:8080/cart/abs?q=1",
             "SHOP.example.com:8080")):
        what = "GET %s with Host: %s" % (target, host)
        r, rid = send(host, target)
        origin_form = target[target.index("/", len("http://")):]
        rec = served(what, r, rid, "shop", "blue", origin_form)
        eq(header_of(rec, "Host"), authority, "%s: Host at the upstream" % what)


# ---- 2. overrides ------------------------------------------------------------------------

@cases.case("override header X-Beta, regex full match, to weight-0 green")
def _():
    for value in ("yes", "on"):
        r, rid = send("ovh.test", "/", headers=[("X-User-Id", "u1"), ("X-Beta", value)])
        served("X-Beta: %s" % value, r, rid, "green", "green")
    for value in ("yes!", "ayes", "YES", "", None):
        hdrs = [("X-User-Id", "u1")] + ([("X-Beta", value)] if value is not None else [])
        r, rid = send("ovh.test", "/", headers=hdrs)
        served("X-Beta: %r (no full match)" % value, r, rid, "blue", "blue")


@cases.case("override cookie beta=on|1: among several cookies, quoted, 2nd Cookie header")
def _():
    forms = [
        [("Cookie", "beta=on")],
        [("Cookie", "a=1; beta=on; b=2")],
        [("Cookie", "a=1;beta=1")],
        [("Cookie", 'beta="on"')],
        [("Cookie", "a=1"), ("Cookie", "beta=on")],
    ]
    for hdrs in forms:
        r, rid = send("ovc.test", "/", headers=hdrs)
        served("cookies %r" % hdrs, r, rid, "green", "green")
    for hdrs in ([("Cookie", "betax=on")], [("Cookie", "xbeta=on")], [("Cookie", "Beta=on")],
                 [("Cookie", "beta=onx")], [("Cookie", "a=beta=on")], [("X-Beta", "on")], []):
        r, rid = send("ovc.test", "/", headers=hdrs)
        served("cookies %r (no match)" % hdrs, r, rid, "blue", "blue")


@cases.case("override client_ip: 10.0.0.0/8 does not match 127.0.0.1, 127.0.0.0/8 does")
def _():
    r, rid = send("ovip.test", "/", headers=[("X-User-Id", "u1")])
    served("client 127.0.0.1 on ovip.test", r, rid, "canary", "canary")
    # Spoofed forwarding headers do not change the client address.
    r, rid = send("ovip.test", "/", headers=[("X-Forwarded-For", "10.1.2.3"),
                                             ("X-Real-IP", "10.1.2.3")])
    served("client 127.0.0.1 with X-Forwarded-For: 10.1.2.3", r, rid, "canary", "canary")
    # ::1/128 is not an IPv4 client.
    r, rid = send("ovip6.test", "/")
    served("client 127.0.0.1 on ovip6.test (::1/128)", r, rid, "blue", "blue")


@cases.case("override client_ip ::1/128 over IPv6 (listen [::1]:PORT)")
def _():
    if S.no_ipv6:
        print("     skipped: %s" % S.no_ipv6)
        return
    r, rid = send("ovip6.test", "/", family=6)
    served("client ::1 on ovip6.test", r, rid, "canary", "canary")
    rec = seen_by(rid)[0][1]
    eq(header_of(rec, "X-Forwarded-For"), "::1", "X-Forwarded-For at the upstream")
    # 127.0.0.0/8 and 10.0.0.0/8 do not match ::1: hashed on the key (weights blue 100).
    r, rid = send("ovip.test", "/", family=6)
    served("client ::1 on ovip.test (v4 networks)", r, rid, "blue", "blue")


@cases.case("override order: the first matching override decides")
def _():
    r, rid = send("ovo.test", "/", headers=[("X-A", "1"), ("X-B", "1")])
    served("X-A and X-B", r, rid, "green", "green")
    r, rid = send("ovo.test", "/", headers=[("X-B", "1"), ("X-A", "1")])
    served("X-B and X-A (header order does not matter)", r, rid, "green", "green")
    r, rid = send("ovo.test", "/", headers=[("X-B", "1")])
    served("X-B only", r, rid, "canary", "canary")
    r, rid = send("ovo.test", "/", headers=[("X-C", "1")])
    served("neither", r, rid, "blue", "blue")


# ---- 3. cookie keys ----------------------------------------------------------------------

@cases.case("key cookie:session: every Cookie formatting gets the plain form's variant")
def _():
    sessions = ["s%03d" % i for i in range(30)]
    plain = {}
    with Client(S.env.proxy.port) as c:
        for s in sessions:
            r, rid = send("ck.test", "/", headers=[("Cookie", "session=" + s)], client=c)
            expect(r.header("X-Upstream") in ("blue", "green"),
                   "session=%s: X-Upstream %r (status %d)" % (s, r.header("X-Upstream"),
                                                              r.status))
            plain[s] = r.header("X-Upstream")
            served("session=%s" % s, r, rid, plain[s], plain[s])
    counts = Counter(plain.values())
    expect(len(counts) == 2, "30 sessions all on one variant: %s" % dict(counts))
    with Client(S.env.proxy.port) as c:
        for s in sessions:
            forms = [
                [("Cookie", "a=1; session=%s" % s)],
                [("Cookie", "a=1;session=%s;b=2" % s)],
                [("Cookie", 'session="%s"' % s)],
                [("Cookie", "  session=%s  ; b=2" % s)],
                [("Cookie", "a=1"), ("Cookie", "session=%s" % s)],
                [("Cookie", "sessionx=zz; session=%s" % s)],
            ]
            for hdrs in forms:
                r, rid = send("ck.test", "/", headers=hdrs, client=c)
                rec = served("%r" % hdrs, r, rid, plain[s], plain[s])
                got = cookies_at_upstream(rec).get("session", "").strip('"')
                eq(got, s, "session cookie at the upstream for %r" % hdrs)


@cases.case("key cookie:session: sessionx, xsession, Session and no cookie use the fallback")
def _():
    # Fallback is canary (weight 0): a request hashed on any key would get blue or green.
    for hdrs in ([("Cookie", "sessionx=s001")], [("Cookie", "xsession=s001")],
                 [("Cookie", "Session=s001")], [("Cookie", "session=")],
                 [("X-Session", "s001")], []):
        r, rid = send("ck.test", "/", headers=hdrs)
        served("%r" % hdrs, r, rid, "canary", "canary")
        eq(r.header_all("Set-Cookie"), [], "Set-Cookie without assign_cookie")


# ---- 4. assign_cookie --------------------------------------------------------------------

def new_client_visit(c=None):
    """A client with an empty jar: returns (variant, sy_id, response)."""
    r, rid = send("ac.test", "/", client=c)
    cookies = r.header_all("Set-Cookie")
    eq(len(cookies), 1, "Set-Cookie headers on a keyless request (%r)" % cookies)
    m = SET_COOKIE_RE.match(cookies[0])
    expect(m, "Set-Cookie %r is not 'sy_id=<id>; Path=/; HttpOnly; SameSite=Lax'" % cookies[0])
    variant = r.header("X-Upstream")
    served("keyless request on ac.test", r, rid, variant, variant)
    return variant, m.group(1), r


@cases.case("assign_cookie: Set-Cookie exact; 20 replays keep the variant, no more Set-Cookie")
def _():
    variant, sid, _ = new_client_visit()
    expect(variant in VARIANTS, "first variant %r" % variant)
    jar = {"sy_id": sid}
    with Client(S.env.proxy.port) as c:
        for i in range(20):
            cookie = "; ".join("%s=%s" % kv for kv in jar.items())
            r, rid = send("ac.test", "/visit/%d" % i, headers=[("Cookie", cookie)], client=c)
            rec = served("replay %d with Cookie: %s" % (i, cookie), r, rid, variant, variant)
            eq(r.header_all("Set-Cookie"), [], "replay %d: Set-Cookie" % i)
            eq(cookies_at_upstream(rec).get("sy_id"), sid, "replay %d: sy_id at the upstream" % i)
    # A configured key source comes before sy_id: X-User-Id decides, and no cookie is set.
    def keyed(uid):
        r, rid = send("ac.test", "/", headers=[("X-User-Id", uid)])
        v = r.header("X-Upstream")
        served("X-User-Id %s" % uid, r, rid, v, v)
        eq(r.header_all("Set-Cookie"), [], "X-User-Id %s: Set-Cookie with a key present" % uid)
        return v
    uid = next(u for u in ("user-%d" % i for i in range(200)) if keyed(u) != variant)
    want = keyed(uid)
    r, rid = send("ac.test", "/", headers=[("X-User-Id", uid), ("Cookie", "sy_id=" + sid)])
    served("X-User-Id %s with sy_id=%s" % (uid, sid), r, rid, want, want)
    eq(r.header_all("Set-Cookie"), [], "Set-Cookie with a key present")


@cases.case("assign_cookie: 200 fresh clients get distinct ids and first variants ~50/30/20")
def _():
    def run(chunk):
        out = []
        with Client(S.env.proxy.port) as c:
            for _i in chunk:
                v, sid, _r = new_client_visit(c)
                out.append((v, sid))
        return out
    visits = [x for part in parallel(run, list(range(200)), threads=4) for x in part]
    ids = [sid for _v, sid in visits]
    eq(len(set(ids)), 200, "distinct sy_id values over 200 clients")
    counts = Counter(v for v, _sid in visits)
    shares = {n: 100.0 * counts.get(n, 0) / len(visits) for n in SPLIT}
    print("     first-visit shares over 200 clients: %s" %
          ", ".join("%s %.1f%%" % (n, shares[n]) for n in SPLIT))
    # 200 clients: one sigma is at most 3.5 points; 12 points is > 3.4 sigma.
    off = {n: round(shares[n], 1) for n in SPLIT if abs(shares[n] - SPLIT[n]) > 12}
    eq(off, {}, "variants off their weight by more than 12 points")


# ---- 5. failover -------------------------------------------------------------------------

@cases.case("failover=blue, canary (weight 100) refused: every request 200 from blue")
def _():
    with Client(S.env.proxy.port) as c:
        for i in range(30):
            r, rid = send("fo.test", "/fo/%d" % i, client=c)
            served("request %d to fo.test" % i, r, rid, "blue", "blue", "/fo/%d" % i)
    for i in range(10):  # fresh connections too (both workers)
        r, rid = send("fo.test", "/fo/new/%d" % i)
        served("request %d on a new connection" % i, r, rid, "blue", "blue")


@cases.case("no failover, canary refused: 502")
def _():
    for i in range(3):  # fewer than the passive-ejection threshold (5 per worker)
        r, rid = send("nofo.test", "/nofo/%d" % i)
        eq(r.status, 502, "request %d to nofo.test: status (body %r)" % (i, r.body[:120]))
        eq([name for name, _ in seen_by(rid)], [], "upstreams that received it")


@cases.case("active health check marks canary down: 503 without failover, blue with it")
def _():
    server = S.hc_port.addr
    wait_until(lambda: healthy_gauge("hc-canary", server) == 0, 10,
               "switchyard_upstream_healthy{pool=hc-canary} to be 0")
    for i in range(5):
        r, rid = send("hc.test", "/hc/%d" % i)
        eq(r.status, 503, "request %d to hc.test: status (body %r)" % (i, r.body[:120]))
        eq([name for name, _ in seen_by(rid)], [], "upstreams that received it")
        r, rid = send("fohc.test", "/fohc/%d" % i)
        served("request %d to fohc.test" % i, r, rid, "blue", "blue")


@cases.case("canary servers come back: traffic returns to canary (health and refused)")
def _():
    S.fo_port.release()
    S.hc_port.release()
    back_fo = Upstream(S.env.dir, "canary-back", port=S.fo_port.port)
    S.env.upstreams.append(back_fo)
    back_hc = Upstream(S.env.dir, "hc-back", port=S.hc_port.port)
    S.env.upstreams.append(back_hc)

    def on(host, upstream):
        r, rid = send(host, "/back")
        if r.status == 200 and r.header("X-Upstream") == upstream:
            served("%s after the server came back" % host, r, rid, upstream, "canary", "/back")
            return True
        # Meanwhile: failover to blue (fo, fohc) or 503 (hc, until the check passes).
        expect((r.status, r.header("X-Upstream")) in ((200, "blue"), (503, None)),
               "%s while the server comes back: %d X-Upstream %r" % (
                   host, r.status, r.header("X-Upstream")))
        return False
    wait_until(lambda: healthy_gauge("hc-canary", S.hc_port.addr) == 1, 10,
               "switchyard_upstream_healthy{pool=hc-canary} to be 1")
    wait_until(lambda: on("hc.test", "hc-back"), 10, "hc.test to be served by canary")
    wait_until(lambda: on("fohc.test", "hc-back"), 10, "fohc.test to be served by canary")
    # Refused connects eject a server per worker for a while (passive): poll across workers.
    wait_until(lambda: on("fo.test", "canary-back"), 25, "fo.test to be served by canary",
               interval=0.2)
    # Every worker: ten requests in a row on fresh connections, all on canary (a worker that
    # ejected the refused server keeps failing over until the ejection ends).
    wait_until(lambda: all(on("fo.test", "canary-back") for _i in range(10)), 25,
               "10 fo.test requests in a row on canary", interval=0.2)
    for host in ("hc.test", "fohc.test"):
        for _i in range(10):
            expect(on(host, "hc-back"), "%s: a request after the return not on canary" % host)


# ---- 6. several processes ----------------------------------------------------------------

@cases.case("two processes with one config agree on 1,000 keys; another salt disagrees")
def _():
    keys = ["agree-%d" % i for i in range(1000)]
    procs = []
    try:
        for tag, salt in (("p1", None), ("p2", None), ("p3", "another-salt")):
            extra = {"salt": salt} if salt else {}
            doc = config_doc(free_port(), pools={n: [S.ups[n].addr] for n in VARIANTS},
                             routes=[route("agree", {n: n for n in VARIANTS}, SPLIT, **extra)])
            d = S.env.dir / tag
            d.mkdir()
            procs.append((tag, Proxy(d, doc)))
        got = {tag: variants_of(p.port, keys, tag) for tag, p in procs}
    finally:
        for _tag, p in procs:
            p.stop()
    for tag, res in got.items():
        bad = [(k, v) for k, v in res.items() if v[0] != v[1]]
        eq(bad[:5], [], "%s: variant header differs from X-Upstream" % tag)
    differ = [k for k in keys if got["p1"][k][1] != got["p2"][k][1]]
    eq(differ[:5], [], "p1/p2 keys that disagree (first 5 of %d)" % len(differ))
    # What the upstreams received: the same key set from p1 and from p2 at each of them.
    for n in VARIANTS:
        by_tag = {}
        for rec in (r for r in complete_records(S.ups[n]) if r["target"].startswith("/agree/")):
            _e, _a, tag, key = rec["target"].split("/", 3)
            eq(header_of(rec, "X-Switchyard-Variant"), n, "variant header at upstream %s" % n)
            by_tag.setdefault(tag, set()).add(key)
        eq(len(by_tag.get("p1", ())), sum(1 for v in got["p1"].values() if v[1] == n),
           "requests from p1 at upstream %s" % n)
        expect(by_tag.get("p1", set()) == by_tag.get("p2", set()),
               "upstream %s: keys from p1 and p2 differ (%d vs %d)" % (
                   n, len(by_tag.get("p1", ())), len(by_tag.get("p2", ()))))
    moved = sum(1 for k in keys if got["p1"][k][1] != got["p3"][k][1])
    # Independent assignments at 50/30/20 agree with probability .25+.09+.04 = .38.
    expected = 1.0 - sum((w / 100.0) ** 2 for w in SPLIT.values())
    print("     other salt: %d of 1000 keys on another variant (%.1f%%, expected ~%.1f%%)"
          % (moved, moved / 10.0, expected * 100))
    expect(abs(moved / 1000.0 - expected) < 0.06,  # one sigma ~1.5 points
           "salt change moved %.1f%% of keys, expected %.1f%% +- 6" % (moved / 10.0,
                                                                        expected * 100))


# ---- set-up ------------------------------------------------------------------------------

def build_config(listen_port, admin_port):
    pools = {n: [S.ups[n].addr] for n in VARIANTS}
    pools.update({"p-" + n: [S.route_ups[n].addr] for n in ROUTE_UPSTREAMS})
    pools["dead-fo"] = [S.fo_port.addr]
    pools["dead-502"] = [S.dead502.addr]
    pools["hc-canary"] = [S.hc_port.addr]
    colours = {n: n for n in VARIANTS}
    only_blue = {"blue": 100, "green": 0, "canary": 0}

    def r1(name, upstream, host, path=None):
        return route(name, {"blue": "p-" + upstream}, {"blue": 100}, host=host, path=path)
    routes = [
        r1("r-shop", "shop", "shop.example.com", "^/(api|cart)/"),
        r1("r-shopall", "shopall", "shop.example.com"),
        r1("r-wild", "wild", "*.example.com"),
        r1("r-first", "first", "*.order.test"),
        r1("r-second", "second", "x.order.test"),
        r1("r-search", "search", "search.test", "/v2/"),
        route("ovh", colours, only_blue, host="ovh.test", overrides=[
            {"header": "X-Beta", "regex": "yes|on", "variant": "green"}]),
        route("ovc", colours, only_blue, host="ovc.test", overrides=[
            {"cookie": "beta", "regex": "on|1", "variant": "green"}]),
        route("ovip", colours, only_blue, host="ovip.test", overrides=[
            {"client_ip": ["10.0.0.0/8"], "variant": "green"},
            {"client_ip": ["192.168.0.0/16", "127.0.0.0/8"], "variant": "canary"}]),
        route("ovip6", colours, only_blue, host="ovip6.test", overrides=[
            {"client_ip": ["::1/128"], "variant": "canary"}]),
        route("ovo", colours, only_blue, host="ovo.test", overrides=[
            {"header": "X-A", "regex": ".*", "variant": "green"},
            {"header": "X-B", "regex": ".*", "variant": "canary"}]),
        route("ck", colours, {"blue": 50, "green": 50, "canary": 0}, host="ck.test",
              key=["cookie:session"], fallback="canary"),
        route("ac", colours, SPLIT, host="ac.test", key=["header:X-User-Id"],
              assign_cookie="sy_id"),
        route("fo", {"blue": "blue", "canary": "dead-fo"}, {"blue": 0, "canary": 100},
              host="fo.test", failover="blue"),
        route("nofo", {"blue": "blue", "canary": "dead-502"}, {"blue": 0, "canary": 100},
              host="nofo.test"),
        route("hc", {"blue": "blue", "canary": "hc-canary"}, {"blue": 0, "canary": 100},
              host="hc.test"),
        route("fohc", {"blue": "blue", "canary": "hc-canary"}, {"blue": 0, "canary": 100},
              host="fohc.test", failover="blue"),
    ]
    doc = config_doc(listen_port, pools=pools, routes=routes, admin_port=admin_port)
    doc["upstreams"]["hc-canary"]["health"] = Inline(
        path="/", interval_ms=100, timeout_ms=100, unhealthy_after=1, healthy_after=1)
    if not S.no_ipv6:
        doc["server"]["listen"].append("[::1]:%d" % S.port6)
    return doc


def main():
    t0 = time.monotonic()
    S.no_ipv6 = ipv6_loopback()
    with Env(cases) as env:
        S.env = env
        S.ups = {n: env.upstream(n) for n in VARIANTS}
        S.route_ups = {n: env.upstream(n) for n in ROUTE_UPSTREAMS}
        S.fo_port = ReservedPort()
        S.hc_port = ReservedPort()
        S.dead502 = ReservedPort()
        S.port6 = free_port()
        S.admin_port = free_port()
        env.start_proxy(build_config(free_port(), S.admin_port))
        if not S.no_ipv6:
            wait_until(lambda: can_connect(S.port6, "::1"), 10,
                       "switchyard to accept on [::1]:%d" % S.port6)
        cases.run()
        for p in (S.fo_port, S.hc_port, S.dead502):
            p.release()
    print("     (%.1fs)" % (time.monotonic() - t0))
    cases.exit()


if __name__ == "__main__":
    main()
