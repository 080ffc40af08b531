#!lua flags=allow-oom
-- Releases a lease its owner still holds.
-- KEYS: lease
-- ARGV: owner
-- Returns 1 if released, 0 if it was gone or someone else's.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
