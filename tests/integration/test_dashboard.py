#!/usr/bin/env python3
"""Operator dashboard (GET / on the admin endpoint): one self-contained HTML page, rendered by
headless Chromium against the real proxy, that shows per route the weights, the live share,
the request rate, the 5xx share and p50/p99 latency per variant and the shadow mismatch rate.

The numbers the page shows are checked against what the client saw (shares, 5xx) and against
an independent reading of /metrics (latency quantiles, mismatch rate). A second proxy, with a
rollout on its route, checks the rollouts panel (SPEC §11) against GET /rollouts. A screenshot is saved
next to the meson logs (or $SY_ARTIFACT_DIR) and its path printed.

Needs Debian's `chromium` (tools/bootstrap installs it); without it the browser cases FAIL.
"""

import json
import os
import re
import struct
import tempfile
import threading
import time
import zlib
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

from harness import CaseFailure, Cases, Client, Env, Inline, Proxy, can_connect, config_doc, \
    eq, expect, free_port, parallel, proxy_binary, route, run_chromium, wait_until

cases = Cases("dashboard")
S = SimpleNamespace()
WEIGHTS = {"blue": 70, "green": 0, "canary": 30}
VARIANTS = ("blue", "green", "canary")
ROUTE = "dash"
KEYED = 300         # keyed requests, split blue/canary by hash
FORCED_500 = 20     # X-Canary: 1 -> /status?code=500 on canary
FORCED_SLOW = 30    # X-Canary: 1 -> /sleep?ms=40 on canary (canary p99 >= 25 ms)
WINDOW = (1280, 900)
# Bar colours of the page (CSS --blue and --canary), looked for in the screenshot.
BLUE_RGB = (0x25, 0x63, 0xeb)
CANARY_RGB = (0xd9, 0x77, 0x06)


# ---- admin endpoint ----------------------------------------------------------------------

def admin_get(path, port=None):
    port = port or S.admin_port
    with Client(port, timeout=10) as c:
        return c.request("GET", path, host="127.0.0.1:%d" % port)


def admin_post(path, body=None, port=None):
    port = port or S.admin_port
    with Client(port, timeout=10) as c:
        return c.request("POST", path, host="127.0.0.1:%d" % port,
                         body=body.encode() if isinstance(body, str) else body,
                         headers=[("Content-Type", "application/json")] if body else ())


_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?[ \t]+(\S+)(?:[ \t]+-?\d+)?$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metrics():
    """/metrics as [(name, {label: value}, float)] (an independent reading from the page's)."""
    r = admin_get("/metrics")
    eq(r.status, 200, "GET /metrics status")
    out = []
    for line in r.body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        expect(m, "unparseable metrics line %r" % line)
        labels = {k: v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
                  for k, v in _LABEL.findall(m.group(2) or "")}
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def series(ms, name, **match):
    return [(l, v) for n, l, v in ms if n == name and all(l.get(k) == x for k, x in match.items())]


def histogram_quantile(q, buckets):
    """Prometheus' definition: linear interpolation inside the bucket that holds rank q*total;
    in the +Inf bucket the answer is the last finite bound."""
    buckets = sorted(buckets)
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lo_le, lo_n = 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if le == float("inf"):
                return lo_le
            return lo_le + (le - lo_le) * (rank - lo_n) / (n - lo_n)
        lo_le, lo_n = le, n
    return lo_le


def expected_quantile(ms, variant, q):
    b = [(float(l["le"]), v) for l, v in series(
        ms, "switchyard_request_duration_seconds_bucket", route=ROUTE, variant=variant)]
    return histogram_quantile(q, b)


def dashboard_url(port=None):
    return "http://127.0.0.1:%d/" % (port or S.admin_port)


