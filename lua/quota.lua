-- quota: at most `limit` per calendar period. Lua has no time-zone database, so the service passes
-- the boundaries of three consecutive periods (p1 <= p2 <= p3 <= p4, in us) computed in the rule's
-- time zone; the script picks the one holding Redis TIME. State: hash {p = period start, u = used,
-- g = units granted for this period by an admin top-up (negative: taken away)}.
-- The key lives until its period ends plus one day, so a month's usage is never lost to expiry.
local QUOTA_GRACE_US = 86400 * 1000000

-- The period [start, stop) among the three the service passed that holds `now`.
local function quota_period(chk, now)
  if chk.p1 <= now and now < chk.p2 then return chk.p1, chk.p2 end
  if chk.p2 <= now and now < chk.p3 then return chk.p2, chk.p3 end
  if chk.p3 <= now and now < chk.p4 then return chk.p3, chk.p4 end
  return error({ err = 'ratelimitd: quota period boundaries do not contain the server time' })
end

DEFINE[5] = function()
  ALGS[5] = {
    load = function(key)
      local v = redis.call('HMGET', key, 'p', 'u', 'g')
      return { p = tonumber(v[1]), u = tonumber(v[2]) or 0, g = tonumber(v[3]) or 0 }
    end,

    decide = function(s, chk, now)
      local start, stop = quota_period(chk, now)
      local used, granted = 0, 0
      if s.p == start then used, granted = s.u, s.g end
      local allowance = chk.limit + granted
      local need = needed(chk.cost)
      local ok = used + need <= allowance
      local reset = stop - now
      local retry = 0
      if not ok then
        if need <= allowance then retry = reset else retry = -1 end
      end
      local ns = { p = start, u = used + chk.cost, g = granted, ttl = reset + QUOTA_GRACE_US }
      return ok, allowance - used, ns, reset, reset, retry
    end,

    save = function(key, s)
      redis.call('HSET', key, 'p', fmt(s.p), 'u', fmt(s.u), 'g', fmt(s.g))
      redis.call('PEXPIRE', key, fmt(ttl_ms(s.ttl)))
    end,
  }

  ALGS[5].refund = function(key, chk, now)
    local s = ALGS[5].load(key)
    if s.p == quota_period(chk, now) then
      local u = s.u - chk.cost
      if u < 0 then u = 0 end
      redis.call('HSET', key, 'u', fmt(u))
    end
  end
end
