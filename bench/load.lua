-- wrk script of bench/load.py: FortiGate-like fetches of one feed with Basic auth.
-- Each wrk thread keeps the last ETag it was served and sends it as If-None-Match; one request
-- in ten is a full fetch without it (a FortiGate that restarted). done() prints every status.
local auth = os.getenv("BANFEED_AUTH")
local path = os.getenv("BANFEED_PATH")
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  counts = {}
  etag = nil
  n = 0
end

function request()
  n = n + 1
  local headers = {["Authorization"] = "Basic " .. auth}
  if etag ~= nil and n % 10 ~= 0 then
    headers["If-None-Match"] = etag
  end
  return wrk.format("GET", path, headers)
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
  if status == 200 then
    etag = headers["etag"] or headers["ETag"]
  end
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("counts")) do
      total[status] = (total[status] or 0) + count
    end
  end
  for status, count in pairs(total) do
    io.write(string.format("status %d: %d\n", status, count))
  end
end