class Node:
    def __init__(self, tag, attrs, parent):
        self.tag, self.attrs, self.parent = tag, dict(attrs), parent
        self.children = []
        self.parts = []

    def text(self):
        return "".join(p if isinstance(p, str) else p.text() for p in self.parts)

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()

    def find_all(self, tag=None, **attrs):
        want = {k.replace("_", "-"): v for k, v in attrs.items()}
        return [n for n in self.walk() if (tag is None or n.tag == tag)
                and all(n.attrs.get(k) == v for k, v in want.items())]

    def find(self, tag=None, **attrs):
        found = self.find_all(tag, **attrs)
        expect(found, "no <%s %s> in the rendered page" % (tag or "*", attrs))
        return found[0]


class Dom(HTMLParser):
    """Chromium's --dump-dom output as a small tree (enough for attribute/text queries)."""
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
            "source", "track", "wbr"}

    def __init__(self, html):
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {}, None)
        self.cur = self.root
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        n = Node(tag, [(k, "" if v is None else v) for k, v in attrs], self.cur)
        self.cur.children.append(n)
        self.cur.parts.append(n)
        if tag not in self.VOID:
            self.cur = n

    def handle_endtag(self, tag):
        n = self.cur
        while n is not self.root and n.tag != tag:
            n = n.parent
        if n is not self.root:
            self.cur = n.parent

    def handle_data(self, data):
        self.cur.parts.append(data)


def render_dom(port=None):
    html = run_chromium(S.env.dir, "--dump-dom", dashboard_url(port))
    S.last_dom = html
    return Dom(html).root


def field(root, variant, name):
    row = root.find("tr", data_route=ROUTE, data_variant=variant)
    return row.find("td", data_field=name)


def value(node):
    v = node.attrs.get("data-value")
    expect(v is not None, "<%s data-field=%s> has no data-value (text %r)" % (
        node.tag, node.attrs.get("data-field"), node.text()))
    return float(v)


def close(got, want, what, tol=1e-9):
    expect(want is not None and abs(got - want) <= tol * max(1.0, abs(want)),
           "%s: page shows %r, expected %r" % (what, got, want))


# ---- traffic -----------------------------------------------------------------------------

def variant_of(r, what):
    eq(r.status in (200, 500), True, "%s: status %d" % (what, r.status))
    v = r.header("X-Switchyard-Variant")
    expect(v in VARIANTS, "%s: X-Switchyard-Variant %r" % (what, v))
    return v


def send_keyed(keys):
    out = []
    with Client(S.env.proxy.port) as c:
        for k in keys:
            out.append(variant_of(c.request("GET", "/page?k=" + k, headers=[("X-User-Id", k)]),
                                  "key " + k))
    return out


def send_forced(targets):
    out = []
    with Client(S.env.proxy.port) as c:
        for t in targets:
            r = c.request("GET", t, headers=[("X-User-Id", "forced"), ("X-Canary", "1")])
            out.append((variant_of(r, t), r.status))
    return out


@contextmanager
def live_traffic(threads=4):
    """Keyed requests from several keep-alive connections until the block ends."""
    stop = threading.Event()
    errors = []

    def loop(tid):
        i = 0
        try:
            c = Client(S.env.proxy.port)
            while not stop.is_set():
                i += 1
                k = "live-%d-%d" % (tid, i % 400)
                c.request("GET", "/live", headers=[("X-User-Id", k)])
                if c.eof:
                    c.close()
                    c = Client(S.env.proxy.port)
            c.close()
        except Exception as e:  # noqa: BLE001 - reported after the block
            errors.append(e)
    ts = [threading.Thread(target=loop, args=(t,), daemon=True) for t in range(threads)]
    for t in ts:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in ts:
            t.join(timeout=10)
    expect(not errors, "live traffic failed: %r" % errors[:1])


# ---- PNG ---------------------------------------------------------------------------------

