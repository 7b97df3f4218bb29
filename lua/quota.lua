-- quota: at most `limit` per calendar period. Lua has no time-zone database, so the service passes
-- the boundaries of three consecutive periods (p1 <= p2 <= p3 <= p4, in us) computed in the rule's
-- time zone; the script picks the one holding Redis TIME. State: hash {p = period start, u = used}.
-- The key lives until its period ends plus one day, so a month's usage is never lost to expiry.
local QUOTA_GRACE_US = 86400 * 1000000

ALGS[5] = {
  load = function(key)
    local v = redis.call('HMGET', key, 'p', 'u')
    return { p = tonumber(v[1]), u = tonumber(v[2]) or 0 }
  end,

  decide = function(s, chk, now)
    local start, stop
    if chk.p1 <= now and now < chk.p2 then
      start, stop = chk.p1, chk.p2
    elseif chk.p2 <= now and now < chk.p3 then
      start, stop = chk.p2, chk.p3
    elseif chk.p3 <= now and now < chk.p4 then
      start, stop = chk.p3, chk.p4
    else
      return error({ err = 'ratelimitd: quota period boundaries do not contain the server time' })
    end
    local used = 0
    if s.p == start then used = s.u end
    local need = needed(chk.cost)
    local ok = used + need <= chk.limit
    local reset = stop - now
    local retry = 0
    if not ok then
      if need <= chk.limit then retry = reset else retry = -1 end
    end
    local ns = { p = start, u = used + chk.cost, ttl = reset + QUOTA_GRACE_US }
    return ok, chk.limit - used, ns, reset, reset, retry
  end,

  save = function(key, s)
    redis.call('HSET', key, 'p', fmt(s.p), 'u', fmt(s.u))
    redis.call('PEXPIRE', key, fmt(ttl_ms(s.ttl)))
  end,
}

ALGS[5].refund = function(key, chk, now)
  local s = ALGS[5].load(key)
  for _, b in ipairs({ { chk.p1, chk.p2 }, { chk.p2, chk.p3 }, { chk.p3, chk.p4 } }) do
    if b[1] <= now and now < b[2] and s.p == b[1] then
      local u = s.u - chk.cost
      if u < 0 then u = 0 end
      redis.call('HSET', key, 'u', fmt(u))
    end
  end
end
