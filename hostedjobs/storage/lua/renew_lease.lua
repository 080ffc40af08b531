#!lua flags=allow-oom
-- Extends a lease its owner still holds.
-- KEYS: lease
-- ARGV: owner, lease_ms
-- Returns 1 if renewed, 0 if the lease is gone or someone else's.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
