-- Entry point: undo the charges of a reservation that another cluster slot denied.
--
-- ARGV[1]  the time (us) the reservation was charged at, as the batch script returned it
-- then per check the same 8 fields batch.lua takes; KEYS[1] is the receipt key (same slot),
-- KEYS[2..] one key per check. The receipt makes a refund idempotent: a repeated call does nothing.
local now = tonumber(ARGV[1])
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', '600000') == false then
  return 0
end
local ai = 2
for ki = 2, #KEYS do
  local chk = read_check(ai)
  ai = ai + CHECK_FIELDS
  if chk.cost > 0 then
    ALGS[chk.alg].refund(KEYS[ki], chk, now)
  end
end
return 1
