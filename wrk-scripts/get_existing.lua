-- GET of existing keys, one picked at random per request.
--
--   KEYS=1000 wrk -t1 -c100 -d10s -s wrk-scripts/get_existing.lua http://127.0.0.1:3000
--
-- Env:
--   KEYS  keys /bench/key-0 .. /bench/key-<KEYS-1> exist (default 1000); seed
--         them with `mkv -db DIR -volumes a,b,c seed --count KEYS --prefix /bench/key-`
--
-- Every answer must be a 302 (mkv's redirect to a volume). Anything else is
-- counted; done() prints the count and the first unexpected status and exits
-- 1 if there was any.
--
-- request() splices a key into a request wrk.format built once in init():
-- wrk.format per request would cost the single wrk thread about 10% of its
-- rate, and with -t1 the client is often the bottleneck.

local keys = tonumber(os.getenv("KEYS") or "1000")
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

function init(args)
  math.randomseed(os.time() * 1009 + id)
  errors, first_error = 0, 0
  before_key, after_key = wrk.format(nil, "/bench/key-#"):match("^(.-)#(.*)$")
end

function request()
  return before_key .. math.random(0, keys - 1) .. after_key
end

function response(status, headers, body)
  if status ~= 302 then
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
  io.write(string.format("errors: %d of %d requests (expected 302, first other status %d)\n",
    total, summary.requests, first))
  if total > 0 then os.exit(1) end
end
