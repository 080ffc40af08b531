#!lua flags=allow-oom
-- Takes or renews a worker's lease: the worker's claims are its own until the lease lapses
-- (by Redis's clock, so workers' clocks do not matter). Renewing a lease that is gone fails:
-- it lapsed and other workers took the worker's jobs back (recover.lua), so the worker must
-- not commit them (commit.lua checks the claims set) and takes a new lease. The reply also
-- names the functions with parked jobs (park.lua), for the worker to take back those it can.
-- KEYS: leases, parked_functions
-- ARGV: worker_id, lease_ms, take (1: take a new lease; 0: renew only)
-- Returns {1 if the worker holds the lease now, 0 if it had lapsed and was recovered,
-- {functions with parked jobs}}.
local clock = redis.call('TIME')
local redis_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local parked = redis.call('SMEMBERS', KEYS[2])
if ARGV[3] ~= '1' and not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return {0, parked} end
redis.call('ZADD', KEYS[1], redis_ms + tonumber(ARGV[2]), ARGV[1])
return {1, parked}
