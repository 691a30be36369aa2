#!/usr/bin/env python3
"""Shadow traffic (SPEC §5, §7): byte-exact copies (Content-Length, chunked, pipelined,
100-continue), sampling on the split key (share, stable per key, kept when the percent is
raised) and at random without one, isolation of the primary from a slow / down / resetting
shadow, comparison and /shadow/diffs, counters with an unhealthy shadow pool, body limits,
bounded memory against a shadow that never answers, and a reload with copies in flight.

    python3 tests/integration/test_shadow.py build/proxy/switchyard

One proxy (2 workers) serves every case, one route per case, told apart by Host. Shadows that
misbehave on purpose (sleep, 500, reset, black hole, fixed body) are tiny servers written
below; the rest are tools/echo-upstream, whose --log shows what each upstream received. Lines
starting with spaces are measurements (shares, latencies, RSS), printed for the reader.
"""

import json
import os
import re
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from harness import (Cases, Client, Env, Inline, Upstream, build_request, config_doc,
                     dead_address, dump_toml, eq, expect, free_port, header_of, parallel, route,
                     sha256, wait_until)

WORKERS = 2  # harness default; per-worker limits (max_in_flight) are multiplied by it
SAME_BODY = b"".join(b"line %05d of the same body\n" % i for i in range(400))


# ---- misbehaving shadow servers --------------------------------------------------------------

class TinyServerLoop:
    """A small HTTP/1.1 server on a free port of 127.0.0.1, one thread per connection. It runs
    in a child process (see TinyServer), so its threads never compete with the test's client
    for the GIL while latencies are measured.

    mode "sleep": reads each request, sleeps `delay` s, answers 200 (keep-alive);
    mode "status500": answers every request 500 at once (keep-alive);
    mode "reset": reads the request head, then resets the connection (RST, no answer);
    mode "blackhole": accepts connections and holds them, never reading or answering;
    modes "same-cl" / "same-chunked": answers 200 with SAME_BODY, framed by Content-Length /
    chunked (keep-alive).

    Writes one JSON line per event to log_path, flushed at once: {"event": "accept"} per
    connection, {"event": "request", "method", "target", "headers": [[name, value]]} per
    request head read (before answering)."""

    def __init__(self, mode, delay, log_path):
        self.mode = mode
        self.delay = delay
        self.held = []
        self.lock = threading.Lock()
        self.log = open(log_path, "a")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]

    def _event(self, record):
        with self.lock:
            self.log.write(json.dumps(record) + "\n")
            self.log.flush()

    def serve_forever(self):
        while True:
            conn, _ = self.sock.accept()
            self._event({"event": "accept"})
            if self.mode == "blackhole":
                self.held.append(conn)  # never read: the proxy's writes just queue
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _read_head(self, conn, buf):
        while b"\r\n\r\n" not in buf:
            data = conn.recv(65536)
            if not data:
                return None
            buf += data
        i = buf.index(b"\r\n\r\n")
        lines = bytes(buf[:i]).decode("latin-1").split("\r\n")
        del buf[:i + 4]
        method, target, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
        headers = []
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.append([k, v.strip()])
        return {"event": "request", "method": method, "target": target, "headers": headers}

    def _serve(self, conn):
        conn.settimeout(30)
        buf = bytearray()
        try:
            while True:
                req = self._read_head(conn, buf)
                if req is None:
                    return
                self._event(req)
                if self.mode == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return  # close() with linger 0 sends RST
                names = {k.lower(): v for k, v in req["headers"]}
                if "chunked" in names.get("transfer-encoding", "").lower():
                    return  # not needed by these cases: give up on the connection
                need = int(names.get("content-length", "0") or 0)
                while len(buf) < need:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                del buf[:need]
                if self.mode == "same-chunked":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n" +
                                 b"".join(b"%x\r\n%s\r\n" % (len(SAME_BODY[i:i + 1000]),
                                                               SAME_BODY[i:i + 1000])
                                          for i in range(0, len(SAME_BODY), 1000)) +
                                 b"0\r\n\r\n")
                    continue
                if self.mode == "sleep":
                    time.sleep(self.delay)  # the scenario: a slow shadow
                    status, body = "200 OK", b"slow shadow\n"
                elif self.mode == "same-cl":
                    status, body = "200 OK", SAME_BODY
                else:
                    status, body = "500 Internal Server Error", b"shadow broke\n"
                conn.sendall(("HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d"
                              "\r\n\r\n" % (status, len(body))).encode() + body)
        except OSError:
            return
        finally:
            conn.close()


def tiny_server_main(argv):
    """Child-process entry: --tiny MODE DELAY LOG; prints "ready PORT", serves until killed."""
    _, mode, delay, log_path = argv
    server = TinyServerLoop(mode, float(delay), log_path)
    print("ready %d" % server.port, flush=True)
    server.serve_forever()


