-- Shared by every wrk run of `make bench`: prints one JSON line the runner parses.
-- POST_BODY in the environment turns the requests into task creations.
-- COOKIE (a dashboard session) is sent instead of the key when set.
local cookie = os.getenv("COOKIE")
if cookie then
  wrk.headers["Cookie"] = cookie
else
  wrk.headers["X-API-Key"] = os.getenv("API_KEY")
end
local body = os.getenv("POST_BODY")
if body then
  wrk.method = "POST"
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "socket_errors": %d, "non_2xx": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
