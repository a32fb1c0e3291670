-- wrk script for bench/compare.sh: one workload's request, and a JSON summary line.
--
-- Configured by the environment, so every system gets byte-for-byte the same requests:
--   BENCH_METHOD        GET or POST (default GET)
--   BENCH_BODY_FILE     request body, sent as application/json (optional)
--   BENCH_TOKEN         sent as `Authorization: Bearer <token>` on every request (optional)
--   BENCH_TOKENS_FILE   one credential per line; requests cycle through them in order, so
--                       each one recurs only after all the others (workload b)
--   BENCH_CLOSE         when 1, `Connection: close` on every request: the server closes
--                       after each answer and wrk connects again, a new (TLS) handshake per
--                       request (workload h)
-- Without BENCH_TOKENS_FILE no `request()` is defined, so wrk keeps its fast static request.
--
-- `done()` prints one line `WRKJSON {...}` with the totals, the error counts (a status of 400
-- or more counts as a `status` error) and latency percentiles in microseconds, including
-- p99.9, which wrk's own text output lacks.

wrk.method = os.getenv("BENCH_METHOD") or "GET"

local body_file = os.getenv("BENCH_BODY_FILE")
if body_file and body_file ~= "" then
   local f = assert(io.open(body_file, "rb"))
   wrk.body = f:read("*a")
   f:close()
   wrk.headers["Content-Type"] = "application/json"
end

local token = os.getenv("BENCH_TOKEN")
if token and token ~= "" then
   wrk.headers["Authorization"] = "Bearer " .. token
end

if os.getenv("BENCH_CLOSE") == "1" then
   wrk.headers["Connection"] = "close"
end

local tokens_file = os.getenv("BENCH_TOKENS_FILE")
if tokens_file and tokens_file ~= "" then
   local tokens = {}
   for line in io.lines(tokens_file) do
      if line ~= "" then tokens[#tokens + 1] = line end
   end
   assert(#tokens > 0, "no tokens in " .. tokens_file)

   local requests = nil
   local next_index = 0

   -- Formatted once, on the first call (wrk.host is set by then), then reused.
   local function build()
      requests = {}
      for i, t in ipairs(tokens) do
         local headers = {}
         for k, v in pairs(wrk.headers) do headers[k] = v end
         headers["Authorization"] = "Bearer " .. t
         requests[i] = wrk.format(nil, nil, headers)
      end
   end

   function request()
      if requests == nil then build() end
      next_index = next_index % #requests + 1
      return requests[next_index]
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p99_9":%d}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency.max,
      latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9)))
end
