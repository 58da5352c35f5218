-- HTTP pipelining: each connection sends 16 GETs of existing keys in one
-- write and then reads the 16 answers.
--
--   KEYS=1000 wrk -t1 -c100 -d10s -s wrk-scripts/pipeline.lua http://127.0.0.1:3000
--
-- Env:
--   KEYS   keys /bench/key-0 .. /bench/key-<KEYS-1> exist (default 1000); seed
--          them with `mkv -db DIR -volumes a,b,c seed --count KEYS --prefix /bench/key-`
--   DEPTH  requests per pipelined batch (default 16)
--   MISSING  1: GET keys that do not exist (/missing/<random>) and expect 404
--            instead of 302 (the pipelined form of get_missing.lua)
--
-- wrk's Requests/sec counts every answer, so it compares directly with
-- get_existing.lua. The batches are built once in init() (wrk.format, as in
-- wrk's own pipeline example); a thread cycles through BATCHES of them so the
-- keys vary without building a request per call. Every answer must be a 302
-- (404 with MISSING=1); done() prints the count of others and exits 1 if
-- there was any.

local keys = tonumber(os.getenv("KEYS") or "1000")
local depth = tonumber(os.getenv("DEPTH") or "16")
local missing = os.getenv("MISSING") == "1"
local expected = missing and 404 or 302
local BATCHES = 64
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

function init(args)
  math.randomseed(os.time() * 1009 + id)
  errors, first_error = 0, 0
  batches, next_batch = {}, 1
  for b = 1, BATCHES do
    local requests = {}
    for i = 1, depth do
      local path = missing and ("/missing/" .. math.random(0, 2147483647))
        or ("/bench/key-" .. math.random(0, keys - 1))
      requests[i] = wrk.format(nil, path)
    end
    batches[b] = table.concat(requests)
  end
end

function request()
  next_batch = next_batch % BATCHES + 1
  return batches[next_batch]
end

function response(status, headers, body)
  if status ~= expected then
    errors = errors + 1
    if first_error == 0 then first_error = status end
  end
end

function done(summary, latency, requests)
  local total, first = 0, 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("errors")
    if first == 0 then first = thread:get("first_error") end
  end
  io.write(string.format("errors: %d of %d requests (expected %d, depth %d, first other status %d)\n",
    total, summary.requests, expected, depth, first))
  if total > 0 then os.exit(1) end
end
