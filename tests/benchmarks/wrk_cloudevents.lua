-- POST one request-logger CloudEvent body, read from a file, with a unique Ce-Id per
-- request: bench_sidecar.py drives the drift sidecar with it (a repeated Ce-Id would
-- only be answered "duplicate").
--
--   wrk -t2 -c8 -d10s --latency -s wrk_cloudevents.lua http://127.0.0.1:PORT/ -- body.json RUN
--
-- RUN prefixes every Ce-Id (one per wrk run); the Ce-Id is RUN-<thread>-<counter>.
-- wrk counts answers with a status of 400 or more as "Non-2xx or 3xx responses"; the
-- sidecar answers a refused event 202, so the benchmark also checks the accepted rows
-- on the sidecar's own metrics.

local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local body, run
local counter = 0
local headers = {
  ["Content-Type"] = "application/json",
  ["Ce-Specversion"] = "1.0",
  ["Ce-Source"] = "wrk",
  ["Ce-Type"] = "io.seldon.serving.inference.request",
}

function init(args)
  local path = args[1]
  if path == nil then
    error("usage: wrk -s wrk_cloudevents.lua <url> -- <body.json> [run]")
  end
  local file = assert(io.open(path, "rb"))
  body = file:read("*a")
  file:close()
  run = args[2] or tostring(os.time())
end

function request()
  counter = counter + 1
  headers["Ce-Id"] = run .. "-" .. tostring(tid) .. "-" .. tostring(counter)
  return wrk.format("POST", "/", headers, body)
end
