-- PUT of fresh keys, each with the same fixed-size body.
--
--   SIZE=4096 wrk -t1 -c100 -d10s -s wrk-scripts/put_unique.lua http://127.0.0.1:3000
--
-- Env:
--   SIZE    body bytes (default 4096)
--   PREFIX  key prefix (default /bench/put-); keys are
--           <PREFIX><run>-<thread>-<counter>, the run number random per run
--           so that a rerun against the same index does not hit live keys
--
-- Every answer must be a 201 (stored on every replica). Anything else is
-- counted; done() prints the count and the first unexpected status and exits
-- 1 if there was any. The keys stay stored: run it against a throwaway index.
--
-- request() splices the counter into a request (body included) that
-- wrk.format built once in init(), so the body is not copied twice per request.

local size = tonumber(os.getenv("SIZE") or "4096")
local prefix = os.getenv("PREFIX") or "/bench/put-"
assert(not prefix:find("#", 1, true), "PREFIX must not contain #")
local threads = {}
local run_number = nil

function setup(thread)
  if run_number == nil then
    math.randomseed(os.time())
    run_number = math.random(0, 2147483646)
  end
  table.insert(threads, thread)
  thread:set("id", #threads)
  thread:set("run", run_number)
end

function init(args)
  errors, first_error = 0, 0
  counter = 0
  local key = prefix .. run .. "-" .. id .. "-#"
  before_counter, after_counter = wrk.format("PUT", key, nil, string.rep("x", size)):match("^(.-)#(.*)$")
end

function request()
  counter = counter + 1
  return before_counter .. counter .. after_counter
end

function response(status, headers, body)
  if status ~= 201 then
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
  io.write(string.format("errors: %d of %d requests (expected 201, %d-byte bodies, first other status %d)\n",
    total, summary.requests, size, first))
  if total > 0 then os.exit(1) end
end