def png_decode(data):
    """(width, height, rows of RGB(A) bytes) for the 8-bit non-interlaced RGB/RGBA PNGs
    Chromium writes."""
    expect(data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG (first bytes %r)" % data[:8])
    pos, idat, w = 8, bytearray(), None
    while pos + 8 <= len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            w, h, depth, ctype, _c, _f, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    expect(w is not None and depth == 8 and ctype in (2, 6) and interlace == 0,
           "unexpected PNG format")
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(bytes(idat))
    stride = w * bpp
    prev = bytearray(stride)
    rows = []
    i = 0
    for _y in range(h):
        f = raw[i]
        line = bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        if f == 1:
            for x in range(bpp, stride):
                line[x] = (line[x] + line[x - bpp]) & 255
        elif f == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev))
        elif f == 3:
            for x in range(stride):
                left = line[x - bpp] if x >= bpp else 0
                line[x] = (line[x] + ((left + prev[x]) >> 1)) & 255
        elif f == 4:
            for x in range(stride):
                a = line[x - bpp] if x >= bpp else 0
                b = prev[x]
                c = prev[x - bpp] if x >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[x] = (line[x] + pred) & 255
        rows.append(line)
        prev = line
    return w, h, bpp, rows


def artifact_dir():
    d = os.environ.get("SY_ARTIFACT_DIR")
    if d:
        Path(d).mkdir(parents=True, exist_ok=True)
        return Path(d)
    logs = proxy_binary().resolve().parent.parent / "meson-logs"
    if logs.is_dir():
        return logs
    return Path(tempfile.mkdtemp(prefix="sy-dashboard-"))


# ---- cases -------------------------------------------------------------------------------

@cases.case("GET / and GET /dashboard serve one self-contained HTML page (no external assets)")
def _():
    r = admin_get("/")
    eq(r.status, 200, "GET / status")
    expect((r.header("Content-Type") or "").startswith("text/html"),
           "Content-Type %r" % r.header("Content-Type"))
    r2 = admin_get("/dashboard")
    eq(r2.status, 200, "GET /dashboard status")
    eq(r2.body, r.body, "GET /dashboard body equals GET /")
    html = r.body.decode()
    expect(html.lstrip().lower().startswith("<!doctype html>"), "page starts with a doctype")
    for bad in (r"<script[^>]*\ssrc\s*=", r"<link\b", r"<img\b", r"@import", r"url\(",
                r"(?:src|href|action)\s*=\s*[\"']?(?:[a-z]+:)?//", r"https?://"):
        m = re.search(bad, html, re.I)
        expect(m is None, "page refers to an external asset: %r" % (
            html[max(0, m.start() - 60):m.end() + 60] if m else ""))
    for needed in ('fetch', '"status"', '"metrics"', "<style>", "<script>"):
        expect(needed in html, "page lacks %r" % needed)
    eq(admin_get("/nope").status, 404, "an unknown admin path is still 404")


@cases.case("traffic: keyed requests reach blue and canary; forced 500s and slow ones on canary")
def _():
    keys = ["user-%d" % i for i in range(KEYED)]
    seen = [v for part in parallel(send_keyed, keys, threads=6) for v in part]
    # One connection, 500s never back to back: passive ejection takes a server out after
    # consecutive 5xx answers, which would turn the rest into 503s.
    targets = ["/sleep?ms=40"] * FORCED_SLOW
    for i in range(FORCED_500):
        targets.insert(2 * i + 1, "/status?code=500")
    forced = send_forced(targets)
    eq(sorted({v for v, _ in forced}), ["canary"], "variants of X-Canary: 1 requests")
    eq(sum(1 for _, s in forced if s == 500), FORCED_500, "500s received")
    S.counts = {v: seen.count(v) for v in VARIANTS}
    S.counts["canary"] += len(forced)
    S.errors = {"blue": 0, "green": 0, "canary": FORCED_500}
    S.total = sum(S.counts.values())
    expect(S.counts["blue"] > 0 and S.counts["canary"] > 0 and S.counts["green"] == 0,
           "keyed split %s" % S.counts)

    def settled():
        ms = metrics()
        served = sum(v for _l, v in series(ms, "switchyard_requests_total", route=ROUTE))
        sh = {l["result"]: v for l, v in series(ms, "switchyard_shadow_requests_total",
                                               route=ROUTE)}
        done = sh.get("sent", 0) > 0 and sh.get("completed", 0) + sh.get("failed", 0) >= \
            sh.get("sent", 0)
        return ms if served == S.total and done else None
    # Counters and mirrored copies complete just after the client has its response.
    S.metrics = wait_until(settled, 15, "the proxy's counters to account for %d requests and "
                           "every mirrored copy" % S.total, interval=0.1)
    print("     client saw: %s, 5xx on canary: %d" % (S.counts, FORCED_500))


