#!/usr/bin/env python3
"""Segments and location (SPEC §13) end to end: the real proxy, real upstreams, a MaxMind DB
built at test time with Debian's libmaxmind-db-writer-perl, and clients that connect from
127.0.0.2/.3/.4 to appear from New Zealand, Australia and the United States.

  - requests reach the canary by country (an override naming a segment with country = [...]),
    and the access log's "country" says where each came from;
  - 100,000 users in a keys_file get the canary; others are split by hash;
  - a rollout stage with segments = ["staff"] sends staff to the rolled-out variant at 1%, and
    no longer after an abort; /rollouts shows the segments in effect and per stage;
  - conditions are ANDed (staff needs the header and a client address);
  - SIGHUP re-reads an edited keys file;
  - behind a balancer the country is the real client's: from a PROXY protocol header, and from
    X-Forwarded-For sent by a trusted proxy (127.0.0.5), never from an untrusted peer's.

    python3 tests/integration/test_segments.py build/proxy/switchyard
"""

import json
import os
import re
import signal
import socket
import subprocess
from types import SimpleNamespace

from harness import (HOST, CaseFailure, Cases, Client, Env, admin_get, config_doc, eq, expect,
                     free_port, route, wait_until)

cases = Cases("segments")
S = SimpleNamespace()
HDR = "X-Switchyard-Variant"
BETA_USERS = 100000
COUNTRY_OF = {"127.0.0.2": "NZ", "127.0.0.3": "AU", "127.0.0.4": "US", "127.0.0.1": ""}

# Networks are written as IPv4 into an IPv6 tree with alias_ipv6_to_ipv4 (as MaxMind's own
# databases are): libmaxminddb looks an AF_INET address up in the tree's IPv4 subtree.
# remove_reserved_networks => 0: the writer otherwise refuses loopback networks.
MMDB_WRITER = r"""
use strict; use warnings;
use MaxMind::DB::Writer::Tree;
my $tree = MaxMind::DB::Writer::Tree->new(
  ip_version => 6, record_size => 24, database_type => 'Switchyard-Test-Country',
  languages => ['en'], description => { en => 'switchyard integration test' },
  map_key_type_callback => sub { { country => 'map', iso_code => 'utf8_string' }->{$_[0]} },
  remove_reserved_networks => 0, alias_ipv6_to_ipv4 => 1);
my %country = ('127.0.0.2/32' => 'NZ', '127.0.0.3/32' => 'AU', '127.0.0.4/32' => 'US');
for my $net (sort keys %country) {
  $tree->insert_network($net, { country => { iso_code => $country{$net} } });
}
open my $fh, '>:raw', $ARGV[0] or die "$ARGV[0]: $!";
$tree->write_tree($fh);
close $fh;
"""


def beta_user(i):
    return "beta-%06d" % i


def get(path, user=None, source=None, headers=()):
    """One request on a new connection from `source`; (variant header, X-Upstream)."""
    hs = list(headers)
    if user is not None:
        hs.append(("X-User-Id", user))
    with Client(S.env.proxy.port, source=source) as c:
        r = c.request("GET", path, headers=hs)
    if r.status != 200:
        raise CaseFailure("GET %s as %s from %s: status %d %r" % (path, user, source, r.status,
                                                                  r.body[:200]))
    eq(r.header(HDR), r.header("X-Upstream"), "variant header vs the upstream that answered")
    return r.header("X-Upstream")


def variants(path, users, **kw):
    """One keep-alive connection; {user: X-Upstream}."""
    out = {}
    with Client(S.env.proxy.port) as c:
        for u in users:
            r = c.request("GET", path, headers=[("X-User-Id", u)] + list(kw.get("headers", ())))
            if r.status != 200:
                raise CaseFailure("GET %s as %s: status %d" % (path, u, r.status))
            out[u] = r.header("X-Upstream")
    return out


