-- Takes a named lock if it is free, and draws its fencing token in the same step, so a
-- token is only ever handed to the one holder it names (Kleppmann's fencing tokens).
-- KEYS: owner, fence
-- ARGV: owner_id, ttl_ms
-- Returns {1, fencing token} if taken, {0, ms until the holder's lock lapses (-1: no TTL)}.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, redis.call('INCR', KEYS[2])}
end
return {0, redis.call('PTTL', KEYS[1])}