@cases.case("Chromium renders per route the weights, live share, 5xx and p50/p99 per variant")
def _():
    expect(hasattr(S, "metrics"), "depends on the traffic case, which failed")
    root = render_dom()
    st = admin_get("/status").json()
    samples = int(root.find(id="samples").attrs.get("data-samples", "0"))
    expect(samples >= 2, "the page refreshed %d time(s) in 6 s of virtual time; want >= 2 "
           "(one every 2 s)" % samples)
    eq(root.find(id="state").attrs.get("data-state"), "live", "state pill")
    expect("hidden" in root.find(id="error").attrs, "the error banner is shown: %r"
           % root.find(id="error").text())
    eq(root.find(id="version").text(), st["version"], "header version")
    eq(root.find(id="generation").text(), str(st["generation"]), "header generation")
    expect(root.find(id="loaded-at").text().startswith(st["loaded_at"]), "header loaded_at")
    expect(re.fullmatch(r"\d+", root.find(id="conn-upstream").text()),
           "upstream connections %r" % root.find(id="conn-upstream").text())

    eq(admin_get("/rollouts").json(), [], "GET /rollouts without a rollout")
    expect("hidden" in root.find("section", id="rollouts-panel").attrs,
           "the rollouts panel is shown although no route has a rollout")
    eq(root.find_all("article", **{"class": "rollout"}), [], "rollout cards without a rollout")

    card = root.find("article", data_route=ROUTE)
    expect(ROUTE in card.find("h2").text(), "card title %r" % card.find("h2").text())
    # No traffic while Chromium ran: the last interval is empty, so the page says so and falls
    # back to the cumulative counters, whose values are exactly known.
    eq(card.attrs.get("data-basis"), "cumulative", "basis of a route with an idle interval")
    wsum = sum(WEIGHTS.values())
    shown = {}
    for v in VARIANTS:
        w = field(card, v, "weight")
        close(value(w), WEIGHTS[v] / wsum, "%s weight" % v)
        eq(w.text(), "%.1f%%" % (100.0 * WEIGHTS[v] / wsum), "%s weight text" % v)
        share = field(card, v, "share")
        close(value(share), S.counts[v] / S.total, "%s live share" % v)
        expect(re.fullmatch(r"\d+\.\d%", share.text()) and
               abs(float(share.text()[:-1]) - 100.0 * S.counts[v] / S.total) <= 0.051,
               "%s live share text %r, expected %.2f%%" % (v, share.text(),
                                                            100.0 * S.counts[v] / S.total))
        rate = field(card, v, "rate")
        eq((value(rate), rate.text()), (0.0, "0.00"), "%s req/s over an idle interval" % v)
        eq(field(card, v, "served").text(), "{:,}".format(S.counts[v]), "%s served" % v)
        shown[v] = share.text()
        if S.counts[v] == 0:
            eq(field(card, v, "errors").text(), "\u2014", "%s 5xx without traffic" % v)
            continue
        close(value(field(card, v, "errors")), S.errors[v] / S.counts[v], "%s 5xx share" % v)
        for q, name in ((0.5, "p50"), (0.99, "p99")):
            cell = field(card, v, name)
            close(value(cell), expected_quantile(S.metrics, v, q), "%s %s (seconds)" % (v, name))
            expect(re.fullmatch(r"(> )?\d+(\.\d+)? m?s", cell.text()),
                   "%s %s text %r" % (v, name, cell.text()))
    expect(value(field(card, "canary", "share")) > 0, "canary has a live share")
    expect(value(field(card, "canary", "p99")) >= 0.025,
           "canary p99 %.4fs: %d requests slept 40 ms" % (value(field(card, "canary", "p99")),
                                                          FORCED_SLOW))

    # Bars: configured weights and live shares, one segment per variant with traffic.
    for kind in ("weights", "live"):
        bar = card.find("div", data_kind=kind)
        segs = {s.attrs["data-variant"] for s in bar.find_all("div", **{"class": "seg"})}
        eq(segs, {"blue", "canary"}, "variants in the %s bar" % kind)

    # Shadow: every request mirrored; the echo upstream names itself in the body, so bodies
    # differ except for the forced 500s' short text.
    shadow = root.find("div", data_route=ROUTE, **{"class": "shadow"})
    sh = {l["result"]: v for l, v in series(S.metrics, "switchyard_shadow_requests_total",
                                            route=ROUTE)}
    mm = {l["kind"]: v for l, v in series(S.metrics, "switchyard_shadow_mismatches_total",
                                          route=ROUTE)}
    for kind in ("status", "body", "headers"):
        close(value(shadow.find(data_field="mismatch-" + kind)), mm.get(kind, 0) / sh["completed"],
              "shadow %s mismatch rate" % kind)
    worst = max(mm.values()) / sh["completed"]
    close(value(shadow.find(data_field="mismatch")), worst, "shadow mismatch rate")
    expect(worst > 0, "some shadow responses differ (bodies name the upstream)")
    eq(shadow.find(data_field="completed").text(), "%d" % sh["completed"], "compared")

    rows = root.find("table", id="pools").find_all("tr", **{"class": "server"})
    eq(sorted((r.attrs["data-pool"], r.attrs["data-healthy"]) for r in rows),
       sorted((n, "true") for n in S.ups), "pool rows and their health")
    print("     page: live share %s; canary 5xx %s, p50 %s, p99 %s; shadow mismatch %s" % (
        ", ".join("%s %s" % kv for kv in shown.items()), field(card, "canary", "errors").text(),
        field(card, "canary", "p50").text(), field(card, "canary", "p99").text(),
        shadow.find(data_field="mismatch").text()))


