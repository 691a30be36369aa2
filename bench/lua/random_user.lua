-- wrk script for bench/load: every request carries a random X-User-Id, so the proxy under test
-- hashes a new key each time and the split spreads requests over its variants.
-- At the end it prints one machine-readable line that bench/load parses:
--   RESULT requests=N duration_us=N p50_us=N p99_us=N errors=N non2xx=N bytes=N

local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end

function init(args)
  -- Distinct sequences per thread and per run.
  math.randomseed(os.time() * 1000 + (id or 0))
end

function request()
  wrk.headers["X-User-Id"] = "user" .. math.random(1, 10000000)
  return wrk.format("GET", wrk.path)  -- the path of the URL given to wrk
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d non2xx=%d bytes=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status, summary.bytes))
end
