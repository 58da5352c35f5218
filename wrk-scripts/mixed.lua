-- A mix of 90% GET of existing keys and 10% PUT of fresh keys.
--
--   KEYS=1000 wrk -t1 -c100 -d10s -s wrk-scripts/mixed.lua http://127.0.0.1:3000
--
-- Env:
--   KEYS         keys /bench/key-0 .. /bench/key-<KEYS-1> exist (default 1000);
--                seed them with `mkv -db DIR -volumes a,b,c seed --count KEYS --prefix /bench/key-`
--   SIZE         PUT body bytes (default 4096)
--   PUT_PERCENT  share of PUTs (default 10)
--   PREFIX       prefix of the PUT keys (default /bench/mixed-); keys are
--                <PREFIX><run>-<thread>-<counter>, the run number random per run
--
-- wrk cannot tell which request an answer belongs to, so every answer must be
-- a 302 (GET) or a 201 (PUT); done() prints how many of each came back, the
-- count of anything else, and exits 1 if there was any. The PUT keys stay
-- stored: run it against a throwaway index.
--
-- request() splices a key or a counter into requests wrk.format built once
-- in init(), which keeps the Lua cost per request low.

local keys = tonumber(os.getenv("KEYS") or "1000")
local size = tonumber(os.getenv("SIZE") or "4096")
local put_percent = tonumber(os.getenv("PUT_PERCENT") or "10")
local prefix = os.getenv("PREFIX") or "/bench/mixed-"
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
  math.randomseed(os.time() * 1009 + id)
  errors, first_error, redirects, created = 0, 0, 0, 0
  counter = 0
  local key = prefix .. run .. "-" .. id .. "-#"
  before_counter, after_counter = wrk.format("PUT", key, nil, string.rep("x", size)):match("^(.-)#(.*)$")
  before_key, after_key = wrk.format("GET", "/bench/key-#"):match("^(.-)#(.*)$")
end

function request()
  if math.random(1, 100) <= put_percent then
    counter = counter + 1
    return before_counter .. counter .. after_counter
  end
  return before_key .. math.random(0, keys - 1) .. after_key
end

function response(status, headers, body)
  if status == 302 then
    redirects = redirects + 1
  elseif status == 201 then
    created = created + 1
  else
    errors = errors + 1
    if first_error == 0 then first_error = status end
  end
end

function done(summary, latency, requests)
  local total, first, gets, puts = 0, 0, 0, 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("errors")
    gets = gets + thread:get("redirects")
    puts = puts + thread:get("created")
    if first == 0 then first = thread:get("first_error") end
  end
  io.write(string.format("302: %d, 201: %d, errors: %d (first other status %d)\n",
    gets, puts, total, first))
  if total > 0 then os.exit(1) end
end