def screenshot(name):
    """Chromium's screenshot of the page at WINDOW, saved as artifact_dir()/name; its path."""
    out = artifact_dir() / name
    if out.exists():
        out.unlink()
    run_chromium(S.env.dir, "--screenshot=%s" % out, "--window-size=%d,%d" % WINDOW,
                 dashboard_url())
    # Chromium reports the file before the write is always visible: poll with a deadline.
    wait_until(lambda: out.exists() and out.stat().st_size > 0, 10, "screenshot %s" % out)
    print("     screenshot: %s (%d bytes)" % (out, out.stat().st_size))
    return out


@cases.case("screenshot at 1280x900 shows the page with its blue and canary bars")
def _():
    expect(hasattr(S, "metrics"), "depends on the traffic case, which failed")
    out = screenshot("dashboard.png")
    if getattr(S, "last_dom", None):
        (out.parent / "dashboard-dom.html").write_text(S.last_dom)
    w, h, bpp, rows = png_decode(out.read_bytes())
    eq((w, h), WINDOW, "screenshot size")
    counts = {"blue": 0, "canary": 0}
    colours = set()
    for line in rows:
        for x in range(0, len(line), bpp):
            px = (line[x], line[x + 1], line[x + 2])
            colours.add(px)
            for name, rgb in (("blue", BLUE_RGB), ("canary", CANARY_RGB)):
                if all(abs(a - b) <= 3 for a, b in zip(px, rgb)):
                    counts[name] += 1
    expect(len(colours) > 50, "only %d distinct colours: a blank page?" % len(colours))
    # Two 22 px bars (configured 70/30, live ~60/40) across ~1070 px: blue and canary each
    # cover several thousand pixels.
    expect(counts["blue"] > 5000 and counts["canary"] > 2000,
           "pixels in the bar colours: %s" % counts)


