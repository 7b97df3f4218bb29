-- Entry point: admin operations on one limit's key.
--
-- ARGV[1] 'adjust_quota', ARGV[2] delta (units added to this period's allowance; negative takes away),
-- then the 8 check fields of batch.lua. KEYS[1] the quota key.
-- Returns {allowance - used (may be negative), used, granted, reset_after_us}.
local now = script_now(nil)
if ARGV[1] ~= 'adjust_quota' then
  return redis.error_reply('ratelimitd: unknown admin operation')
end
local delta = tonumber(ARGV[2])
local chk = read_check(3)
local key = KEYS[1]
local s = ALGS[5].load(key)
local start, stop = quota_period(chk, now)
local used, granted = 0, 0
if s.p == start then used, granted = s.u, s.g end
granted = granted + delta
ALGS[5].save(key, { p = start, u = used, g = granted, ttl = stop - now + QUOTA_GRACE_US })
return { chk.limit + granted - used, used, granted, stop - now }
