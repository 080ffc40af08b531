#!lua
-- Puts a failed job back in the queue under its id, if its result is still the failed one the
-- caller read (so two clicks on "retry" queue it once), with a fresh try count.
-- KEYS: result, job, queue, wake, tries, meta, failed, then per other failed index: index
--       (the other failed indexes that list it: its job type's, its worker's)
-- ARGV: result_read, record, score_ms, ttl_ms, id, wake_kept, events_channel
-- Returns 1 if queued again, else 0.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('PUBLISH', ARGV[7], 'requeued ' .. ARGV[5])
redis.call('DEL', KEYS[1], KEYS[6])
redis.call('HDEL', KEYS[5], ARGV[5])
for i = 7, #KEYS do redis.call('ZREM', KEYS[i], ARGV[5]) end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[5])
local kept = tonumber(ARGV[6])
if redis.call('LPUSH', KEYS[4], '1') > kept then redis.call('LTRIM', KEYS[4], 0, kept - 1) end
return 1