@cases.case("under live traffic the page shows rates and shares over the last interval")
def _():
    expect(hasattr(S, "metrics"), "depends on the traffic case, which failed")
    # Chromium's virtual clock runs ahead of the wall clock while the page is idle, so an
    # interval can be a few real milliseconds: a busy proxy nearly always serves a request in
    # it, and a render whose last interval was empty anyway is retried (up to 5 renders).
    attempts = 0
    with live_traffic():
        while True:
            attempts += 1
            card = render_dom().find("article", data_route=ROUTE)
            if card.attrs.get("data-basis") == "interval" or attempts == 5:
                break
    eq(card.attrs.get("data-basis"), "interval", "basis after %d attempt(s)" % attempts)
    rates = {v: value(field(card, v, "rate")) for v in VARIANTS}
    expect(rates["blue"] + rates["canary"] > 0, "request rates %s" % rates)
    eq(rates["green"], 0.0, "green (weight 0) req/s")
    shares = [value(field(card, v, "share")) for v in VARIANTS]
    close(sum(shares), 1.0, "sum of the live shares", tol=1e-6)
    print("     req/s in Chromium's last (virtual) interval: %s (attempt %d)" % (
        ", ".join("%s %s" % (v, field(card, v, "rate").text()) for v in VARIANTS), attempts))
    with live_traffic():
        out = screenshot("dashboard-live.png")
    eq(png_decode(out.read_bytes())[:2], WINDOW, "live screenshot size")


# ---- rollouts panel ----------------------------------------------------------------------

RO_ROUTE = "roll"
RO_ID = "dash-r1"
RO_STAGES = [{"percent": 10, "hold": "1s"}, {"percent": 50, "hold": "30s", "gate": "manual"}]
RO_HOLD_MS = [1000, 30000]
# Markup in a reason must reach the page as text, never as elements.
RO_REASON = "5xx spike <b>on canary</b> & co"


def rollout_doc(listen_port, admin_port, state_dir):
    r = route(RO_ROUTE, {"blue": "blue", "canary": "canary"}, {"blue": 90, "canary": 10},
              host=None)
    r["rollout"] = {
        "id": RO_ID, "variant": "canary", "baseline": "blue",
        "stages": [Inline(st) for st in RO_STAGES],
        "analysis": {"interval": "1s", "warmup": "0s", "min_requests": 0},
    }
    return config_doc(listen_port, pools={n: [S.ups[n].addr] for n in ("blue", "canary")},
                      routes=[r], admin_port=admin_port, server={"state_dir": str(state_dir)})


def rollouts(port):
    r = admin_get("/rollouts", port)
    eq(r.status, 200, "GET /rollouts status (body %r)" % r.body[:300])
    return r.json()


def one_of(got, wants, what):
    expect(got in wants, "%s: page shows %r, GET /rollouts said %r" % (what, got, wants))


