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
  -- Tentative state of the keys this request charges (`charged`: their algorithms, `order`: first charge
  -- first) and per check 6 results in one flat table, so a check makes no tables of its own here (no gain
  -- measurable on its own, beside the other changes of docs/performance.md).
  local states, charged, order, res = {}, {}, {}, {}
  local enforced_denied, quota_total, quota_denied = 0, 0, 0
  for i = 1, m do
    local chk = read_check(ai)
    ai = ai + CHECK_FIELDS
    local key = KEYS[ki]
    ki = ki + 1
    local alg = ALGS[chk.alg]
    local state = states[key]
    if state == nil then state = alg.load(key) end
    local ok, before, ns, reset_c, reset_n, retry = alg.decide(state, chk, now)
    if ok and chk.cost > 0 then
      if charged[key] == nil then order[#order + 1] = key end
      states[key], charged[key] = ns, alg
    end
    local j = 6 * (i - 1)
    res[j + 1], res[j + 2], res[j + 3], res[j + 4], res[j + 5], res[j + 6] = ok, before, chk.cost, reset_c, reset_n, retry
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
      charged[key].save(key, states[key])
    end
  end
  local n = #out
  out[n + 1] = admitted and 1 or 0
  out[n + 2] = enforced_denied
  out[n + 3] = quota_total
  out[n + 4] = quota_denied
  n = n + 4
  for i = 1, m do
    local j = 6 * (i - 1)
    local ok, remaining, reset = res[j + 1], res[j + 2], res[j + 5]
    if admitted and ok then
      remaining = remaining - res[j + 3]
      reset = res[j + 4]
    end
    if remaining < 0 then remaining = 0 end
    out[n + 1] = ok and 1 or 0
    out[n + 2] = remaining
    out[n + 3] = reset
    out[n + 4] = res[j + 6]
    n = n + 4
  end
end
return out
