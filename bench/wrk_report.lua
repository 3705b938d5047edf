-- wrk script shared by every scenario of bench/gateway_load.py.
--
-- Configured by environment variables, read when each of wrk's Lua states loads this file:
--   GAZE_WRK_PATHS   a file with one request path per line: requests rotate over them, each wrk thread
--                    starting at a different offset (requests are pre-built in init(), so rotating
--                    costs one table lookup). Unset: every request goes to the URL given to wrk.
--   GAZE_WRK_METHOD  GET (default) or POST
--   GAZE_WRK_BODY    request body (sent with Content-Type: application/json)
--   GAZE_WRK_KEY     sent as the X-API-Key header
--
-- response() counts every status outside 2xx (wrk itself only counts status > 399, and only if asked),
-- done() prints one line, "GAZE_WRK_RESULT {json}", with requests/s, latency percentiles (ms), the
-- non-2xx count, the status codes seen and wrk's socket errors.

local paths_file = os.getenv("GAZE_WRK_PATHS")
wrk.method = os.getenv("GAZE_WRK_METHOD") or "GET"
local body = os.getenv("GAZE_WRK_BODY")
if body and body ~= "" then
   wrk.body = body
   wrk.headers["Content-Type"] = "application/json"
end
local key = os.getenv("GAZE_WRK_KEY")
if key and key ~= "" then
   wrk.headers["X-API-Key"] = key
end

-- per-thread counters (each wrk thread runs its own Lua state); done() collects them with thread:get
ok2xx = 0
non2xx = 0
statuses = {}

local threads = {}

function setup(thread)
   thread:set("thread_index", #threads)
   table.insert(threads, thread)
end

if paths_file and paths_file ~= "" then
   local requests, position = {}, 0

   function init(args)
      for line in io.lines(paths_file) do
         if line ~= "" then
            requests[#requests + 1] = wrk.format(nil, line)
         end
      end
      if #requests == 0 then
         error("GAZE_WRK_PATHS: no paths in " .. paths_file)
      end
      -- spread the threads over the list so they do not ask for the same job at the same moment
      position = math.floor((thread_index or 0) * #requests / 2) % #requests
   end

   function request()
      position = position % #requests + 1
      return requests[position]
   end
end

function response(status, headers, body)
   if status >= 200 and status < 300 then
      ok2xx = ok2xx + 1
   else
      non2xx = non2xx + 1
      local code = tostring(status)
      statuses[code] = (statuses[code] or 0) + 1
   end
end

local function json_value(value)
   if type(value) == "table" then
      local parts = {}
      for k, v in pairs(value) do
         parts[#parts + 1] = string.format("%q:%s", tostring(k), json_value(v))
      end
      return "{" .. table.concat(parts, ",") .. "}"
   elseif type(value) == "number" then
      return string.format("%.6f", value)
   else
      return string.format("%q", tostring(value))
   end
end

function done(summary, latency, requests)
   local total_ok, total_bad, codes = 0, 0, {}
   for _, thread in ipairs(threads) do
      total_ok = total_ok + (thread:get("ok2xx") or 0)
      total_bad = total_bad + (thread:get("non2xx") or 0)
      for code, n in pairs(thread:get("statuses") or {}) do
         codes[code] = (codes[code] or 0) + n
      end
   end
   local seconds = summary.duration / 1e6
   local result = {
      requests = summary.requests,
      duration_s = seconds,
      rps = summary.requests / seconds,
      bytes = summary.bytes,
      ok_2xx = total_ok,
      non_2xx = total_bad,
      non_2xx_statuses = codes,
      socket_errors = {
         connect = summary.errors.connect,
         read = summary.errors.read,
         write = summary.errors.write,
         timeout = summary.errors.timeout,
      },
      latency_ms = {
         mean = latency.mean / 1000,
         stdev = latency.stdev / 1000,
         max = latency.max / 1000,
         p50 = latency:percentile(50) / 1000,
         p90 = latency:percentile(90) / 1000,
         p99 = latency:percentile(99) / 1000,
      },
   }
   io.write("GAZE_WRK_RESULT " .. json_value(result) .. "\n")
end
