-- S3 PutObject (anonymous, UNSIGNED-PAYLOAD) of fixed-size bodies: fresh
-- keys, or overwrites of KEYS live keys in turn.
--
--   MODE=overwrite KEYS=1000 SIZE=1024 wrk -t1 -c50 -d10s -s wrk-scripts/s3_put.lua http://127.0.0.1:3000
--
-- Env:
--   MODE    "unique" (default): keys <BUCKET>/u<run>-<thread>-<counter>;
--           "overwrite": keys <BUCKET>/o<n>, n cycling over 0..KEYS-1 from a
--           random start per thread (they must exist first: run "unique"
--           with PREFIX=o... or seed them)
--   KEYS    live keys overwritten (default 1000)
--   SIZE    body bytes (default 1024)
--   BUCKET  bucket path (default /bench)
--
-- Every answer must be a 200. Anything else is counted; done() prints the
-- count and the first other status and exits 1 if there was any.

local mode = os.getenv("MODE") or "unique"
local keys = tonumber(os.getenv("KEYS") or "1000")
local size = tonumber(os.getenv("SIZE") or "1024")
local bucket = os.getenv("BUCKET") or "/bench"
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
  counter = math.random(0, keys - 1)
  local key
  if mode == "overwrite" then
    key = bucket .. "/o#"
  else
    key = bucket .. "/u" .. run .. "-" .. id .. "-#"
  end
  local headers = { ["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD" }
  before_counter, after_counter = wrk.format("PUT", key, headers, string.rep("x", size)):match("^(.-)#(.*)$")
end

function request()
  counter = counter + 1
  if mode == "overwrite" then
    return before_counter .. (counter % keys) .. after_counter
  end
  return before_counter .. counter .. after_counter
end

function response(status, headers, body)
  if status ~= 200 then
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
  io.write(string.format("errors: %d of %d requests (expected 200, %d-byte bodies, first other status %d)\n",
    total, summary.requests, size, first))
  if total > 0 then os.exit(1) end
end
