-- sliding_log: exact; the admitted cost in every window (t - W, t] stays <= limit. p1 = W in us.
-- State: a sorted set, one member per admitted hit, score = its time in us, member "<t>:<cost>:<seq>".
-- The set never holds more than `limit` members (each costs >= 1), which the config caps.
DEFINE[4] = function()
  ALGS[4] = {
    load = function(key)
      local raw = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
      local entries = {}
      for i = 1, #raw, 2 do
        local cost = tonumber(string.match(raw[i], '^%-?%d+:(%d+):'))
        entries[#entries + 1] = { m = raw[i], t = tonumber(raw[i + 1]), c = cost }
      end
      return { entries = entries, added = {} }
    end,

    decide = function(s, chk, now)
      local W, N = chk.p1, chk.limit
      local cutoff = now - W
      local kept, sum = {}, 0
      for _, en in ipairs(s.entries) do
        if en.t > cutoff then
          kept[#kept + 1] = en
          sum = sum + en.c
        end
      end
      local need = needed(chk.cost)
      local ok = sum + need <= N
      local function reset_of(list)
        if #list == 0 then return 0 end
        return list[#list].t + W - now
      end
      local retry = 0
      if not ok then
        retry = -1
        if need <= N then
          local freed = 0
          for _, en in ipairs(kept) do
            freed = freed + en.c
            if sum - freed + need <= N then
              retry = en.t + W - now
              break
            end
          end
        end
      end
      local reset_n = reset_of(kept)
      local added = {}
      for _, a in ipairs(s.added) do added[#added + 1] = a end
      if chk.cost > 0 then
        local en = { m = string.format('%d:%d:%d', now, chk.cost, #kept + 1), t = now, c = chk.cost }
        kept[#kept + 1] = en
        added[#added + 1] = en
      end
      local ns = { entries = kept, added = added, cutoff = cutoff, ttl = W }
      return ok, N - sum, ns, reset_of(kept), reset_n, retry
    end,

    save = function(key, s)
      redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(s.cutoff))
      for _, en in ipairs(s.added) do
        redis.call('ZADD', key, fmt(en.t), en.m)
      end
      redis.call('PEXPIRE', key, fmt(ttl_ms(s.ttl)))
    end,
  }

  ALGS[4].refund = function(key, chk, now)
    local prefix = string.format('%d:%d:', now, chk.cost)
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', key, fmt(now), fmt(now))) do
      if string.sub(m, 1, #prefix) == prefix then
        redis.call('ZREM', key, m)
        return
      end
    end
  end
end