def check_rollout_card(root, before, after):
    """The card of the rollout against GET /rollouts read just before and just after the
    render: fields the engine rewrites every interval (verdict, evidence) may be either."""
    panel = root.find("section", id="rollouts-panel")
    expect("hidden" not in panel.attrs, "the rollouts panel is hidden")
    cards = root.find_all("article", **{"class": "rollout"})
    eq([c.attrs.get("data-route") for c in cards], [RO_ROUTE], "rollout cards")
    card = cards[0]
    eq(card.attrs.get("data-id"), RO_ID, "card data-id")
    eq(card.find("h3").text(), RO_ROUTE, "card title")
    eq(card.find(data_field="id").text(), RO_ID, "rollout id")
    eq((card.find(data_field="variant").text(), card.find(data_field="baseline").text()),
       ("canary", "blue"), "variant vs baseline")
    states = {before["state"], after["state"]}
    one_of(card.attrs.get("data-state"), states, "card data-state")
    badge = card.find(data_field="state")
    one_of(badge.attrs.get("data-state"), states, "state badge")
    eq(badge.text(), badge.attrs.get("data-state").replace("_", " "), "state badge text")

    # Timeline: "before", then every stage with its percent, hold and gate.
    steps = card.find("ol", **{"class": "timeline"}).find_all("li")
    eq([st.attrs.get("data-stage") for st in steps], ["0", "1", "2"], "timeline steps")
    for i, (st, hold_ms) in enumerate(zip(RO_STAGES, RO_HOLD_MS), start=1):
        step = steps[i]
        eq(step.find(data_field="percent").text(), "%d%%" % st["percent"], "stage %d percent" % i)
        eq(step.find(data_field="hold").attrs.get("data-value"), str(hold_ms),
           "stage %d hold (ms)" % i)
        eq(step.find(data_field="hold").text(), "hold " + st["hold"], "stage %d hold" % i)
        eq(bool(step.find_all(data_field="gate")), st.get("gate") == "manual",
           "stage %d shows a gate" % i)
    return card


