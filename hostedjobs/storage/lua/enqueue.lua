#!lua
-- Adds one job unless its id is taken (queued, running, or finished with a kept result), and
-- wakes a worker, in one atomic step.
-- KEYS: job, result, queue, wake
-- ARGV: record, score_ms, ttl_ms, id, wake_kept
-- Returns 1 if the job was added, 0 if its id is taken.
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if not redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3], 'NX') then return 0 end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[4])
local kept = tonumber(ARGV[5])
if redis.call('LPUSH', KEYS[4], '1') > kept then redis.call('LTRIM', KEYS[4], 0, kept - 1) end
return 1
