-- Writes one runtime schedule's definition only if the stored one is still the one the
-- caller read (a compare-and-set), with its next tick in the due set (none: paused, out of
-- the set) and its name in the names set, in one atomic step.
-- KEYS: definitions, due, names
-- ARGV: name, expected (empty: the name must be free), definition, next_ms (empty: not due)
-- Returns 1 written, 0 the stored definition is not the expected one.
local current = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '' then
  if current then return 0 end
elseif current ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
if ARGV[4] == '' then
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
end
return 1