@cases.case("rollouts panel: route, state badge, stage timeline, share, checks, history")
def _():
    state_dir = S.env.dir / "rollout-state"
    workdir = S.env.dir / "rollout-proxy"
    workdir.mkdir()
    port = free_port()
    proxy = Proxy(workdir, rollout_doc(free_port(), port, state_dir))
    try:
        wait_until(lambda: can_connect(port), 10, "the rollout proxy's admin endpoint")
        # Stage 1 holds 1 s, then stage 2 (50 %, hold 30 s, manual gate) runs.
        wait_until(lambda: rollouts(port)[0].get("stage") == 2, 15,
                   "the rollout to advance to stage 2", interval=0.1)
        before = rollouts(port)[0]
        root = render_dom(port)
        after = rollouts(port)[0]
        for snap in (before, after):
            eq((snap["route"], snap["id"], snap["stage"], snap["percent"]),
               (RO_ROUTE, RO_ID, 2, 50.0), "GET /rollouts")
        card = check_rollout_card(root, before, after)
        steps = card.find("ol", **{"class": "timeline"}).find_all("li")
        eq([st.attrs.get("data-status") for st in steps], ["done", "done", "current"],
           "timeline status in stage 2")
        # The current stage says what comes next: the end of its 30 s hold.
        nxt = steps[2].find(data_field="next").text()
        expect(re.fullmatch(r"hold ends (in \d+ s|due now)", nxt) or
               nxt == "waiting for promote", "current stage's next step %r" % nxt)
        share = card.find(data_field="share")
        eq((float(share.attrs["data-value"]), share.text()), (50.0, "50%"), "current share")
        eq(card.find(data_field="needed").attrs.get("data-value"), "0", "needed (min_requests)")
        one_of(card.find(data_field="seen").attrs.get("data-value"),
               {str(before["seen"]), str(after["seen"])}, "seen")

        # One row per check: evidence, threshold and their ratio (a log-scale bar) and summary.
        want = {c["name"]: c for c in before["checks"]}
        want_after = {c["name"]: c for c in after["checks"]}
        expect(want, "GET /rollouts has no checks: %r" % before)
        rows = card.find_all("tr", **{"class": "check"})
        eq(sorted(r.attrs["data-check"] for r in rows), sorted(want), "check rows")
        for row in rows:
            name = row.attrs["data-check"]
            snaps = [want[name], want_after.get(name, want[name])]
            got = {f: float(row.find(data_field=f).attrs["data-value"])
                   for f in ("evidence", "threshold", "ratio")}
            expect(any(all(abs(got[f] - c[f]) <= 1e-9 * max(1.0, abs(c[f]))
                           for f in ("evidence", "threshold", "ratio")) for c in snaps),
                   "check %s: page %r, GET /rollouts %r" % (name, got, snaps))
            one_of(row.attrs["data-failed"], {str(c["failed"]).lower() for c in snaps},
                   "check %s failed" % name)
            one_of(row.find(data_field="summary").text(), {c["summary"] for c in snaps},
                   "check %s summary" % name)
            bar = row.find("div", **{"class": "evidence-bar"})
            close(float(bar.attrs["data-ratio"]), got["ratio"], "check %s bar ratio" % name)
        one_of(card.find(data_field="verdict").text(),
               {"verdict " + before["verdict"], "verdict " + after["verdict"]}, "verdict")
        events = [r.attrs["data-event"] for r in card.find_all("tr", **{"class": "event"})]
        one_of(events, [[e["event"] for e in reversed(snap["history"])]
                        for snap in (before, after)], "history, newest first")
        eq(events[-1], "start", "oldest event")
        print("     stage 2: %s; checks %s" % (
            before["state"], ", ".join("%s %s" % (c["name"], c["ratio"])
                                       for c in before["checks"])))

        # An operator abort, with markup in the reason: the badge, the timeline's failed
        # stage, the share back to 0, and the reason as text in the history.
        r = admin_post("/rollouts/%s/abort" % RO_ROUTE, body=json.dumps({"reason": RO_REASON}),
                       port=port)
        eq(r.status, 200, "POST abort (body %r)" % r.body[:300])
        eq(r.json()["state"], "aborted", "state after abort")
        before = rollouts(port)[0]
        root = render_dom(port)
        after = rollouts(port)[0]
        card = check_rollout_card(root, before, after)
        eq(card.attrs.get("data-state"), "aborted", "card state after abort")
        steps = card.find("ol", **{"class": "timeline"}).find_all("li")
        eq([st.attrs.get("data-status") for st in steps], ["done", "done", "failed"],
           "timeline status after abort")
        expect("waiting for retry" in steps[2].find(data_field="next").text(),
               "aborted stage's note %r" % steps[2].find(data_field="next").text())
        eq(card.find(data_field="share").attrs["data-value"], "0", "share after abort")
        newest = card.find_all("tr", **{"class": "event"})[0]
        eq(newest.attrs.get("data-event"), "abort", "newest event")
        expect(RO_REASON in newest.text(), "abort reason %r not in %r" % (RO_REASON,
                                                                         newest.text()))
        eq(newest.find_all("b"), [], "markup from a reason became elements")
        print("     after abort: %s" % card.find(data_field="verdict").text())
    finally:
        code = proxy.stop()
        if code not in (0, None):
            print("note: the rollout proxy's exit status: %s; log tail:\n%s" % (
                code, proxy.log_tail()))


def main():
    with Env(cases) as env:
        S.env = env
        S.ups = {}
        for name in ("blue", "green", "canary", "shadow"):
            S.ups[name] = env.upstream(name)
        S.admin_port = free_port()
        env.start_proxy(config_doc(
            free_port(),
            pools={name: [u.addr] for name, u in S.ups.items()},
            admin_port=S.admin_port,
            routes=[route(ROUTE, {n: n for n in S.ups}, WEIGHTS,
                          overrides=[{"header": "X-Canary", "regex": "^(1|true|yes)$",
                                      "variant": "canary"}],
                          shadow={"percent": 100.0, "compare": True})]))
        wait_until(lambda: can_connect(S.admin_port), 10, "the admin endpoint")
        cases.run()
    cases.exit()


if __name__ == "__main__":
    main()
