-- Stored limits: a compare-and-set write of one domain's YAML, its history entry and the generation that
-- every instance polls, in one atomic step. Standalone (not assembled with the algorithms).
--
-- KEYS[1] hash: domain -> current entry (JSON);  KEYS[2] list: the domain's history, newest first;
-- KEYS[3] the generation counter (every change increments it; its value is the new version).
-- ARGV[1] 'put' or 'delete'; ARGV[2] the domain; ARGV[3] the precondition: '*' (the domain must not exist)
-- or the version the caller read; ARGV[4] who; ARGV[5] summary of the change; ARGV[6] the YAML ('' to delete);
-- ARGV[7] action recorded in the history ('create', 'update', 'delete', 'rollback to N', 'import').
-- ARGV[8] how many history entries to keep.
-- Returns {'ok', version, time_ms} | {'exists', version} | {'stale', current version or 0}.
-- ARGV[1] 'raise' instead: set the generation to at least ARGV[2] (after restoring a store that lost them, so
-- every instance sees it move past what it applied); returns {'ok', generation}.
local domains, history, gen = KEYS[1], KEYS[2], KEYS[3]
local op, domain, want = ARGV[1], ARGV[2], ARGV[3]

if op == 'raise' then
  local floor = tonumber(ARGV[2])
  local g = tonumber(redis.call('GET', gen)) or 0
  if g < floor then
    redis.call('SET', gen, floor)
    g = floor
  end
  return { 'ok', g }
end

local raw = redis.call('HGET', domains, domain)
local current = 0
if raw then
  current = cjson.decode(raw).version
end
if want == '*' then
  if raw then
    return { 'exists', current }
  end
elseif not raw or tostring(current) ~= want then
  return { 'stale', current }
end

local version = redis.call('INCR', gen)
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local entry = {
  version = version, time_ms = now_ms, who = ARGV[4], summary = ARGV[5], yaml = ARGV[6], action = ARGV[7],
}
if op == 'delete' then
  redis.call('HDEL', domains, domain)
else
  redis.call('HSET', domains, domain, cjson.encode(entry))
end
redis.call('LPUSH', history, cjson.encode(entry))
redis.call('LTRIM', history, 0, tonumber(ARGV[8]) - 1)
return { 'ok', version, now_ms }
