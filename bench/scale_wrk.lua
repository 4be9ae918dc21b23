-- wrk's script for `make bench-scale`'s ingest: every request a new firing VMDown alert (a new
-- fingerprint, so the store inserts it) for a VM of the simulated fleet, one alert a post as
-- Alertmanager sends them with rules/alertmanager.yml's grouping. Reads the fleet's VMs
-- ("host vm uuid" lines) from the file named by $BENCH_SCALE_VMS and the webhook's token from
-- $BENCH_SCALE_TOKEN; $BENCH_SCALE_RUN keeps each run's fingerprints apart from the last's. done() prints one JSON line that bench/scale_ingest.py reads.
local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  vms = {}
  for line in io.lines(os.getenv("BENCH_SCALE_VMS")) do
    local host, vm, uuid = line:match("(%S+) (%S+) (%S+)")
    table.insert(vms, {host, vm, uuid})
  end
  headers = {["Content-Type"] = "application/json",
             ["Authorization"] = "Bearer " .. os.getenv("BENCH_SCALE_TOKEN")}
  run = tonumber(os.getenv("BENCH_SCALE_RUN") or "0")
  healthz_only = os.getenv("BENCH_SCALE_FLOOR") == "1"  -- the same server's /healthz: HTTP + Flask alone
  n = 0
end

local template = '{"version":"4","groupKey":"{}:{remediation=\\"vm_down\\"}","truncatedAlerts":0,' ..
  '"status":"firing","receiver":"remediator","groupLabels":{},"commonLabels":{},"commonAnnotations":{},' ..
  '"externalURL":"http://127.0.0.1:9093","alerts":[{"status":"firing","labels":{"alertname":"VMDown",' ..
  '"remediation":"vm_down","host":"%s","vm":"%s","uuid":"%s"},"annotations":{"summary":"VMDown on %s"},' ..
  '"startsAt":"2026-12-01T%02d:%02d:%02d.%06dZ","endsAt":"0001-01-01T00:00:00Z",' ..
  '"generatorURL":"http://127.0.0.1:9090/graph","fingerprint":"%02x%02x%012x"}]}'

function request()
  if healthz_only then
    return wrk.format("GET", "/healthz")
  end
  n = n + 1
  local vm = vms[(n * 7919 + id) % #vms + 1]
  local second = math.floor(n / 1000000)
  local body = string.format(template, vm[1], vm[2], vm[3], vm[1], math.floor(second / 3600) % 24,
    math.floor(second / 60) % 60, second % 60, n % 1000000, run, id, n)
  return wrk.format("POST", "/api/v1/alerts", headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK-JSON {"requests": %d, "duration_us": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d, ' ..
    '"p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f, "mean_ms": %.3f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, latency.mean / 1000))
end
