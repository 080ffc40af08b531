#!lua
-- Adds one job unless its id is taken (queued, running, or finished with a kept result), and
-- wakes a worker, in one atomic step; with a debounce key, records the job as its latest.
-- KEYS: job, result, queue, wake, then per debounce: latest
-- ARGV: record, score_ms, ttl_ms, id, wake_kept
-- Returns 1 if the job was added, 0 if its id is taken.
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if not redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3], 'NX') then return 0 end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[4])
if KEYS[5] then redis.call('SET', KEYS[5], ARGV[4], 'PX', ARGV[3]) end
local kept = tonumber(ARGV[5])
if redis.call('LPUSH', KEYS[4], '1') > kept then redis.call('LTRIM', KEYS[4], 0, kept - 1) end
return 1