def access_log():
    try:
        lines = S.log_path.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def rollout():
    return json.loads(admin_get(S.admin, "/rollouts/ro"))


def admin_post(path):
    with Client(S.admin, timeout=5) as c:
        r = c.request("POST", path, host="admin", body=b"{}")
    return r


# ---- location --------------------------------------------------------------------------------

@cases.case("by country: clients from NZ and AU get the canary, from US and no country blue")
def _():
    for source, want in (("127.0.0.2", "canary"), ("127.0.0.3", "canary"),
                         ("127.0.0.4", "blue"), ("127.0.0.1", "blue")):
        for user in ("u1", "u2", "u3"):
            eq(get("/geo/x", user, source=source), want,
               "variant for %s from %s (%s)" % (user, source, COUNTRY_OF[source] or "no country"))
    # What the upstream received agrees: the NZ requests reached the canary's server.
    from_nz = ["X-Forwarded-For", "127.0.0.2"]
    seen = S.ups["canary"].wait_records(
        lambda r: r.get("target") == "/geo/x" and from_nz in r["headers"], count=3)
    expect(len(seen) >= 3, "the canary upstream saw %d requests from 127.0.0.2" % len(seen))


@cases.case("the access log names each client's country (\"\" when the database has none)")
def _():
    def logged():
        got = {}
        for e in access_log():
            if e.get("path") == "/geo/x":
                got.setdefault(e["client"], set()).add(e.get("country"))
        return got if len(got) == 4 else None
    got = wait_until(logged, 5, "access-log lines of the /geo requests from 4 addresses")
    eq({k: sorted(v) for k, v in got.items()},
       {ip: [c] for ip, c in COUNTRY_OF.items()}, "countries logged per client address")


@cases.case("behind a balancer: the country of the PROXY header's address and of a trusted "
            "proxy's X-Forwarded-For decides; an untrusted peer's X-Forwarded-For does not")
