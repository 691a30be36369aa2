#!/usr/bin/env python3
"""HTTP/2 to a real browser (SPEC §12): headless Chromium loads a page through the proxy's TLS
listener (ALPN h2, a self-signed certificate: --ignore-certificate-errors), and the page itself
reports the protocol the browser used: its script writes
performance.getEntriesByType('navigation')[0].nextHopProtocol, and the nextHopProtocol of four
fetch()es it makes in parallel, into the DOM, which the test reads with --dump-dom. The proxy's
access log must say "HTTP/2" for the same requests. A second TLS listener with http2 = false is
the control: the same page reports http/1.1 there, and the access log says HTTP/1.1.

    python3 tests/integration/test_http2_browser.py build/proxy/switchyard

The upstream is a tiny HTTP/1.1 page server in this process (the proxy speaks HTTP/1.1 to
upstreams). Needs Debian's `chromium` (tools/bootstrap installs it); without it the cases FAIL.
"""

import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (CaseFailure, Cases, Env, can_connect, config_doc, eq,  # noqa: E402
                     expect, free_port, route, run_chromium, wait_until)

cases = Cases("http2_browser")
S = type("State", (), {})()
FETCHES = 4

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>pending</title></head>
<body>
<p>navigation: <span id="nav">pending</span></p>
<p>fetches: <span id="sub">pending</span></p>
<script>
(function () {
  const tag = %(tag)s;
  const nav = performance.getEntriesByType('navigation')[0];
  const proto = nav ? nav.nextHopProtocol : 'no-navigation-entry';
  document.getElementById('nav').textContent = proto;
  document.title = 'proto:' + proto;
  const urls = [];
  for (let i = 1; i <= %(fetches)d; i++) urls.push('/data/' + tag + '/' + i);
  Promise.all(urls.map(u => fetch(u, {cache: 'no-store'}).then(r => r.text())))
    .then(bodies => {
      const protos = urls.map(u => {
        const e = performance.getEntriesByType('resource')
          .filter(x => new URL(x.name).pathname === u)[0];
        return e ? e.nextHopProtocol : 'no-resource-entry';
      });
      document.getElementById('sub').textContent = protos.join(',') + '|' + bodies.join(',');
    })
    .catch(err => { document.getElementById('sub').textContent = 'error: ' + err; });
})();
</script>
</body></html>
"""


# ---- the upstream: a page and its data, over HTTP/1.1 ----------------------------------------

class PageHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - http.server's name
        m = re.match(r"^/page/([a-z0-9-]+)$", self.path.split("?")[0])
        d = re.match(r"^/data/([a-z0-9-]+)/(\d+)$", self.path.split("?")[0])
        if m:
            body = (PAGE % {"tag": json.dumps(m.group(1)), "fetches": FETCHES}).encode()
            ctype = "text/html; charset=utf-8"
        elif d:
            body = ("d%s" % d.group(2)).encode()
            ctype = "text/plain"
        else:
            body, ctype = b"not found\n", "text/plain"
        self.send_response(200 if (m or d) else 404)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def start_page_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), PageHandler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def span(html, ident):
    m = re.search(r'<span id="%s">([^<]*)</span>' % ident, html)
    expect(m, "no <span id=%s> in the rendered page:\n%s" % (ident, html[-2000:]))
    return m.group(1)


def title(html):
    m = re.search(r"<title>([^<]*)</title>", html)
    return m.group(1) if m else None


# ---- the proxy's access log ------------------------------------------------------------------

def access_log_entries(prefix, count):
    """The access log lines whose path starts with prefix, once there are at least count."""
    def lines():
        try:
            text = Path(S.access_log).read_text()
        except FileNotFoundError:
            return None
        out = []
        for line in text.split("\n")[:-1]:  # complete lines only
            if line.strip():
                e = json.loads(line)
                if e.get("path", "").split("?")[0].startswith(prefix):
                    out.append(e)
        return out if len(out) >= count else None
    return wait_until(lines, 5, "%d access log line(s) for %s" % (count, prefix))


def load_page(port, tag, want_proto, want_log_proto):
    html = run_chromium(S.env.dir, "--dump-dom", "https://127.0.0.1:%d/page/%s" % (port, tag))
    nav = span(html, "nav")
    eq(nav, want_proto, "the page's navigation nextHopProtocol")
    eq(title(html), "proto:" + want_proto, "the page's title")
    sub = span(html, "sub")
    protos, _, bodies = sub.partition("|")
    eq(protos.split(","), [want_proto] * FETCHES, "the fetches' nextHopProtocol (%r)" % sub)
    eq(bodies.split(","), ["d%d" % i for i in range(1, FETCHES + 1)], "the fetches' bodies")
    page = access_log_entries("/page/" + tag, 1)
    data = access_log_entries("/data/" + tag + "/", FETCHES)
    for e in page + data:
        eq(e.get("protocol"), want_log_proto, "access log protocol of %s" % e.get("path"))
        eq(e.get("status"), 200, "access log status of %s" % e.get("path"))
        eq(e.get("route"), "site", "access log route of %s" % e.get("path"))
    eq(len(page), 1, "access log lines for the page")
    print("     %s: navigation %s, fetches %s; access log %s x%d" % (
        tag, nav, protos, want_log_proto, len(page) + len(data)))


@cases.case("Chromium loads a page over the TLS listener with HTTP/2 (h2)")
def _():
    load_page(S.h2_port, "h2-%d" % os.getpid(), "h2", "HTTP/2")


@cases.case("control: a TLS listener with http2 = false gives Chromium http/1.1")
def _():
    load_page(S.h1_port, "h1-%d" % os.getpid(), "http/1.1", "HTTP/1.1")


def main():
    with Env(cases) as env:
        S.env = env
        srv = start_page_server()
        try:
            certs = Path(env.dir)
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "site.key",
                            "-out", "site.pem", "-days", "2", "-subj", "/CN=localhost",
                            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                           cwd=certs, check=True, capture_output=True)
            S.h2_port = free_port()
            S.h1_port = free_port()
            S.access_log = str(certs / "access.log")
            pages = "127.0.0.1:%d" % srv.server_address[1]
            # A catch-all route (the browser's :authority is 127.0.0.1:PORT).
            doc = config_doc(free_port(), pools={"pages": [pages]},
                             routes=[route("site", {"blue": "pages"}, {"blue": 100},
                                           host=None)],
                             server={"access_log": S.access_log})
            tls = {"cert": str(certs / "site.pem"), "key": str(certs / "site.key")}
            doc["listener"] = [{"address": "127.0.0.1:%d" % S.h2_port, "tls": tls},
                               {"address": "127.0.0.1:%d" % S.h1_port, "http2": False,
                                "tls": tls}]
            env.start_proxy(doc)
            wait_until(lambda: all(can_connect(p) for p in (S.h2_port, S.h1_port)), 10,
                       "the TLS listeners")
            cases.run()
        finally:
            srv.shutdown()
            srv.server_close()
    cases.exit()


if __name__ == "__main__":
    main()
