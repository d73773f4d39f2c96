-- What every wrk script of `make bench` shares: one JSON line at the end
-- (prefixed WRK_JSON, on stdout) with the counts and latency percentiles the
-- harness reads, so no figure depends on parsing wrk's human summary.
local report = {}

function report.done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end

-- Gives each wrk thread its number, so ids made in different threads differ.
local threads = 0
function report.number_thread(thread)
  threads = threads + 1
  thread:set("thread_no", threads)
end

return report
