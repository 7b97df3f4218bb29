-- RLQS fair shares: record one Envoy's demand for one limited bucket and return its share of the rule's rate;
-- charge the requests Envoy reports it allowed to the rule's own counter (the RLS path's, so admin usage,
-- quotas and the console see RLQS traffic), and say when that counter is spent. One call per bucket report.
-- Assembled after lib.lua and the algorithms (scripts.py), like batch.lua.
--
-- KEYS[1] hash: envoy id -> "<demand per second>:<last report time us>" for this bucket;
-- KEYS[2] the rule's counter (the key the RLS path uses for the same descriptor values).
-- ARGV[1] time override in us ('' = Redis TIME; only tests pass one); ARGV[2] the Envoy's id;
-- ARGV[3] requests it saw (allowed + denied) since its previous report (-1: only read its share);
-- ARGV[4] the rule's rate per second; ARGV[5] how long an Envoy counts as active after its last report (us);
-- ARGV[6] the first report's assumed span (us): Envoy's first report says time_elapsed 0, so its count is spread
-- over one report interval; ARGV[7] requests allowed since the previous report (charged even past the limit:
-- Envoy has let them through); ARGV[8] 1 if a spent counter means DENY_ALL (windows and quotas; a token bucket
-- is governed by the shares alone); ARGV[9] the rule's window (us; 0: charge everything): a report covering a
-- longer span than one window charges only the part that falls in the current window, allowed x window / span,
-- (arrivals taken as even) — charging 5 s of traffic into a 1 s window would spend it at a fraction of its
-- rate; then the 8 check fields of lib.lua's read_check (its cost is ignored).
--
-- The rate is split max-min fairly by demand among the active Envoys: an idle one (demand 0) keeps a floor (a
-- tenth of an equal split, at least one per second) so it can start again, the rest fills the busy ones up to
-- their demand, smallest first, and what is left goes to the busy ones equally (room to grow). Shares never sum above the
-- rate. Entries of Envoys gone quiet are dropped. Returns {share * 1000, active Envoys, busy Envoys, spent}:
-- spent > 0 is the time (us) until the counter has room again; -1 for "not while this state lasts".
local key = KEYS[1]
local now = script_now(ARGV[1])
local me, seen, rate = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local active_us, first_span = tonumber(ARGV[5]), tonumber(ARGV[6])

local span = first_span
if seen >= 0 then  -- a report; seen = -1 only asks for the share (a refresh between reports)
  local prev = redis.call('HGET', key, me)
  if prev then
    local last = tonumber(string.match(prev, ':(%d+)$'))
    if now > last then span = now - last end
  end
  local demand = seen * 1000000 / span
  redis.call('HSET', key, me, string.format('%.6f:%d', demand, now))
  redis.call('PEXPIRE', key, math.floor(2 * active_us / 1000) + 1)
elseif redis.call('HEXISTS', key, me) == 0 then
  return { -1, 0, 0, 0 }  -- not (or no longer) a holder of this bucket
end

local busy, idle = {}, 0
local all = redis.call('HGETALL', key)
for i = 1, #all, 2 do
  local d, last = string.match(all[i + 1], '^([%d.]+):(%d+)$')
  if tonumber(last) < now - active_us then
    redis.call('HDEL', key, all[i])
  elseif tonumber(d) > 0 then
    busy[#busy + 1] = { id = all[i], d = tonumber(d) }
  else
    idle = idle + 1
  end
end
local n = #busy + idle
-- an idle Envoy keeps a tenth of an equal split (at least 1/s, at most the split), so traffic that moves to it
-- is served until its next report; when nobody is busy the rate is split equally
local floor = math.min(rate / n, math.max(1, rate / n / 10))
if #busy == 0 then floor = rate / n end
local left = rate - idle * floor
local share = {}
table.sort(busy, function(a, b) return a.d < b.d end)
for i, e in ipairs(busy) do
  local give = math.min(e.d, left / (#busy - i + 1))
  share[e.id] = give
  left = left - give
end
if #busy > 0 and left > 0 then
  for _, e in ipairs(busy) do share[e.id] = share[e.id] + left / #busy end
end
local mine = share[me] or floor

-- the rule's own counter: charge what Envoy admitted, then peek whether one more request fits
local ckey = KEYS[2]
local chk = read_check(10)
local alg = ALGS[chk.alg]
local state = alg.load(ckey)
local allowed = tonumber(ARGV[7])
local window = tonumber(ARGV[9])
if window > 0 and span > window then allowed = math.floor(allowed * window / span + 0.5) end
if seen >= 0 and allowed > 0 then
  chk.cost = allowed
  local _, _, ns = alg.decide(state, chk, now)
  alg.save(ckey, ns)
  state = alg.load(ckey)
end
local spent = 0
if ARGV[8] == '1' then
  chk.cost = 0
  local room, _, _, _, _, retry = alg.decide(state, chk, now)
  if not room then
    spent = retry
    if spent == 0 then spent = 1 end
  end
end
return { math.floor(mine * 1000), n, #busy, spent }
