-- token_bucket: refills `limit` tokens per window of p1 ticks (a tick is p2 microseconds), up to p3
-- (burst) tokens. Exact integer arithmetic: one token is W units and each tick adds `limit` units, so
-- no fractional rate is ever rounded. State: hash {u = units, t = tick of last update}.
-- TTL = time until the bucket is full again, after which a missing key means the same thing.
DEFINE[2] = function()
  ALGS[2] = {
    load = function(key)
      local v = redis.call('HMGET', key, 'u', 't')
      return { u = tonumber(v[1]), t = tonumber(v[2]) }
    end,

    decide = function(s, chk, now)
      local W, res, cap_tokens, N = chk.p1, chk.p2, chk.p3, chk.limit
      local t = math.floor(now / res)
      local cap = cap_tokens * W
      local u = cap
      if s.u ~= nil then
        u = s.u
        local e = t - s.t
        if e > 0 and N > 0 then
          if e >= ceil_div(cap - u, N) then u = cap else u = u + e * N end
        end
      end
      local need = needed(chk.cost) * W
      local ok = u >= need
      -- time (us) from now until the bucket holds `units`, counting whole ticks (refill happens on ticks)
      local function until_units(units)
        if units <= u then return 0 end
        if N == 0 or units > cap then return -1 end
        return (t + ceil_div(units - u, N)) * res - now
      end
      local after = u - chk.cost * W
      local reset_c = 0
      if after < cap then
        if N == 0 then reset_c = -1 else reset_c = (t + ceil_div(cap - after, N)) * res - now end
      end
      local reset_n = until_units(cap)
      local retry = 0
      if not ok then retry = until_units(need) end
      local ns = { u = after, t = t, ttl = reset_c }
      return ok, math.floor(u / W), ns, reset_c, reset_n, retry
    end,

    save = function(key, s)
      redis.call('HSET', key, 'u', fmt(s.u), 't', fmt(s.t))
      if s.ttl >= 0 then
        redis.call('PEXPIRE', key, fmt(ttl_ms(s.ttl)))
      end
    end,
  }

  ALGS[2].refund = function(key, chk, now)
    local s = ALGS[2].load(key)
    if s.u ~= nil then
      local u = s.u + chk.cost * chk.p1
      local cap = chk.p3 * chk.p1
      if u > cap then u = cap end
      redis.call('HSET', key, 'u', fmt(u))
    end
  end
end
