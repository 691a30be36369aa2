"use strict";
(function () {
  const INTERVAL_MS = 2000;
  const FETCH_TIMEOUT_MS = 1900;
  const WEIGHTED = ["blue", "green", "canary"];
  const MISMATCH_KINDS = ["status", "body", "headers"];

  let prev = null;  // the previous sample: {t: ms (performance.now), idx: indexMetrics()}
  let samples = 0;

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of kids.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  // ---- Prometheus text exposition: a strict line parser ---------------------------------
  // Accepts `name{label="value",...} value [timestamp]`, comments and blank lines. A line
  // that does not parse is counted and skipped, never guessed at.

  const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
  const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*/;
  const NUMBER = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;

  function parseValue(s) {
    if (s === "+Inf" || s === "Inf") return Infinity;
    if (s === "-Inf") return -Infinity;
    if (s === "NaN") return NaN;
    return NUMBER.test(s) ? Number(s) : null;
  }

  function parseLine(line) {
    const m = NAME.exec(line);
    if (!m) return null;
    const name = m[0];
    const labels = {};
    let i = name.length;
    if (line[i] === "{") {
      i++;
      while (line[i] !== "}") {
        const lm = LABEL.exec(line.slice(i));
        if (!lm) return null;
        i += lm[0].length;
        if (line[i] !== "=" || line[i + 1] !== "\"") return null;
        i += 2;
        let v = "";
        for (;;) {
          if (i >= line.length) return null;
          const c = line[i++];
          if (c === "\"") break;
          if (c === "\\") {
            const e = line[i++];
            if (e === "n") v += "\n";
            else if (e === "\\" || e === "\"") v += e;
            else return null;
          } else {
            v += c;
          }
        }
        labels[lm[0]] = v;
        if (line[i] === ",") i++;
        else if (line[i] !== "}") return null;
      }
      i++;
    }
    if (line[i] !== " " && line[i] !== "\t") return null;
    const rest = line.slice(i).trim().split(/[ \t]+/);
    if (rest.length < 1 || rest.length > 2) return null;
    if (rest.length === 2 && !/^-?\d+$/.test(rest[1])) return null;
    const value = parseValue(rest[0]);
    if (value === null) return null;
    return {name, labels, value};
  }

  function parseMetrics(text) {
    const out = [];
    let errors = 0;
    for (const raw of text.split("\n")) {
      const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
      if (line.trim() === "" || line.startsWith("#")) continue;
      const s = parseLine(line);
      if (s) out.push(s);
      else errors++;
    }
    return {samples: out, errors};
  }

  // ---- metrics by route and variant ------------------------------------------------------

  function indexMetrics(list) {
    const routes = new Map();
    const conns = {};
    let generation = null;
    const route = (name) => {
      let r = routes.get(name);
      if (!r) routes.set(name, r = {variants: new Map(), shadow: {}, mismatch: {}});
      return r;
    };
    const variant = (rn, vn) => {
      const vs = route(rn).variants;
      let v = vs.get(vn);
      if (!v) vs.set(vn, v = {codes: {}, buckets: new Map(), upstreamErrors: {}});
      return v;
    };
    for (const s of list) {
      const l = s.labels;
      switch (s.name) {
        case "switchyard_requests_total":
          if (l.route !== undefined && l.variant !== undefined && l.code !== undefined)
            variant(l.route, l.variant).codes[l.code] = s.value;
          break;
        case "switchyard_request_duration_seconds_bucket":
          if (l.route !== undefined && l.variant !== undefined && l.le !== undefined)
            variant(l.route, l.variant).buckets.set(l.le, s.value);
          break;
        case "switchyard_upstream_errors_total":
          if (l.route !== undefined && l.variant !== undefined && l.kind !== undefined)
            variant(l.route, l.variant).upstreamErrors[l.kind] = s.value;
          break;
        case "switchyard_shadow_requests_total":
          if (l.route !== undefined && l.result !== undefined)
            route(l.route).shadow[l.result] = s.value;
          break;
        case "switchyard_shadow_mismatches_total":
          if (l.route !== undefined && l.kind !== undefined)
            route(l.route).mismatch[l.kind] = s.value;
          break;
        case "switchyard_connections_active":
          if (l.side !== undefined) conns[l.side] = s.value;
          break;
        case "switchyard_config_generation":
          generation = s.value;
          break;
      }
    }
    return {routes, conns, generation};
  }

  // ---- arithmetic ------------------------------------------------------------------------

  const sum = (xs) => xs.reduce((a, b) => a + b, 0);
  const sumObj = (o) => sum(Object.values(o));
  const leValue = (le) => (le === "+Inf" || le === "Inf") ? Infinity : Number(le);

  function sortedBuckets(map) {
    return [...map].map(([le, n]) => [leValue(le), n])
        .filter(([le]) => !Number.isNaN(le))
        .sort((a, b) => a[0] - b[0]);
  }

  // Prometheus' histogram_quantile: linear interpolation inside the bucket holding the rank.
  // A rank in the +Inf bucket can only be bounded below: {value: last finite bound, over}.
  function quantile(q, buckets) {
    if (buckets.length === 0) return null;
    const total = buckets[buckets.length - 1][1];
    if (!(total > 0)) return null;
    const rank = q * total;
    let lowerLe = 0;
    let lowerN = 0;
    for (const [le, n] of buckets) {
      if (n >= rank) {
        if (le === Infinity) return {value: lowerLe, over: true};
        if (n <= lowerN) return {value: le, over: false};
        return {value: lowerLe + (le - lowerLe) * (rank - lowerN) / (n - lowerN), over: false};
      }
      lowerLe = le;
      lowerN = n;
    }
    return {value: lowerLe, over: true};
  }

  const EMPTY_VARIANT = {codes: {}, buckets: new Map(), upstreamErrors: {}};

  // cur/old: one variant of indexMetrics() now and one interval ago (old null: first sample).
  function variantStats(cur, old, dt) {
    const served = sumObj(cur.codes);
    // A counter that went down means a new process: the old sample says nothing.
    const usable = old !== null && sumObj(old.codes) <= served && dt > 0;
    const delta = usable ? served - sumObj(old.codes) : 0;
    const interval = usable && delta > 0;
    let codes = cur.codes;
    let bucketMap = cur.buckets;
    if (interval) {
      codes = {};
      for (const k of Object.keys(cur.codes)) codes[k] = cur.codes[k] - (old.codes[k] || 0);
      bucketMap = new Map();
      for (const [k, n] of cur.buckets) bucketMap.set(k, n - (old.buckets.get(k) || 0));
    }
    const total = sumObj(codes);
    const buckets = sortedBuckets(bucketMap);
    return {
      served, delta, interval,
      rate: usable ? delta / dt : null,
      errorRate: total > 0 ? (codes["5xx"] || 0) / total : null,
      p50: quantile(0.5, buckets),
      p99: quantile(0.99, buckets),
    };
  }

  function routeStats(route, cur, old, dt) {
    const upstreams = route.upstreams || {};
    const weights = route.weights || {};
    const names = WEIGHTED.filter((v) => upstreams[v] !== undefined || (weights[v] || 0) > 0);
    const wsum = sum(names.map((v) => weights[v] || 0));
    const rows = names.map((v) => {
      const c = (cur && cur.variants.get(v)) || EMPTY_VARIANT;
      const o = old ? ((old.variants.get(v)) || EMPTY_VARIANT) : null;
      return Object.assign({name: v, pool: upstreams[v] || null,
                            weight: wsum > 0 ? (weights[v] || 0) / wsum : 0},
                           variantStats(c, o, dt));
    });
    const intervalTotal = sum(rows.map((r) => r.delta));
    const liveInterval = intervalTotal > 0;
    const base = liveInterval ? intervalTotal : sum(rows.map((r) => r.served));
    for (const r of rows) {
      r.share = base > 0 ? (liveInterval ? r.delta : r.served) / base : null;
    }

    let shadow = null;
    if (upstreams.shadow !== undefined || route.shadow_percent !== undefined) {
      const cs = cur ? cur.shadow : {};
      const cm = cur ? cur.mismatch : {};
      const os = old ? old.shadow : null;
      const om = old ? old.mismatch : {};
      const usable = os !== null && (cs.completed || 0) >= (os.completed || 0) && dt > 0;
      const interval = usable && (cs.completed || 0) > (os.completed || 0);
      const completed = interval ? cs.completed - (os.completed || 0) : (cs.completed || 0);
      const kinds = {};
      for (const k of MISMATCH_KINDS) {
        const m = interval ? (cm[k] || 0) - (om[k] || 0) : (cm[k] || 0);
        kinds[k] = completed > 0 ? m / completed : null;
      }
      // A response can differ in several ways at once (status and body), and the counters
      // are per kind: the largest kind is the share of responses known to differ.
      const worst = completed > 0 ? Math.max(...MISMATCH_KINDS.map((k) => kinds[k])) : null;
      shadow = {
        pool: upstreams.shadow || null, percent: route.shadow_percent, interval, completed,
        kinds, worst,
        sentRate: usable ? ((cs.sent || 0) - (os.sent || 0)) / dt : null,
        totals: cs,
      };
    }
    return {rows, liveInterval, shadow};
  }

  // ---- formatting ------------------------------------------------------------------------

  function pct(x) {
    if (x === null || x === undefined || Number.isNaN(x)) return "\u2014";
    const p = x * 100;
    if (p === 0) return "0.0%";
    if (p < 0.1) return p < 0.01 ? "<0.01%" : p.toFixed(2) + "%";
    return p.toFixed(1) + "%";
  }

  function fmtRate(r) {
    if (r === null || r === undefined) return "\u2014";
    if (r < 10) return r.toFixed(2);
    if (r < 1000) return r.toFixed(1);
    return Math.round(r).toLocaleString("en-US");
  }

  function fmtSeconds(s) {
    const ms = s * 1000;
    if (ms < 1) return ms.toFixed(2) + " ms";
    if (ms < 10) return ms.toFixed(1) + " ms";
    if (ms < 1000) return Math.round(ms) + " ms";
    return s.toFixed(2) + " s";
  }

  function fmtLatency(q) {
    if (q === null) return "\u2014";
    return (q.over ? "> " : "") + fmtSeconds(q.value);
  }

  function level(x, warnAt, badAt) {
    if (x === null || x === undefined) return "";
    return x >= badAt ? "bad" : x >= warnAt ? "warn" : "";
  }

  const color = (v) => ["blue", "green", "canary", "shadow"].includes(v)
      ? "var(--" + v + ")" : "var(--other)";

  function ago(iso) {
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return "";
    const s = Math.max(0, Math.round((Date.now() - t) / 1000));
    if (s < 90) return s + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    if (s < 129600) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
  }

  // ---- rendering -------------------------------------------------------------------------

  function bar(kind, routeName, parts, emptyText) {
    const b = el("div", {class: "bar", "data-kind": kind, "data-route": routeName});
    if (parts.every(([, x]) => !(x > 0))) {
      b.append(el("span", {class: "bar-empty"}, emptyText));
      return b;
    }
    for (const [name, x] of parts) {
      if (!(x > 0)) continue;
      const label = name + " " + pct(x);
      b.append(el("div", {
        class: "seg", "data-variant": name, title: label,
        style: "width:" + (x * 100) + "%;background:" + color(name),
      }, x >= 0.1 ? label : x >= 0.04 ? pct(x) : ""));
    }
    return b;
  }

  function cell(field, value, text, extraClass, title) {
    return el("td", {
      class: "num" + (extraClass ? " " + extraClass : ""), "data-field": field,
      "data-value": value === null || value === undefined ? null : value, title: title || null,
    }, text);
  }

  function renderRoute(route, st, dt, first) {
    const basisText = st.liveInterval
        ? "share, 5xx and latency over the last " + dt.toFixed(1) + " s"
        : first ? "share, 5xx and latency since start"
                : "no traffic in the last " + dt.toFixed(1) +
                  " s: share, 5xx and latency since start";
    const head = el("div", {class: "route-head"},
        el("h2", {}, route.name),
        route.shadow_percent !== undefined
            ? el("span", {class: "badge"}, "shadow " + route.shadow_percent + "%") : null,
        el("span", {class: "basis"}, basisText));
    const bars = el("div", {class: "bars"},
        el("span", {class: "bar-label"}, "configured"),
        bar("weights", route.name, st.rows.map((r) => [r.name, r.weight]), "all weights are 0"),
        el("span", {class: "bar-label"}, "live"),
        bar("live", route.name, st.rows.map((r) => [r.name, r.share]), "no traffic yet"));

    const tbody = el("tbody");
    for (const r of st.rows) {
      // A variant with no traffic in the interval of a busy route shows its cumulative
      // figures, greyed, so a quiet variant does not look like it has no history.
      const old = !r.interval && st.liveInterval;
      const oldTitle = old ? "no traffic in the last interval: since start" : null;
      tbody.append(el("tr", {
        class: "variant", "data-route": route.name, "data-variant": r.name,
        "data-basis": r.interval ? "interval" : "cumulative",
      },
        el("td", {class: "variant-name"},
           el("span", {class: "swatch", style: "background:" + color(r.name)}), r.name),
        el("td", {"data-field": "pool"}, r.pool || "\u2014"),
        cell("weight", r.weight, pct(r.weight)),
        cell("share", r.share, pct(r.share)),
        cell("rate", r.rate, fmtRate(r.rate)),
        cell("errors", r.errorRate, pct(r.errorRate),
             old ? "stale" : level(r.errorRate, 0.01, 0.05), oldTitle),
        cell("p50", r.p50 ? r.p50.value : null, fmtLatency(r.p50), old ? "stale" : "", oldTitle),
        cell("p99", r.p99 ? r.p99.value : null, fmtLatency(r.p99), old ? "stale" : "", oldTitle),
        cell("served", r.served, r.served.toLocaleString("en-US"), "dim")));
    }
    const table = el("table", {class: "variants"},
        el("thead", {}, el("tr", {},
            el("th", {}, "variant"), el("th", {}, "pool"), el("th", {class: "num"}, "weight"),
            el("th", {class: "num"}, "live share"), el("th", {class: "num"}, "req/s"),
            el("th", {class: "num"}, "5xx"), el("th", {class: "num"}, "p50"),
            el("th", {class: "num"}, "p99"), el("th", {class: "num"}, "served"))),
        tbody);

    let shadow = null;
    if (st.shadow) {
      const s = st.shadow;
      const t = s.totals;
      shadow = el("div", {
        class: "shadow", "data-route": route.name,
        "data-basis": s.interval ? "interval" : "cumulative",
      },
        el("span", {class: "shadow-title"},
           "shadow \u2192 " + (s.pool || "?") +
           (s.percent !== undefined ? " \u00b7 " + s.percent + "% mirrored" : "")),
        el("span", {title: "share of compared shadow responses that differed from the " +
                           "primary (largest kind; " +
                           (s.interval ? "last interval" : "since start") + ")"},
           "mismatch ",
           el("strong", {"data-field": "mismatch", "data-value": s.worst,
                         class: level(s.worst, 0.01, 0.05)}, pct(s.worst)),
           el("span", {class: "dim"}, " (",
              MISMATCH_KINDS.map((k, i) => [i ? " \u00b7 " : "", k + " ",
                  el("span", {"data-field": "mismatch-" + k, "data-value": s.kinds[k]},
                     pct(s.kinds[k]))]), ")")),
        el("span", {}, "compared ", el("span", {"data-field": "completed"}, s.completed)),
        el("span", {}, "mirrored/s ", el("span", {"data-field": "sent-rate"}, fmtRate(s.sentRate))),
        el("span", {class: "dim"},
           "failed " + (t.failed || 0) + " \u00b7 dropped " + (t.dropped || 0) +
           " \u00b7 skipped " + (t.skipped || 0)));
    }
    return el("article", {
      class: "route", id: "route-" + route.name, "data-route": route.name,
      "data-basis": st.liveInterval ? "interval" : "cumulative",
    }, head, bars, table, shadow);
  }

  function renderPools(status) {
    const usedBy = new Map();
    for (const r of status.routes || []) {
      for (const [variant, pool] of Object.entries(r.upstreams || {})) {
        if (!usedBy.has(pool)) usedBy.set(pool, []);
        usedBy.get(pool).push(r.name + "/" + variant);
      }
    }
    const rows = [];
    for (const p of status.pools || []) {
      const servers = p.servers || [];
      const used = (usedBy.get(p.name) || []).join(", ") || "\u2014";
      servers.forEach((s, i) => {
        const poolCells = i > 0 ? [] : [
          el("td", {rowspan: servers.length}, el("strong", {}, p.name)),
          el("td", {rowspan: servers.length, class: "dim"}, p.balance || ""),
          el("td", {rowspan: servers.length, class: "dim"}, p.health_check ? "active" : "passive"),
        ];
        const lastCells = i > 0 ? [] : [
          el("td", {rowspan: servers.length, class: "dim"}, used)];
        rows.push(el("tr", {
          class: "server", "data-pool": p.name, "data-server": s.address,
          "data-healthy": s.healthy ? "true" : "false",
        },
          poolCells,
          el("td", {}, s.address),
          el("td", {class: s.healthy ? "" : "bad"},
             el("span", {class: "dot " + (s.healthy ? "up" : "down")}),
             s.healthy ? "healthy" : "unhealthy"),
          el("td", {class: "num"}, s.active !== undefined ? s.active : "\u2014"),
          lastCells));
      });
    }
    $("pools").tBodies[0].replaceChildren(...rows);
  }

  // ---- rollouts (GET /rollouts, SPEC §11) ------------------------------------------------
  // One card per rollout: state, stage timeline, current share, each check's evidence against
  // its threshold, needed vs seen, the verdict and the history. Server strings only ever go
  // into text nodes (el() appends them with createTextNode).

  const ROLLOUT_STATES = ["pending", "running", "holding", "waiting_gate", "paused", "failed",
                          "aborted", "complete"];
  const HISTORY_SHOWN = 12;
  // The evidence bar's log scale: ratio 10^LOG_MIN at the left edge, 10^LOG_MAX at the right;
  // the threshold (ratio 1) sits at LOG_MIN / (LOG_MIN - LOG_MAX) of the width.
  const LOG_MIN = -3;
  const LOG_MAX = 1;

  const isNum = (x) => typeof x === "number" && Number.isFinite(x);

  // Durations as a config writes them: "500ms", "30s", "10m", "1h30m".
  function fmtDuration(ms) {
    if (!isNum(ms) || ms < 0) return "\u2014";
    if (ms === 0) return "0s";
    if (ms % 1000 !== 0) return ms < 1000 ? ms + "ms" : (ms / 1000) + "s";
    let s = ms / 1000;
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    s %= 60;
    return (h ? h + "h" : "") + (m || (h && s) ? m + "m" : "") + (s ? s + "s" : "");
  }

  // A span of seconds for "in ..." / "... ago": "45 s", "12 min", "3 h".
  function fmtSpan(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 90) return s + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    if (s < 129600) return (s / 3600).toFixed(1) + " h";
    return Math.round(s / 86400) + " d";
  }

  // Three significant digits; grouped thousands above 1000: "0.008", "1.2", "150", "1,412".
  function fmtNum(x) {
    if (!isNum(x)) return "\u2014";
    if (Math.abs(x) >= 1000) return Math.round(x).toLocaleString("en-US");
    if (x === 0) return "0";
    return String(Number(x.toPrecision(3)));
  }

  function fmtPercent(p) {
    if (!isNum(p)) return "\u2014";
    return (Number.isInteger(p) ? String(p) : String(Number(p.toFixed(2)))) + "%";
  }

  function clock(iso) {
    if (typeof iso !== "string" || !iso) return "\u2014";
    const m = /T(\d\d:\d\d:\d\d)/.exec(iso);
    return m ? m[1] : iso;
  }

  function untilText(iso) {
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return "";
    const s = (t - Date.now()) / 1000;
    return s <= 0.5 ? "due now" : "in " + fmtSpan(s);
  }

  // What the rollout waits for, in words (contract: waiting_for).
  function waitingText(r) {
    const next = typeof r.next_transition === "string" ? r.next_transition : null;
    switch (r.waiting_for) {
      case "hold": return next ? "hold ends " + untilText(next) : "hold";
      case "start": return next ? "starts " + untilText(next) : "waiting for its start time";
      case "requests": return "waiting for judged requests";
      case "promote": return "waiting for promote";
      case "resume": return "waiting for resume";
      case "retry": return "waiting for retry";
      default: return next ? "next " + untilText(next) : "";
    }
  }

  function stageStatus(r, i) {
    const cur = isNum(r.stage) ? r.stage : 0;
    if (r.state === "complete") return i <= cur ? "done" : "todo";
    if (i < cur) return "done";
    if (i > cur) return "todo";
    if (r.state === "failed" || r.state === "aborted") return "failed";
    return "current";
  }

  function renderTimeline(r) {
    const stages = Array.isArray(r.stages) ? r.stages : [];
    const ol = el("ol", {class: "timeline", "data-route": r.route});
    ol.append(el("li", {class: "stage start", "data-stage": 0,
                        "data-status": (isNum(r.stage) && r.stage > 0) ? "done" : "current"},
                 el("span", {class: "stage-percent"}, "0%"),
                 el("span", {class: "stage-meta"}, "before")));
    stages.forEach((s, k) => {
      const i = k + 1;
      const status = stageStatus(r, i);
      let note = null;
      if (status === "current") {
        note = el("span", {class: "stage-next", "data-field": "next"}, waitingText(r));
      } else if (status === "failed") {
        note = el("span", {class: "stage-next bad", "data-field": "next"},
                  r.state + (r.waiting_for ? " \u00b7 " + waitingText(r) : ""));
      }
      ol.append(el("li", {class: "stage", "data-stage": i, "data-status": status,
                          title: "stage " + i + ": " + fmtPercent(s.percent) + " for " +
                                 fmtDuration(s.hold_ms) + (s.gate ? ", then a manual gate" : "")},
          el("span", {class: "stage-percent", "data-field": "percent",
                      "data-value": isNum(s.percent) ? s.percent : null}, fmtPercent(s.percent)),
          el("span", {class: "stage-meta"},
             el("span", {"data-field": "hold", "data-value": isNum(s.hold_ms) ? s.hold_ms : null},
                "hold " + fmtDuration(s.hold_ms)),
             s.gate ? el("span", {class: "gate", "data-field": "gate"}, " \u00b7 gate") : null),
          note));
    });
    return ol;
  }

  // evidence/threshold on a log scale from 10^LOG_MIN to 10^LOG_MAX; red at >= 1.
  function evidenceBar(ratio) {
    const known = isNum(ratio) && ratio >= 0;
    const pos = known && ratio > 0
        ? Math.min(1, Math.max(0, (Math.log10(ratio) - LOG_MIN) / (LOG_MAX - LOG_MIN))) : 0;
    const mark = -LOG_MIN / (LOG_MAX - LOG_MIN);
    const lvl = !known ? "" : ratio >= 1 ? "bad" : ratio >= 0.3 ? "warn" : "ok";
    return el("div", {class: "evidence-bar", "data-ratio": known ? ratio : null,
                      title: "evidence / threshold = " + (known ? fmtNum(ratio) : "?") +
                             " (log scale 0.001 \u2026 10; fails at 1)"},
        el("div", {class: "evidence-fill " + lvl, style: "width:" + (pos * 100).toFixed(2) + "%"}),
        el("div", {class: "evidence-mark", style: "left:" + (mark * 100).toFixed(2) + "%"}));
  }

  function renderChecks(r) {
    const checks = Array.isArray(r.checks) ? r.checks : [];
    if (checks.length === 0) {
      return el("p", {class: "empty", "data-field": "checks"}, "No check evaluated yet.");
    }
    const rows = checks.map((c) => {
      const ratio = isNum(c.ratio) ? c.ratio
          : isNum(c.evidence) && isNum(c.threshold) && c.threshold > 0
              ? c.evidence / c.threshold : null;
      return el("tr", {class: "check" + (c.failed ? " failed" : ""), "data-route": r.route,
                       "data-check": c.name, "data-failed": c.failed ? "true" : "false"},
          el("td", {class: "check-name"}, c.name),
          el("td", {class: "check-bar"}, evidenceBar(ratio)),
          el("td", {class: "num", "data-field": "evidence", "data-value": c.evidence},
             fmtNum(c.evidence)),
          el("td", {class: "num", "data-field": "threshold", "data-value": c.threshold},
             fmtNum(c.threshold)),
          el("td", {class: "num" + (ratio >= 1 ? " bad" : ""), "data-field": "ratio",
                    "data-value": ratio}, fmtNum(ratio)),
          el("td", {"data-field": "summary", class: c.failed ? "bad" : ""}, c.summary || ""));
    });
    return el("table", {class: "checks"},
        el("thead", {}, el("tr", {},
            el("th", {}, "check"), el("th", {}, "evidence / threshold (log)"),
            el("th", {class: "num"}, "evidence"), el("th", {class: "num"}, "threshold"),
            el("th", {class: "num"}, "ratio"), el("th", {}, "summary"))),
        el("tbody", {}, rows));
  }

  function renderHistory(r) {
    const events = Array.isArray(r.history) ? r.history.slice().reverse() : [];
    if (events.length === 0) return null;
    const shown = events.slice(0, HISTORY_SHOWN);
    const rows = shown.map((e) => el("tr", {class: "event", "data-event": e.event},
        el("td", {class: "dim", title: e.at || ""}, clock(e.at)),
        el("td", {}, el("strong", {}, e.event)),
        el("td", {}, el("span", {class: "rollout-state small", "data-state": e.state}, e.state)),
        el("td", {class: "num"}, isNum(e.stage) ? e.stage : "\u2014"),
        el("td", {class: "num"}, fmtPercent(e.percent)),
        el("td", {}, e.reason || ""),
        el("td", {class: "dim"}, e.verdict || "")));
    return el("details", {class: "history", open: true},
        el("summary", {}, "History, newest first (" + events.length + " event" +
                          (events.length === 1 ? "" : "s") +
                          (events.length > shown.length ? ", latest " + shown.length + " shown"
                                                        : "") + ")"),
        el("table", {class: "events"},
           el("thead", {}, el("tr", {},
               el("th", {}, "at"), el("th", {}, "event"), el("th", {}, "state"),
               el("th", {class: "num"}, "stage"), el("th", {class: "num"}, "share"),
               el("th", {}, "reason"), el("th", {}, "verdict"))),
           el("tbody", {}, rows)));
  }

  function renderRollout(r) {
    const stages = Array.isArray(r.stages) ? r.stages : [];
    const state = ROLLOUT_STATES.includes(r.state) ? r.state : "unknown";
    const percent = isNum(r.percent) ? r.percent : null;
    const head = el("div", {class: "route-head"},
        el("h3", {}, r.route),
        el("span", {class: "rollout-id", "data-field": "id"}, r.id),
        el("span", {class: "rollout-variants"},
           el("span", {class: "swatch", style: "background:" + color(r.variant)}),
           el("span", {class: "variant-name", "data-field": "variant"}, r.variant),
           " vs ",
           el("span", {class: "swatch", style: "background:" + color(r.baseline)}),
           el("span", {class: "variant-name", "data-field": "baseline"}, r.baseline)),
        el("span", {class: "rollout-state", "data-state": state, "data-field": "state"},
           String(r.state).replace("_", " ")),
        el("span", {class: "basis"},
           "stage " + (isNum(r.stage) ? r.stage : "?") + " of " + stages.length +
           " \u00b7 since " + clock(r.since) + (r.since ? " (" + ago(r.since) + ")" : "") +
           (r.on_failure ? " \u00b7 on failure: " + r.on_failure : "")));

    const share = el("div", {class: "rollout-share"},
        el("span", {class: "bar-label"}, "share"),
        el("div", {class: "bar share-bar", "data-route": r.route},
           percent > 0
               ? el("div", {class: "seg", "data-variant": r.variant,
                            style: "width:" + Math.min(100, percent) + "%;background:" +
                                   color(r.variant)},
                    percent >= 8 ? r.variant + " " + fmtPercent(percent) : "")
               : el("span", {class: "bar-empty"}, "no traffic to " + r.variant)),
        el("strong", {"data-field": "share", "data-value": percent}, fmtPercent(percent)));

    const seen = isNum(r.seen) ? r.seen : null;
    const needed = isNum(r.needed) ? r.needed : null;
    const facts = el("div", {class: "rollout-facts"},
        el("span", {}, "judged requests in this stage ",
           el("strong", {"data-field": "seen", "data-value": seen},
              seen !== null ? seen.toLocaleString("en-US") : "\u2014"),
           " of ",
           el("strong", {"data-field": "needed", "data-value": needed,
                         class: seen !== null && needed !== null && seen < needed ? "warn" : ""},
              needed !== null ? needed.toLocaleString("en-US") : "\u2014"),
           " needed"),
        isNum(r.interval_ms)
            ? el("span", {class: "dim"}, "judged every " + fmtDuration(r.interval_ms) +
                 (isNum(r.warmup_ms) ? ", warm-up " + fmtDuration(r.warmup_ms) : "") +
                 (isNum(r.confidence) ? ", confidence " + r.confidence : "") +
                 (isNum(r.intervals) ? " \u00b7 " + r.intervals + " intervals judged" : ""))
            : null);

    const verdict = el("p", {class: "verdict" + (state === "failed" ? " bad" : ""),
                             "data-field": "verdict"},
        el("span", {class: "dim"}, "verdict "), r.verdict || "\u2014");

    return el("article", {class: "rollout", "data-route": r.route, "data-id": r.id,
                          "data-state": state, id: "rollout-" + r.route},
        head, renderTimeline(r), share, facts, renderChecks(r), verdict, renderHistory(r));
  }

  // result: {list: [...]} or {error: "..."}; an error keeps the last cards and says so.
  function renderRollouts(result) {
    const panel = $("rollouts-panel");
    const note = $("rollouts-note");
    if (result.error) {
      note.textContent = "cannot refresh: " + result.error;
      note.classList.add("bad");
      return;
    }
    note.classList.remove("bad");
    const list = result.list;
    panel.hidden = list.length === 0;
    note.textContent = list.length === 1 ? "1 rollout" : list.length + " rollouts";
    $("rollouts").replaceChildren(...list.map(renderRollout));
  }

  function render(status, cur, old, parseErrors) {
    const dt = old ? (cur.t - old.t) / 1000 : 0;
    $("version").textContent = status.version || "?";
    $("generation").textContent = status.generation !== undefined ? status.generation : "?";
    $("loaded-at").textContent = (status.loaded_at || "?") +
        (status.loaded_at ? " (" + ago(status.loaded_at) + ")" : "");
    $("config-path").textContent = status.config || "";
    $("config-path").title = status.config || "";
    const conns = cur.idx.conns;
    $("conn-client").textContent = conns.client !== undefined ? conns.client : "\u2014";
    $("conn-upstream").textContent = conns.upstream !== undefined ? conns.upstream : "\u2014";

    const cards = (status.routes || []).map((r) => renderRoute(
        r, routeStats(r, cur.idx.routes.get(r.name) || null,
                      old ? (old.idx.routes.get(r.name) || null) : null, dt),
        dt, old === null));
    if (cards.length === 0) cards.push(el("p", {class: "empty"}, "No routes configured."));
    $("routes").replaceChildren(...cards);
    renderPools(status);
    $("parse-errors").textContent = parseErrors > 0
        ? "\u00b7 " + parseErrors + " metric line(s) did not parse" : "";
    return status.draining ? "draining" : "live";
  }

  function setState(state, message) {
    const s = $("state");
    s.dataset.state = state;
    s.textContent = state === "error" ? "stale" : state;
    const e = $("error");
    e.hidden = !message;
    e.textContent = message || "";
  }

  async function fetchText(url, signal) {
    const r = await fetch(url, {cache: "no-store", signal});
    if (!r.ok) throw new Error(url + ": HTTP " + r.status);
    return r.text();
  }

  // GET /rollouts as {list} or {error}: a failure here must not stop the rest of the page.
  // 404 is a proxy without rollouts: nothing to show.
  async function fetchRollouts(signal) {
    try {
      const r = await fetch("rollouts", {cache: "no-store", signal});
      if (r.status === 404) return {list: []};
      if (!r.ok) return {error: "/rollouts: HTTP " + r.status};
      const list = JSON.parse(await r.text());
      if (!Array.isArray(list)) return {error: "/rollouts: not a JSON array"};
      return {list: list.filter((x) => x && typeof x === "object")};
    } catch (err) {
      if (err && err.name === "AbortError") throw err;
      return {error: "/rollouts: " + String((err && err.message) || err)};
    }
  }

  async function tick() {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    try {
      const [statusText, metricsText, rollouts] = await Promise.all(
          [fetchText("status", ctl.signal), fetchText("metrics", ctl.signal),
           fetchRollouts(ctl.signal)]);
      const status = JSON.parse(statusText);
      const parsed = parseMetrics(metricsText);
      const cur = {t: performance.now(), idx: indexMetrics(parsed.samples)};
      const state = render(status, cur, prev, parsed.errors);
      renderRollouts(rollouts);
      prev = cur;
      samples++;
      $("samples").dataset.samples = String(samples);
      $("samples").textContent = samples + (samples === 1 ? " sample" : " samples");
      $("updated").textContent = new Date().toLocaleTimeString("en-GB");
      setState(state, null);
    } catch (err) {
      const why = err && err.name === "AbortError"
          ? "timed out" : String((err && err.message) || err);
      setState("error", "Cannot refresh from the admin endpoint (" + why + "); " +
                        (samples > 0 ? "showing the last good data." : "no data yet."));
    } finally {
      clearTimeout(timer);
      setTimeout(tick, INTERVAL_MS);
    }
  }

  tick();
})();