def _():
    def via_proxy_protocol(src, user):
        request = ("PROXY TCP4 %s 127.0.0.1 40000 %d\r\nGET /geo/pp HTTP/1.1\r\nHost: %s\r\n"
                   "X-User-Id: %s\r\nConnection: close\r\n\r\n" % (src, S.pp_port, HOST, user))
        with socket.create_connection(("127.0.0.1", S.pp_port), timeout=10) as sock:
            sock.sendall(request.encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        expect(head.startswith("HTTP/1.1 200"), "PROXY from %s: %r" % (src, head[:200]))
        m = re.search(r"(?im)^x-upstream: *(\S+)", head)
        expect(m is not None, "X-Upstream in %r" % head[:300])
        return m.group(1)

    for src, want in (("127.0.0.2", "canary"), ("127.0.0.3", "canary"), ("127.0.0.4", "blue")):
        eq(via_proxy_protocol(src, "u1"), want, "PROXY header from %s (%s)" % (src, COUNTRY_OF[src]))
    # 127.0.0.5 is in trusted_proxies: its X-Forwarded-For names the client.
    eq(get("/geo/xff", "u1", source="127.0.0.5", headers=[("X-Forwarded-For", "127.0.0.3")]),
       "canary", "AU client behind the trusted proxy")
    eq(get("/geo/xff", "u1", source="127.0.0.5", headers=[("X-Forwarded-For", "127.0.0.4")]),
       "blue", "US client behind the trusted proxy")
    # 127.0.0.4 (US) is not trusted: claiming to be from NZ changes nothing.
    eq(get("/geo/xff", "u1", source="127.0.0.4", headers=[("X-Forwarded-For", "127.0.0.2")]),
       "blue", "spoofed X-Forwarded-For from an untrusted peer")
    def logged():
        return {(e["path"], e["client"], e.get("country")) for e in access_log()}
    for want in (("/geo/pp", "127.0.0.2", "NZ"), ("/geo/xff", "127.0.0.3", "AU"),
                 ("/geo/xff", "127.0.0.4", "US")):
        wait_until(lambda: want in logged(), 5, "access-log line (path, client, country) %r"
                   % (want,))


# ---- keys_file -------------------------------------------------------------------------------

@cases.case("keys_file: a sample of the 100,000 beta users get the canary; others by hash")
def _():
    sample = [beta_user(i) for i in range(0, BETA_USERS, BETA_USERS // 200)]
    got = variants("/beta/x", sample)
    wrong = {u: v for u, v in got.items() if v != "canary"}
    eq(dict(list(wrong.items())[:5]), {}, "beta users not on the canary (of %d)" % len(sample))
    others = ["other-%d" % i for i in range(200)]
    got = variants("/beta/x", others)
    canary = sum(1 for v in got.values() if v == "canary")
    # blue 80 / canary 20 by hash: 200 users give ~40 canary; far from 0 and from 200.
    expect(10 <= canary <= 80, "%d of 200 other users on the canary (weights 80/20)" % canary)
    again = variants("/beta/x", others)
    eq(again, got, "other users keep their hashed variant")
    S.others = got


# ---- rollout stage segments ------------------------------------------------------------------

@cases.case("/rollouts: stage 1 (1%) lists segments [\"staff\"], and they are in effect")
def _():
    r = rollout()
    eq((r["state"], r["stage"], r["percent"]), ("running", 1, 1.0), "state, stage, percent")
    eq([st["segments"] for st in r["stages"]], [["staff"], []], "segments per stage")
    eq(r["segments"], ["staff"], "segments in effect")


@cases.case("rollout at 1%: staff get the canary; others (and the header from elsewhere) blue")
def _():
    staff = [("X-Staff", "yes")]
    for i in range(20):
        eq(get("/ro/x", "staff-%d" % i, source="127.0.0.1", headers=staff), "canary",
           "staff-%d with X-Staff: yes from 127.0.0.1" % i)
    # AND: the header alone, from an address outside the segment's client_ip, is not staff.
    for i in range(20):
        eq(get("/ro/x", "staff-%d" % i, source="127.0.0.3", headers=staff), "blue",
           "staff-%d with X-Staff: yes from 127.0.0.3 (not in client_ip)" % i)
    got = variants("/ro/x", ["user-%d" % i for i in range(100)])
    canary = sum(1 for v in got.values() if v == "canary")
    expect(canary <= 8, "%d of 100 non-staff users on the canary at 1%%" % canary)


@cases.case("after an abort, staff get the baseline again and /rollouts lists no segment")
def _():
    r = admin_post("/rollouts/ro/abort")
    eq(r.status, 200, "POST /rollouts/ro/abort: %r" % r.body[:200])
    wait_until(lambda: rollout()["state"] == "aborted", 5, "the rollout to be aborted")
    eq(rollout()["segments"], [], "segments in effect after the abort")

    def staff_on_blue():
        return get("/ro/x", "staff-1", source="127.0.0.1", headers=[("X-Staff", "yes")]) == "blue"
    wait_until(staff_on_blue, 5, "staff-1 to be back on blue")
    for i in range(20):
        eq(get("/ro/x", "staff-%d" % i, source="127.0.0.1", headers=[("X-Staff", "yes")]),
           "blue", "staff-%d after the abort" % i)


# ---- reload ----------------------------------------------------------------------------------

@cases.case("SIGHUP re-reads the keys file: removed users leave the canary, a new one joins")
def _():
    removed = [beta_user(i) for i in range(50)]
    keys = S.keys_path.read_text().splitlines()
    kept = [k for k in keys if k not in set(removed)]
    tmp = S.keys_path.with_suffix(".tmp")
    tmp.write_text("\n".join(kept + ["  newcomer-1  ", "# a comment", ""]) + "\n")
    os.replace(tmp, S.keys_path)
    S.env.proxy.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: variants("/beta/x", ["newcomer-1"])["newcomer-1"] == "canary", 10,
               "newcomer-1 (added to the keys file) to get the canary after SIGHUP")
    got = variants("/beta/x", removed)
    blue = sum(1 for v in got.values() if v == "blue")
    # Out of the segment they are hashed at 80/20: ~40 of 50 on blue.
    expect(blue >= 25, "%d of 50 removed users on blue after the reload" % blue)
    eq(variants("/beta/x", [beta_user(BETA_USERS - 1)]), {beta_user(BETA_USERS - 1): "canary"},
       "a user still in the file")
    eq(variants("/beta/x", list(S.others)), S.others, "other users keep their variant")


@cases.case("--check: an unknown segment, an invalid country code, an unreadable keys file")
def _():
    bad = S.env.dir / "bad.toml"
    text = S.env.proxy.config_path.read_text()
    text = text.replace('country = ["NZ", "AU"]', 'country = ["NZ", "UK"]')
    text = text.replace('keys_file = "beta-users.txt"', 'keys_file = "missing.txt"')
    text = text.replace('segment = "oceania"', 'segment = "oceana"')
    bad.write_text(text)
    p = subprocess.run([str(S.env.proxy.binary), "--check", "--config", str(bad)],
                       capture_output=True, text=True, timeout=30)
    eq(p.returncode, 1, "exit status of --check")
    for want in ('segments.oceania.country[1]: "UK" is not an assigned ISO 3166-1',
                 "segments.beta.keys_file: cannot read",
                 'segment: no segment named "oceana"'):
        expect(want in p.stderr, "%r not in --check's output:\n%s" % (want, p.stderr))
    expect(all(line.startswith(str(bad) + ":") for line in p.stderr.splitlines()),
           "every error starts with file:line:col:\n%s" % p.stderr)


def main():
    with Env(cases) as env:
        S.env = env
        S.ups = {name: env.upstream(name) for name in ("blue", "canary")}
        mmdb = env.dir / "countries.mmdb"
        subprocess.run(["perl", "-e", MMDB_WRITER, str(mmdb)], check=True, timeout=60)
        S.keys_path = env.dir / "beta-users.txt"
        S.keys_path.write_text("# beta testers\n" +
                               "".join(beta_user(i) + "\n" for i in range(BETA_USERS)))
        S.log_path = env.dir / "access.log"
        S.admin = free_port()
        ups = {"blue": "blue", "canary": "canary"}
        routes = [
            route("geo", ups, {"blue": 100}, path="^/geo/",
                  overrides=[{"segment": "oceania", "variant": "canary"}]),
            route("beta", ups, {"blue": 80, "canary": 20}, path="^/beta/",
                  overrides=[{"segment": "beta", "variant": "canary"}]),
            route("ro", ups, {"blue": 100}, path="^/ro/"),
        ]
        routes[2]["rollout"] = {
            "id": "ro-1", "variant": "canary", "baseline": "blue", "start": "on_load",
            "stages": [{"percent": 1, "hold": "1h", "segments": ["staff"]},
                       {"percent": 50, "hold": "1h"}],
        }
        doc = config_doc(free_port(), pools={n: [u.addr] for n, u in S.ups.items()},
                         routes=routes, admin_port=S.admin,
                         server={"geoip_database": "countries.mmdb",
                                 "access_log": str(S.log_path),
                                 "state_dir": str(env.dir / "state"),
                                 "trusted_proxies": ["127.0.0.5/32"]})
        S.pp_port = free_port()
        doc["listener"] = [{"address": "127.0.0.1:%d" % S.pp_port, "proxy_protocol": True}]
        doc["segments"] = {
            "beta": {"keys_file": "beta-users.txt"},
            "oceania": {"country": ["NZ", "AU"]},
            "staff": {"header": "X-Staff", "regex": "^yes$",
                      "client_ip": ["127.0.0.1/32", "127.0.0.2/32"]},
        }
        env.start_proxy(doc)
        cases.run()
    cases.exit()


if __name__ == "__main__":
    main()
