-- POST one JSON body, read from a file, on every request: bench_serving.py drives
-- the model servers with it.
--
--   wrk -t1 -c1 -d10s --latency -s wrk_post.lua http://127.0.0.1:PORT/api/v1.0/predictions -- body.json
--
-- wrk counts answers with a status of 400 or more as "Non-2xx or 3xx responses".

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function init(args)
  local path = args[1]
  if path == nil then
    error("usage: wrk -s wrk_post.lua <url> -- <body.json>")
  end
  local file = assert(io.open(path, "rb"))
  wrk.body = file:read("*a")
  file:close()
end
