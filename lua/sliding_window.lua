-- sliding_window: the two-window weighted counter. Estimate = ceil(P * (W - e) / W) + C where P and C
-- are the previous and current aligned windows' counts and e the ticks elapsed in the current one;
-- admit iff estimate + cost <= limit (ceil rounds towards denial). p1 = W ticks, p2 = us per tick.
-- State: hash {w = window index, c = current count, p = previous count}; TTL = end of the next window.
DEFINE[3] = function()
  ALGS[3] = {
    load = function(key)
      local v = redis.call('HMGET', key, 'w', 'c', 'p')
      return { w = tonumber(v[1]) or -2, c = tonumber(v[2]) or 0, p = tonumber(v[3]) or 0 }
    end,

    decide = function(s, chk, now)
      local W, res, N = chk.p1, chk.p2, chk.limit
      local t = math.floor(now / res)
      local k = math.floor(t / W)
      local e = t - k * W
      local C, P = 0, 0
      if s.w == k then
        C, P = s.c, s.p
      elseif s.w == k - 1 then
        P = s.c
      end
      local est = ceil_div(P * (W - e), W) + C
      local need = needed(chk.cost)
      local ok = est + need <= N
      local function at(tick) return tick * res - now end
      local function reset_for(c)
        if c > 0 then return at((k + 2) * W) end
        if P > 0 then return at((k + 1) * W) end
        return 0
      end
      local retry = 0
      if not ok then
        retry = -1
        local A = N - C - need
        if A >= 0 and P > 0 then
          local e2 = W - math.floor(A * W / P)
          if e2 < W then retry = at(k * W + e2) end
        end
        if retry < 0 and need <= N then
          local e3 = 0
          if C > 0 then
            e3 = W - math.floor((N - need) * W / C)
            if e3 < 0 then e3 = 0 end
          end
          retry = at((k + 1) * W + e3)
        end
      end
      local ns = { w = k, c = C + chk.cost, p = P, ttl = at((k + 2) * W) }
      return ok, N - est, ns, reset_for(C + chk.cost), reset_for(C), retry
    end,

    save = function(key, s)
      redis.call('HSET', key, 'w', fmt(s.w), 'c', fmt(s.c), 'p', fmt(s.p))
      redis.call('PEXPIRE', key, fmt(ttl_ms(s.ttl)))
    end,
  }

  ALGS[3].refund = function(key, chk, now)
    local s = ALGS[3].load(key)
    local k = math.floor(math.floor(now / chk.p2) / chk.p1)
    local field
    if s.w == k then field = 'c' elseif s.w == k + 1 then field = 'p' else return end
    local v = s[field] - chk.cost
    if v < 0 then v = 0 end
    redis.call('HSET', key, field, fmt(v))
  end
end
