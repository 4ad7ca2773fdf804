-- The wrk script of bench/load.py. args[1]: a file of pre-built requests, one per line as
-- METHOD<TAB>PATH[<TAB>JSON body]; each request is drawn from them at random (args[2] seeds the
-- draw). done() prints the run's statistics as one JSON line that starts with "BENCH ".
local pool = {}

function init(args)
  for line in io.lines(args[1]) do
    local method, path, body = line:match("^(%u+)\t([^\t]+)\t?(.*)$")
    local headers = {}
    if body == "" then
      body = nil
    else
      headers["Content-Type"] = "application/json"
    end
    pool[#pool + 1] = wrk.format(method, path, headers, body)
  end
  math.randomseed(tonumber(args[2] or "1"))
end

function request()
  return pool[math.random(#pool)]
end

function done(summary, latency, rate)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
