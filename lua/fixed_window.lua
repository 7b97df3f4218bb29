-- fixed_window: at most `limit` per epoch-aligned window of p1 microseconds.
-- State: hash {w = window index, c = admitted cost in that window}; TTL = end of the window.
DEFINE[1] = function()
  ALGS[1] = {
    load = function(key)
      local v = redis.call('HMGET', key, 'w', 'c')
      return { w = tonumber(v[1]) or -1, c = tonumber(v[2]) or 0 }
    end,

    decide = function(s, chk, now)
      local W = chk.p1
      local k = math.floor(now / W)
      local c = 0
      if s.w == k then
        c = s.c
      end
      local need = needed(chk.cost)
      local reset = (k + 1) * W - now
      local ok = c + need <= chk.limit
      local retry = 0
      if not ok then
        if need <= chk.limit then retry = reset else retry = -1 end
      end
      -- same: the stored key already holds window k (a tentative state passes on what it knew)
      local ns = { w = k, c = c + chk.cost, ttl = reset, same = s.w == k and s.same ~= false }
      return ok, chk.limit - c, ns, reset, reset, retry
    end,

    -- Within the window the key already expires at its end (set by the window's first charge), so only the
    -- count changes: one call instead of two.
    save = function(key, s)
      if s.same then
        redis.call('HSET', key, 'c', fmt(s.c))
      else
        redis.call('HSET', key, 'w', fmt(s.w), 'c', fmt(s.c))
        redis.call('PEXPIRE', key, fmt(ttl_ms(s.ttl)))
      end
    end,
  }

  -- Undo a charge made at `now` (cross-slot reservations that another slot denied).
  ALGS[1].refund = function(key, chk, now)
    local s = ALGS[1].load(key)
    if s.w == math.floor(now / chk.p1) and s.c > 0 then
      local c = s.c - chk.cost
      if c < 0 then c = 0 end
      redis.call('HSET', key, 'c', fmt(c))
    end
  end
end
