#!lua flags=allow-oom
-- Releases a named lock its owner still holds (compare-and-delete), and wakes one waiter.
-- KEYS: owner, released
-- ARGV: owner_id, wake_ms
-- Returns 1 if released, 0 if it had lapsed (and may be someone else's).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('LPUSH', KEYS[2], '1')
redis.call('LTRIM', KEYS[2], 0, 0)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
