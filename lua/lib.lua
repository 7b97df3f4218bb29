-- Shared helpers. The service concatenates lib.lua, the algorithm files and batch.lua into one script
-- (Redis scripts cannot import each other). Everything is local: Redis forbids new globals.
--
-- Numbers are doubles: all arithmetic stays on integers below 2^53 (the service picks a time
-- resolution per rule so products fit), and every number written to Redis goes through fmt(),
-- because tostring() keeps only 14 digits.
-- ALGS[id]: an algorithm's load/decide/save/refund. Each is defined on first use (DEFINE[id] runs once per
-- call that needs it): a script runs its whole text on every call, and defining all five algorithms took a
-- quarter of a one-check call's time in Redis (docs/performance.md).
local DEFINE = {}
local ALGS = setmetatable({}, {
  __index = function(algs, id)
    local define = DEFINE[id]
    if define == nil then
      return nil
    end
    define()
    return rawget(algs, id)
  end,
})

local function fmt(x)
  return string.format('%d', x)
end

-- ceil(a / b) for integers a >= 0, b > 0 below 2^53 (the rounded quotient cannot cross an integer).
local function ceil_div(a, b)
  return math.floor((a + b - 1) / b)
end

-- A relative TTL in whole milliseconds, never zero (PEXPIRE 0 would delete the key at once).
local function ttl_ms(us)
  local ms = ceil_div(us, 1000)
  if ms < 1 then
    return 1
  end
  return ms
end

-- The time in microseconds: `override` (tests pass one) or, when it is '', Redis TIME (never the caller's clock).
local function script_now(override)
  if override ~= nil and override ~= '' then
    return tonumber(override)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- Cost 0 is a peek: it consumes nothing but still needs one unit of room to report OK.
local function needed(cost)
  if cost < 1 then
    return 1
  end
  return cost
end

-- The 8 fields of one check, as every entry script receives them, starting at ARGV[i]:
-- algorithm id, cost, mode (0 enforced, 1 shadow, 2 quota_mode), limit, p1, p2, p3, p4.
local CHECK_FIELDS = 8
local function read_check(i)
  return {
    alg = tonumber(ARGV[i]), cost = tonumber(ARGV[i + 1]), mode = tonumber(ARGV[i + 2]),
    limit = tonumber(ARGV[i + 3]), p1 = tonumber(ARGV[i + 4]), p2 = tonumber(ARGV[i + 5]),
    p3 = tonumber(ARGV[i + 6]), p4 = tonumber(ARGV[i + 7]),
  }
end