class TinyServer:
    """A TinyServerLoop in a child process (this file run with --tiny).

    .records(): request heads it read, oldest first; .accepted(): connections accepted."""

    def __init__(self, workdir, mode, delay=1.5, start_timeout=10.0):
        self.mode = mode
        self.log_path = Path(workdir) / ("tiny-%s.jsonl" % mode)
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--tiny", mode, str(delay),
             str(self.log_path)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        ready, _, _ = select.select([self.proc.stdout], [], [], start_timeout)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("ready "):
            self.stop()
            raise RuntimeError("tiny server %s did not start (%r)" % (mode, line))
        self.port = int(line.split()[1])
        self.addr = "127.0.0.1:%d" % self.port

    def _events(self):
        try:
            text = self.log_path.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(l) for l in text.splitlines() if l.endswith("}")]

    def records(self):
        return [e for e in self._events() if e["event"] == "request"]

    def accepted(self):
        return sum(1 for e in self._events() if e["event"] == "accept")

    def shadow_records(self):
        return [r for r in self.records()
                if any(k.lower() == "x-switchyard-shadow" and v == "1" for k, v in r["headers"])]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


# ---- metrics, admin, process stats -----------------------------------------------------------

_METRIC = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def admin_get(port, path):
    with Client(port, timeout=5) as c:
        return c.request("GET", path, host="admin")


def metrics(port):
    """{(name, ((label, value), ...sorted)): float} from GET /metrics."""
    r = admin_get(port, "/metrics")
    eq(r.status, 200, "GET /metrics status")
    out = {}
    for line in r.body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        m = _METRIC.match(line)
        if m:
            labels = tuple(sorted(_LABEL.findall(m.group(2) or "")))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


class ShadowCounts:
    """A route's shadow counters: .sent .completed .failed .dropped .skipped and
    .mismatch[kind]."""

    def __init__(self, port, route_name):
        m = metrics(port)
        for result in ("sent", "completed", "failed", "dropped", "skipped"):
            setattr(self, result, int(m.get(("switchyard_shadow_requests_total",
                                             (("result", result), ("route", route_name))), 0)))
        self.mismatch = {kind: int(m.get(("switchyard_shadow_mismatches_total",
                                          (("kind", kind), ("route", route_name))), 0))
                         for kind in ("status", "body", "headers")}

    def settled(self):
        """Every copy started has ended. Only for routes without up-front skips (a body
        declared over max_body_bytes is skipped without being sent)."""
        return self.sent == self.completed + self.failed + self.skipped

    def __repr__(self):
        return ("sent=%d completed=%d failed=%d dropped=%d skipped=%d mismatches=%r" % (
            self.sent, self.completed, self.failed, self.dropped, self.skipped, self.mismatch))


def wait_counts(port, route_name, pred, what, timeout=10.0):
    """Polls the route's counters until pred(counts) holds; returns them."""
    last = [None]

    def check():
        last[0] = ShadowCounts(port, route_name)
        return last[0] if pred(last[0]) else None
    try:
        return wait_until(check, timeout, what, interval=0.05)
    except TimeoutError as e:
        raise TimeoutError("%s; last counters of %s: %r" % (e, route_name, last[0])) from None


