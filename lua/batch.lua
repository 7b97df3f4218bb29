-- Entry point: evaluates a batch of requests, one after another, each all-or-nothing.
--
-- ARGV[1]  time override in us, or '' to use Redis TIME (only tests pass a time)
-- ARGV[2]  number of requests R
-- then per request: m (its number of checks), dry (1: decide but write nothing), then per check the 8
--          fields lib.lua's read_check takes
-- KEYS     one key per check, in the same order.
--
-- A request is admitted unless an enforced check denies, or every quota_mode check denies. Only an
-- admitted request writes anything; a check that denies never writes, even in an admitted request.
-- Checks of one request on the same key see each other's tentative state, so duplicates add up.
--
-- This script is the one place that decides admission. Returns {now, then per request: admitted (1/0),
-- enforced checks denied, quota_mode checks, quota_mode checks denied (the counts let a cluster combine the
-- verdicts of a request's per-slot parts), then per check: admitted (1/0), remaining, reset_after_us,
-- retry_after_us}, where remaining and reset_after describe the state after this request (-1 for "never").
local now = script_now(ARGV[1])

local out = { now }
local ai, ki = 3, 1
for _ = 1, tonumber(ARGV[2]) do
  local m, dry = tonumber(ARGV[ai]), ARGV[ai + 1] == '1'
  ai = ai + 2
  local pending, order, results = {}, {}, {}
  local enforced_denied, quota_total, quota_denied = 0, 0, 0
  for i = 1, m do
    local chk = read_check(ai)
    ai = ai + CHECK_FIELDS
    local key = KEYS[ki]
    ki = ki + 1
    local alg = ALGS[chk.alg]
    local p = pending[key]
    local state
    if p then state = p.state else state = alg.load(key) end
    local ok, before, ns, reset_c, reset_n, retry = alg.decide(state, chk, now)
    if ok and chk.cost > 0 then
      if not p then order[#order + 1] = key end
      pending[key] = { alg = alg, state = ns }
    end
    results[i] = { ok = ok, before = before, cost = chk.cost, reset_c = reset_c, reset_n = reset_n, retry = retry }
    if chk.mode == 2 then
      quota_total = quota_total + 1
      if not ok then quota_denied = quota_denied + 1 end
    elseif chk.mode == 0 and not ok then
      enforced_denied = enforced_denied + 1
    end
  end
  local admitted = enforced_denied == 0 and not (quota_total > 0 and quota_denied == quota_total)
  if admitted and not dry then
    for _, key in ipairs(order) do
      local p = pending[key]
      p.alg.save(key, p.state)
    end
  end
  out[#out + 1] = admitted and 1 or 0
  out[#out + 1] = enforced_denied
  out[#out + 1] = quota_total
  out[#out + 1] = quota_denied
  for i = 1, m do
    local r = results[i]
    local remaining, reset = r.before, r.reset_n
    if admitted and r.ok then
      remaining = r.before - r.cost
      reset = r.reset_c
    end
    if remaining < 0 then remaining = 0 end
    local ok = 0
    if r.ok then ok = 1 end
    out[#out + 1] = ok
    out[#out + 1] = remaining
    out[#out + 1] = reset
    out[#out + 1] = r.retry
  end
end
return out