def proc_status(pid, field):
    """A kB field of /proc/PID/status (VmRSS, ...), in bytes."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def percentile(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]


def info(text):
    print("     %s" % text, flush=True)


# ---- the set-up --------------------------------------------------------------------------------

if len(sys.argv) > 1 and sys.argv[1] == "--tiny":
    tiny_server_main(sys.argv[1:])
    sys.exit(0)

cases = Cases("shadow")
with Env(cases) as env:
    tiny = []
    try:
        def tiny_server(mode, **kw):
            t = TinyServer(env.dir, mode, **kw)
            tiny.append(t)  # stopped below, before Env removes its dir
            return t

        def twin(name, sub):
            """An echo upstream in its own sub dir, so two may share a --name (same bodies,
            same X-Upstream) without sharing a log file."""
            d = env.dir / sub
            d.mkdir()
            u = Upstream(d, name)
            env.upstreams.append(u)
            return u

        primary = env.upstream("primary")
        shadow = env.upstream("shadow")
        primary_sample = env.upstream("primary-sample")
        shadow_sample = env.upstream("shadow-sample")
        primary_bh = env.upstream("primary-bh")
        other = env.upstream("other")
        twin_a = twin("twin", "twin-a")
        twin_b = twin("twin", "twin-b")
        sleeper = tiny_server("sleep", delay=1.5)
        failer = tiny_server("status500")
        resetter = tiny_server("reset")
        blackhole = tiny_server("blackhole")
        same_cl = tiny_server("same-cl")
        same_chunked = tiny_server("same-chunked")
        dead = dead_address()

        admin_port = free_port()
        listen_port = free_port()
        pools = {
            "primary": [primary.addr], "shadow": [shadow.addr],
            "primary-sample": [primary_sample.addr], "shadow-sample": [shadow_sample.addr],
            "primary-bh": [primary_bh.addr], "other": [other.addr],
            "twin-a": [twin_a.addr], "twin-b": [twin_b.addr],
            "sleeper": [sleeper.addr], "failer": [failer.addr], "resetter": [resetter.addr],
            "blackhole": [blackhole.addr], "dead": [dead], "dead-hc": [dead],
            "same-cl": [same_cl.addr], "same-chunked": [same_chunked.addr],
        }
        BIG = 65536  # max_body_bytes of the "big" route

        def shadow_route(name, blue, shadow_pool, **settings):
            s = {"percent": 100.0}
            s.update(settings)
            return route(name, {"blue": blue, "shadow": shadow_pool}, {"blue": 100},
                         host=name + ".test", shadow=s)

        routes = [
            shadow_route("exact", "primary", "shadow", max_body_bytes=1048576),
            shadow_route("sample", "primary-sample", "shadow-sample", percent=20.0),
            route("base", {"blue": "primary"}, {"blue": 100}, host="base.test"),
            shadow_route("slow", "primary", "sleeper"),
            shadow_route("down", "primary", "dead"),
            shadow_route("reset", "primary", "resetter"),
            shadow_route("cmp500", "primary", "failer", compare=True),
            shadow_route("cmpsame", "twin-a", "twin-b", compare=True),
            shadow_route("cmphdr", "primary", "other", compare=True),
            shadow_route("cmpign", "primary", "other", compare=True,
                         ignore_headers=["date", "x-request-id", "x-upstream"]),
            shadow_route("framing", "same-cl", "same-chunked", compare=True),
            shadow_route("big", "primary", "shadow", max_body_bytes=BIG),
            shadow_route("nokey", "primary", "shadow", percent=25.0),
            shadow_route("unhealthy", "primary", "dead-hc"),
            shadow_route("bh", "primary-bh", "blackhole", max_in_flight=64,
                         max_body_bytes=BIG),
        ]

        def make_doc(rs):
            doc = config_doc(listen_port, pools, rs, admin_port=admin_port)
            # An active health check, so the shadow pool is known to have no usable server.
            doc["upstreams"]["dead-hc"]["health"] = Inline(
                path="/health", interval_ms=100, timeout_ms=100, unhealthy_after=1,
                healthy_after=1)
            return doc

        def reload_with(rs):
            """Writes a config with routes rs and POSTs /reload; the routes become current."""
            proxy.config_path.write_text(dump_toml(make_doc(rs)) + "\n")
            with Client(admin_port, timeout=5) as c:
                r = c.request("POST", "/reload", host="admin")
            eq(r.status, 200, "POST /reload status (body %r)" % r.body[:200])
            routes[:] = rs

        proxy = env.start_proxy(make_doc(routes), workers=WORKERS)
        wait_until(lambda: admin_get(admin_port, "/healthz").status == 200, 10,
                   "the admin endpoint")

        def same_but_marker(rec):
            """The record's headers without one X-Switchyard-Shadow: 1 (expected exactly once)."""
            marks = [h for h in rec["headers"] if h[0].lower() == "x-switchyard-shadow"]
            eq(marks, [["X-Switchyard-Shadow", "1"]], "X-Switchyard-Shadow fields of the copy")
            return [h for h in rec["headers"] if h[0].lower() != "x-switchyard-shadow"]

        def is_shadow_copy(rec):
            return header_of(rec, "X-Switchyard-Shadow") == "1"

        # ---- 1. byte-exact copies ------------------------------------------------------------

        @cases.case("PUT 200 KB (Content-Length) reaches primary and shadow byte-exact")
        def _():
            body = os.urandom(200 * 1000)
            digest = sha256(body)
            before = ShadowCounts(admin_port, "exact")
            with env.client() as c:
                r = c.request("PUT", "/echo?case=cl", host="exact.test", body=body,
                              headers=[("X-User-Id", "u-exact"), ("X-Request-Id", "rid-cl"),
                                       ("Content-Type", "application/octet-stream"),
                                       ("X-Switchyard-Shadow", "1")])  # not the client's to say
            eq(r.status, 200, "client status")
            eq(r.header("X-Upstream"), "primary", "X-Upstream of the client's response")
            eq(sha256(r.body), digest, "sha256 of the body the client got back")
            [p] = primary.wait_records(lambda x: x["target"] == "/echo?case=cl")
            eq(p["body_sha256"], digest, "primary body sha256")
            eq(header_of(p, "X-Switchyard-Shadow"), None, "X-Switchyard-Shadow at the primary")
            [s] = shadow.wait_records(lambda x: x["target"] == "/echo?case=cl")
            eq(s["method"], "PUT", "shadow method")
            eq(s["body_bytes"], len(body), "shadow body bytes")
            eq(s["body_sha256"], digest, "shadow body sha256")
            eq(header_of(s, "X-Switchyard-Shadow"), "1", "X-Switchyard-Shadow at the shadow")
            eq(same_but_marker(s), p["headers"], "shadow headers without the marker vs primary's")
            after = wait_counts(admin_port, "exact",
                                lambda n: n.completed >= before.completed + 1,
                                "the copy to complete")
            eq(after.sent - before.sent, 1, "sent delta")

        @cases.case("PUT 200 KB (chunked) reaches primary and shadow byte-exact")
        def _():
            body = os.urandom(200 * 1000)
            digest = sha256(body)
            with env.client() as c:
                r = c.request("PUT", "/echo?case=chunked", host="exact.test", body=body,
                              chunked=True, chunk_size=[1000, 7777, 65536],
                              headers=[("X-User-Id", "u-exact")])
            eq(r.status, 200, "client status")
            eq(r.header("X-Upstream"), "primary", "X-Upstream of the client's response")
            eq(sha256(r.body), digest, "sha256 of the body the client got back")
            [p] = primary.wait_records(lambda x: x["target"] == "/echo?case=chunked")
            eq(p["body_sha256"], digest, "primary body sha256")
            [s] = shadow.wait_records(lambda x: x["target"] == "/echo?case=chunked")
            eq((s["body_bytes"], s["body_sha256"]), (len(body), digest),
               "shadow body (bytes, sha256)")
            eq(header_of(s, "X-Switchyard-Shadow"), "1", "X-Switchyard-Shadow at the shadow")
            expect(header_of(p, "X-Request-Id"), "no X-Request-Id generated for the primary")
            eq(same_but_marker(s), p["headers"], "shadow headers without the marker vs primary's")

        @cases.case("30 pipelined POSTs with bodies: answered in order, each mirrored exactly")
        def _():
            bodies = [os.urandom(1000 + 997 * i) for i in range(30)]
            with env.client() as c:
                c.send(b"".join(build_request("POST", "/echo?pipe=%d" % i, host="exact.test",
                                              body=b, chunked=i % 2 == 1)
                                for i, b in enumerate(bodies)))
                for i, b in enumerate(bodies):
                    r = c.read_response("POST")
                    eq((r.status, sha256(r.body)), (200, sha256(b)),
                       "response %d (status, body sha256)" % i)
            recs = shadow.wait_records(lambda x: x["target"].startswith("/echo?pipe="), 30)
            got = sorted((x["target"], x["body_sha256"]) for x in recs)
            want = sorted(("/echo?pipe=%d" % i, sha256(b)) for i, b in enumerate(bodies))
            eq(got, want, "copies at the shadow (target, body sha256)")

        @cases.case("Expect: 100-continue: the copy gets the whole body and no Expect header")
        def _():
            body = os.urandom(50000)
            with env.client() as c:
                c.send(build_request("POST", "/echo?expect=1", host="exact.test", headers=[
                    ("Expect", "100-continue"), ("Content-Length", str(len(body)))]))
                expect(c.wait_for_data(5), "no 100 Continue within 5 s")
                eq(c.read_head()[1], 100, "interim status")
                c.send(body)
                r = c.read_response("POST")
            eq((r.status, sha256(r.body)), (200, sha256(body)), "client (status, body sha256)")
            [s] = shadow.wait_records(lambda x: x["target"] == "/echo?expect=1")
            eq((s["body_sha256"], header_of(s, "Expect")), (sha256(body), None),
               "copy (body sha256, Expect header)")

        # ---- 2. sampling on the split key ----------------------------------------------------

        KEYS = ["user-%05d" % i for i in range(1500)]

        def send_keys(keys):
            c = env.client()
            try:
                bad = []
                for k in keys:
                    r = c.request("GET", "/s", host="sample.test", headers=[("X-User-Id", k)])
                    if r.status != 200 or r.header("X-Upstream") != "primary-sample":
                        bad.append((k, r.status, r.header("X-Upstream")))
                return bad
            finally:
                c.close()

        def mirrored_keys(expected_total):
            recs = wait_until(
                lambda: (lambda rs: rs if len(rs) >= expected_total else None)(
                    shadow_sample.records()),
                15, "%d records at the sample shadow" % expected_total)
            return recs

        @cases.case("20% sampling over 1,500 keys: 17-23% mirrored, same keys on a second pass")
        def _():
            before = ShadowCounts(admin_port, "sample")
            bad = [b for chunk in parallel(send_keys, KEYS, threads=6) for b in chunk]
            eq(bad[:5], [], "failed primary requests (key, status, X-Upstream), first 5")
            n1 = wait_counts(admin_port, "sample", lambda n: n.settled() and n.sent > before.sent,
                             "pass 1 copies to settle").sent - before.sent
            recs1 = mirrored_keys(n1)
            expect(all(is_shadow_copy(r) for r in recs1), "a sample copy without the header")
            keys1 = [header_of(r, "X-User-Id") for r in recs1]
            eq(len(keys1), len(set(keys1)), "pass 1: copies per key (duplicates)")
            share = 100.0 * len(set(keys1)) / len(KEYS)
            expect(17.0 <= share <= 23.0, "pass 1 mirrored %.1f%% of keys (%d/%d), want 17-23%%"
                   % (share, len(set(keys1)), len(KEYS)))
            bad = [b for chunk in parallel(send_keys, KEYS, threads=6) for b in chunk]
            eq(bad[:5], [], "failed primary requests in pass 2 (key, status, X-Upstream)")
            after = wait_counts(admin_port, "sample",
                                lambda n: n.settled() and n.sent >= before.sent + 2 * n1,
                                "pass 2 copies to settle")
            eq(after.sent - before.sent, 2 * n1, "copies sent over both passes")
            recs = mirrored_keys(2 * n1)
            keys2 = {header_of(r, "X-User-Id") for r in recs[n1:]}
            eq(len(recs), 2 * n1, "records at the sample shadow")
            only1 = sorted(set(keys1) - keys2)[:5]
            only2 = sorted(keys2 - set(keys1))[:5]
            expect(not only1 and not only2,
                   "pass 2 mirrored another set: only in pass 1 %r, only in pass 2 %r"
                   % (only1, only2))
            eq(len(primary_sample.records()), 2 * len(KEYS), "requests at the primary")
            info("mirrored %d of %d keys (%.1f%%), the same %d on the second pass"
                 % (len(keys1), len(KEYS), share, len(keys2)))
            sampled_at_20.update(keys1)

        sampled_at_20 = set()

        @cases.case("raising the percent 20 -> 40 (reload) keeps every key already mirrored")
        def _():
            expect(sampled_at_20, "no keys from the 20% case")
            reload_with([r if r["name"] != "sample" else
                         shadow_route("sample", "primary-sample", "shadow-sample", percent=40.0)
                         for r in routes])
            n0 = len(shadow_sample.records())
            before = ShadowCounts(admin_port, "sample")
            bad = [b for chunk in parallel(send_keys, KEYS, threads=6) for b in chunk]
            eq(bad[:5], [], "failed primary requests (key, status, X-Upstream), first 5")
            after = wait_counts(admin_port, "sample",
                                lambda n: n.settled() and n.sent > before.sent,
                                "the copies at 40% to settle")
            recs = mirrored_keys(n0 + after.sent - before.sent)[n0:]
            keys40 = {header_of(r, "X-User-Id") for r in recs}
            eq(len(recs), len(keys40), "copies per key (duplicates)")
            lost = sorted(sampled_at_20 - keys40)[:5]
            eq(lost, [], "keys mirrored at 20% but not at 40% (first 5)")
            share = 100.0 * len(keys40) / len(KEYS)
            expect(37.0 <= share <= 43.0, "mirrored %.1f%% of keys at 40%%, want 37-43%%" % share)
            info("40%%: mirrored %d keys (%.1f%%), a superset of the %d at 20%%"
                 % (len(keys40), share, len(sampled_at_20)))

        @cases.case("without a split key, 25% of 2,000 requests are mirrored at random")
        def _():
            before = ShadowCounts(admin_port, "nokey")

            def send(indices):
                with env.client() as c:
                    return [i for i in indices
                            if c.request("GET", "/nokey/%d" % i, host="nokey.test").status != 200]
            bad = [b for chunk in parallel(send, list(range(2000)), threads=4) for b in chunk]
            eq(bad[:5], [], "failed primary requests (first 5)")
            after = wait_counts(admin_port, "nokey",
                                lambda n: n.settled() and n.sent > before.sent, "copies to settle")
            n = after.sent - before.sent
            recs = shadow.wait_records(lambda x: x["target"].startswith("/nokey/"), n)
            eq(len(recs), n, "copies at the shadow vs sent")
            share = 100.0 * n / 2000
            # sd of the share is ~1 point: 21-29% is 4 sd, a failure is not bad luck.
            expect(21.0 <= share <= 29.0, "mirrored %.1f%%, want 21-29%%" % share)
            info("no key: mirrored %d of 2000 (%.1f%%)" % (n, share))

        # ---- 3. isolation --------------------------------------------------------------------

        def timed_requests(host, n=300):
            """n sequential GETs on one keep-alive connection: latencies in ms."""
            lat = []
            with env.client() as c:
                for i in range(n):
                    t0 = time.perf_counter()
                    r = c.request("GET", "/iso/%s/%d" % (host, i), host=host)
                    lat.append((time.perf_counter() - t0) * 1000)
                    if r.status != 200 or r.header("X-Upstream") != "primary":
                        raise AssertionError("request %d via %s: got %d from %r, want 200 from"
                                             " primary" % (i, host, r.status,
                                                           r.header("X-Upstream")))
            return lat

        baseline = {}

        @cases.case("isolation baseline: 300 requests without a shadow")
        def _():
            timed_requests("base.test", 50)  # warm-up: connections, caches
            lat = timed_requests("base.test")
            baseline["p50"], baseline["p99"] = percentile(lat, 50), percentile(lat, 99)
            info("baseline (no shadow): p50 %.2f ms, p99 %.2f ms"
                 % (baseline["p50"], baseline["p99"]))

        P99_BOUND_MS = 150.0

        def isolation_case(name, check_shadow_side):
            before = ShadowCounts(admin_port, name)
            lat = timed_requests(name + ".test")
            p50, p99 = percentile(lat, 50), percentile(lat, 99)
            info("%s shadow: p50 %.2f ms, p99 %.2f ms (baseline p50 %.2f, p99 %.2f)"
                 % (name, p50, p99, baseline.get("p50", float("nan")),
                    baseline.get("p99", float("nan"))))
            got = len(primary.find(lambda x: x["target"].startswith("/iso/%s.test/" % name)))
            eq(got, 300, "requests at the primary")
            expect(p99 < P99_BOUND_MS, "p99 %.1f ms with a %s shadow, want < %.0f ms"
                   % (p99, name, P99_BOUND_MS))
            check_shadow_side(before)

        @cases.case("isolation: a shadow sleeping 1.5 s delays no primary response")
        def _():
            def shadow_side(before):
                # The copies were all received while the primaries were answered in ms.
                wait_until(lambda: len([r for r in sleeper.shadow_records()
                                        if r["target"].startswith("/iso/slow.test/")]) >= 300,
                           10, "300 copies at the sleeping shadow")
                after = wait_counts(admin_port, "slow",
                                    lambda n: n.completed - before.completed >= 300,
                                    "300 slow copies to complete")
                eq((after.sent - before.sent, after.dropped - before.dropped,
                    after.failed - before.failed), (300, 0, 0), "(sent, dropped, failed) deltas")
            isolation_case("slow", shadow_side)

        @cases.case("isolation: a shadow that is down fails no primary response")
        def _():
            def shadow_side(before):
                after = wait_counts(admin_port, "down",
                                    lambda n: n.failed - before.failed >= 300,
                                    "300 copies to the dead shadow to fail")
                eq((after.sent - before.sent, after.completed - before.completed),
                   (300, 0), "(sent, completed) deltas")
            isolation_case("down", shadow_side)

        @cases.case("isolation: a shadow resetting every connection fails no primary response")
        def _():
            def shadow_side(before):
                after = wait_counts(admin_port, "reset",
                                    lambda n: n.failed - before.failed >= 300,
                                    "300 reset copies to count as failed")
                eq((after.sent - before.sent, after.completed - before.completed),
                   (300, 0), "(sent, completed) deltas")
                got = len([r for r in resetter.shadow_records()
                           if r["target"].startswith("/iso/reset.test/")])
                eq(got, 300, "copies the resetting shadow read before resetting")
            isolation_case("reset", shadow_side)

        # ---- 4. comparison -------------------------------------------------------------------

        def diffs_for(route_name):
            r = admin_get(admin_port, "/shadow/diffs")
            eq(r.status, 200, "GET /shadow/diffs status")
            body = r.json()
            expect(isinstance(body, list), "/shadow/diffs is not a JSON array: %r" % body)
            return [d for d in body if d.get("route") == route_name]

        @cases.case("comparison: shadow 500 vs primary 200 is a status mismatch in /shadow/diffs")
        def _():
            before = ShadowCounts(admin_port, "cmp500")
            for i in range(3):
                with env.client() as c:
                    r = c.request("GET", "/cmp500/item?n=%d" % i, host="cmp500.test",
                                  headers=[("X-Request-Id", "cmp500-%d" % i)])
                eq((r.status, r.header("X-Upstream")), (200, "primary"),
                   "client (status, X-Upstream)")
            after = wait_counts(admin_port, "cmp500",
                                lambda n: n.mismatch["status"] - before.mismatch["status"] >= 3,
                                "3 status mismatches")
            eq(after.mismatch["status"] - before.mismatch["status"], 3, "status mismatch delta")
            eq(after.completed - before.completed, 3, "completed delta")
            got = [r for r in failer.shadow_records() if r["target"].startswith("/cmp500/")]
            eq(len(got), 3, "copies at the 500 shadow")
            entries = {d.get("request_id"): d for d in diffs_for("cmp500")}
            for i in range(3):
                d = entries.get("cmp500-%d" % i)
                expect(d is not None, "no /shadow/diffs entry with request_id cmp500-%d (have %r)"
                       % (i, sorted(entries)))
                eq((d["method"], d["path"]), ("GET", "/cmp500/item?n=%d" % i), "(method, path)")
                expect("status" in d["kinds"], "kinds %r lack status" % d["kinds"])
                eq((d["primary"]["status"], d["shadow"]["status"]), (200, 500),
                   "(primary status, shadow status)")
                expect(d["primary"]["digest"] != d["shadow"]["digest"],
                       "different bodies with the same digest %r" % d["primary"]["digest"])
                expect(isinstance(d.get("ts"), (int, float, str)) and d["ts"],
                       "ts %r is missing" % d.get("ts"))

        @cases.case("comparison: identical upstreams produce no mismatch")
        def _():
            before = ShadowCounts(admin_port, "cmpsame")
            sent = [("GET", "/bytes?n=5000", None), ("PUT", "/echo", os.urandom(3000)),
                    ("GET", "/status?code=404", None), ("HEAD", "/bytes?n=100", None)]
            with env.client() as c:
                for method, target, body in sent:
                    r = c.request(method, target, host="cmpsame.test", body=body)
                    eq(r.header("X-Upstream"), "twin", "X-Upstream of %s %s" % (method, target))
            after = wait_counts(admin_port, "cmpsame",
                                lambda n: n.completed - before.completed >= len(sent),
                                "%d copies to complete" % len(sent))
            eq(after.mismatch, before.mismatch, "mismatch counters")
            eq(diffs_for("cmpsame"), [], "/shadow/diffs entries for the route")
            for up, copy in ((twin_a, False), (twin_b, True)):
                recs = up.records()
                # Copies are asynchronous: they may arrive in another order than sent.
                eq(sorted((x["method"], x["target"], is_shadow_copy(x)) for x in recs),
                   sorted((m, t, copy) for m, t, _ in sent),
                   "requests at %s" % up.log_path.parent.name)

        @cases.case("comparison: a differing header is a headers mismatch unless ignored")
        def _():
            before = {n: ShadowCounts(admin_port, n) for n in ("cmphdr", "cmpign")}
            for name in ("cmphdr", "cmpign"):
                with env.client() as c:
                    r = c.request("GET", "/bytes?n=2000", host=name + ".test",
                                  headers=[("X-Request-Id", "hdr-" + name)])
                eq((r.status, r.header("X-Upstream")), (200, "primary"), "client via " + name)
            after = {n: wait_counts(admin_port, n,
                                    lambda c, n=n: c.completed > before[n].completed,
                                    "the %s copy to complete" % n)
                     for n in ("cmphdr", "cmpign")}
            delta = {n: {k: after[n].mismatch[k] - before[n].mismatch[k]
                         for k in ("status", "body", "headers")} for n in after}
            eq(delta["cmphdr"], {"status": 0, "body": 0, "headers": 1},
               "cmphdr mismatch deltas (X-Upstream differs)")
            eq(delta["cmpign"], {"status": 0, "body": 0, "headers": 0},
               "cmpign mismatch deltas (x-upstream ignored)")
            [d] = [d for d in diffs_for("cmphdr") if d.get("request_id") == "hdr-cmphdr"]
            eq((d["kinds"], d["headers"]), (["headers"], ["x-upstream"]), "(kinds, headers)")
            eq(len(other.find(lambda x: x["target"] == "/bytes?n=2000" and is_shadow_copy(x))),
               2, "copies at the other upstream")

        @cases.case("comparison: the same body, Content-Length vs chunked, is no mismatch")
        def _():
            before = ShadowCounts(admin_port, "framing")
            with env.client() as c:
                r = c.request("GET", "/framing", host="framing.test")
            eq((r.status, r.body), (200, SAME_BODY), "client (status, body)")
            after = wait_counts(admin_port, "framing",
                                lambda n: n.completed > before.completed, "the copy to complete")
            eq(after.mismatch, before.mismatch, "mismatch counters")
            eq(len(same_chunked.shadow_records()), 1, "copies at the chunked shadow")
            eq(diffs_for("framing"), [], "/shadow/diffs entries for the route")

        @cases.case("a shadow pool with no healthy server: primaries fine, counters consistent")
        def _():
            def unhealthy():
                for p in admin_get(admin_port, "/status").json().get("pools", []):
                    if p.get("name") == "dead-hc":
                        return all(not s.get("healthy") for s in p.get("servers", []))
                return False
            wait_until(unhealthy, 10, "the dead-hc pool to be reported unhealthy in /status")
            before = ShadowCounts(admin_port, "unhealthy")
            with env.client() as c:
                for i in range(20):
                    r = c.request("GET", "/unhealthy/%d" % i, host="unhealthy.test")
                    eq((r.status, r.header("X-Upstream")), (200, "primary"), "client %d" % i)
            after = wait_counts(admin_port, "unhealthy",
                                lambda n: (n.sent + n.dropped + n.failed
                                           - before.sent - before.dropped - before.failed) >= 20,
                                "the 20 copies to be accounted for")
            d = {k: getattr(after, k) - getattr(before, k)
                 for k in ("sent", "completed", "failed", "dropped", "skipped")}
            # Each copy is either started (sent, then completed/failed/skipped) or not started
            # (dropped); a failure without a start would break sent = completed+failed+skipped.
            eq(d["sent"] + d["dropped"], 20, "sent + dropped (deltas %r)" % d)
            eq(d["completed"] + d["failed"] + d["skipped"], d["sent"],
               "completed + failed + skipped vs sent (deltas %r)" % d)

        # ---- 5. body limits ------------------------------------------------------------------

        @cases.case("a Content-Length body over max_body_bytes is skipped, primary gets it all")
        def _():
            body = os.urandom(200 * 1000)
            before = ShadowCounts(admin_port, "big")
            with env.client() as c:
                r = c.request("POST", "/big/cl", host="big.test", body=body)
            eq(r.status, 200, "client status")
            eq(r.json()["body_sha256"], sha256(body), "body sha256 the primary reports")
            [p] = primary.wait_records(lambda x: x["target"] == "/big/cl")
            eq((p["body_bytes"], p["body_sha256"]), (len(body), sha256(body)),
               "primary body (bytes, sha256)")
            after = wait_counts(admin_port, "big", lambda n: n.skipped > before.skipped,
                                "skipped to count it")
            eq((after.sent - before.sent, after.skipped - before.skipped), (0, 1),
               "(sent, skipped) deltas")

        @cases.case("a chunked body passing max_body_bytes is abandoned, primary gets it all")
        def _():
            body = os.urandom(200 * 1000)
            before = ShadowCounts(admin_port, "big")
            with env.client() as c:
                r = c.request("POST", "/big/chunked", host="big.test", body=body, chunked=True,
                              chunk_size=16384)
            eq(r.status, 200, "client status")
            eq(r.json()["body_sha256"], sha256(body), "body sha256 the primary reports")
            # The copy was started (sent), then abandoned when the body passed the limit.
            after = wait_counts(admin_port, "big", lambda n: n.skipped > before.skipped,
                                "skipped to count it")
            eq((after.sent - before.sent, after.skipped - before.skipped), (1, 1),
               "(sent, skipped) deltas")

        @cases.case("bodies of exactly max_body_bytes are mirrored; the big ones never were")
        def _():
            body = os.urandom(BIG)
            with env.client() as c:
                for framing in ("cl", "chunked"):
                    r = c.request("POST", "/big/limit-" + framing, host="big.test", body=body,
                                  chunked=framing == "chunked")
                    eq(r.status, 200, "client status")
            for framing in ("cl", "chunked"):
                [s] = shadow.wait_records(lambda x: x["target"] == "/big/limit-" + framing)
                eq((s["body_bytes"], s["body_sha256"]), (BIG, sha256(body)),
                   "shadow body of %s (bytes, sha256)" % framing)
            # Sent after the big ones and already at the shadow: a copy of those would be too.
            big = shadow.find(lambda x: x["target"] in ("/big/cl", "/big/chunked"))
            eq([(x["target"], x["body_bytes"]) for x in big], [],
               "over-limit requests at the shadow")

        # ---- 6. bounded memory ---------------------------------------------------------------

        @cases.case("a black-hole shadow under 10,000 requests: drops, bounded RSS and fds")
        def _():
            N, THREADS, IN_FLIGHT = 10000, 4, 64
            pid = proxy.proc.pid
            before = ShadowCounts(admin_port, "bh")
            rss0, fds0 = proc_status(pid, "VmRSS"), fd_count(pid)
            t0 = time.monotonic()
            body = b"b" * 512

            def run(indices):
                c = env.client()
                bad = []
                try:
                    for i in indices:
                        r = c.request("POST", "/bh/%d" % i, host="bh.test", body=body)
                        if r.status != 200:
                            bad.append((i, r.status))
                finally:
                    c.close()
                return bad
            bad = [b for chunk in parallel(run, list(range(N)), threads=THREADS) for b in chunk]
            elapsed = time.monotonic() - t0
            rss1, fds1 = proc_status(pid, "VmRSS"), fd_count(pid)
            after = ShadowCounts(admin_port, "bh")
            sent, dropped = after.sent - before.sent, after.dropped - before.dropped
            info("%d requests in %.1f s; RSS %.1f -> %.1f MB (%+.1f MB); fds %d -> %d; "
                 "sent %d, dropped %d; black hole accepted %d connections"
                 % (N, elapsed, rss0 / 1e6, rss1 / 1e6, (rss1 - rss0) / 1e6, fds0, fds1,
                    sent, dropped, blackhole.accepted()))
            eq(bad[:5], [], "failed primary requests (index, status), first 5")
            eq(len(primary_bh.records()), N, "requests at the primary")
            eq(sent + dropped + (after.skipped - before.skipped), N, "sent + dropped + skipped")
            # Every copy sent is still waiting on the black hole (upstream_response_ms is 30 s,
            # longer than this case), so at most workers x max_in_flight were ever sent.
            if elapsed < 25:
                expect(sent <= WORKERS * IN_FLIGHT, "%d copies sent, want <= %d"
                       % (sent, WORKERS * IN_FLIGHT))
                accepted = blackhole.accepted()
                expect(accepted <= WORKERS * IN_FLIGHT,
                       "black hole accepted %d connections, want <= %d"
                       % (accepted, WORKERS * IN_FLIGHT))
            expect(dropped > 0, "no copy dropped")
            # The bound: what the limits allow is workers x max_in_flight copies of at most
            # max_body_bytes each (2 x 64 x 64 KiB = 8 MiB) plus their connection buffers and
            # the client side of 4 connections; 48 MB leaves room for allocator slack and
            # keeps the test meaningful (10,000 queued copies of a 512-byte request with
            # their bufferevents and sockets would exceed it, and the fd check catches them
            # regardless).
            expect(rss1 - rss0 < 48e6, "RSS grew by %.1f MB, want < 48 MB"
                   % ((rss1 - rss0) / 1e6))
            expect(fds1 - fds0 <= WORKERS * IN_FLIGHT + 16,
                   "open fds grew by %d, want <= %d" % (fds1 - fds0, WORKERS * IN_FLIGHT + 16))

        # ---- reload with copies in flight -----------------------------------------------------

        @cases.case("reload while 50 copies wait on the slow shadow: they finish, no crash")
        def _():
            before = ShadowCounts(admin_port, "slow")
            with env.client() as c:
                for i in range(50):
                    r = c.request("GET", "/reload/%d" % i, host="slow.test")
                    eq(r.status, 200, "client status of request %d" % i)
            wait_until(lambda: len([r for r in sleeper.shadow_records()
                                    if r["target"].startswith("/reload/")]) >= 50,
                       10, "50 copies at the sleeping shadow")
            # New snapshot: the slow route now mirrors to another pool, at 0%.
            reload_with([r if r["name"] != "slow" else
                         shadow_route("slow", "primary", "failer", percent=0.0)
                         for r in routes])
            after = wait_counts(admin_port, "slow",
                                lambda n: n.completed - before.completed >= 50,
                                "the 50 copies started before the reload to complete")
            eq((after.sent - before.sent, after.failed - before.failed), (50, 0),
               "(sent, failed) deltas")
            with env.client() as c:
                r = c.request("GET", "/reload/after", host="slow.test")
            eq(r.status, 200, "client status after the reload")
            eq(ShadowCounts(admin_port, "slow").sent, after.sent, "copies sent at 0% after reload")
            expect(proxy.alive(), "switchyard exited")

        cases.run()
    finally:
        for t in tiny:
            t.stop()
cases.exit()
