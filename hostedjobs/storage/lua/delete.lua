#!lua flags=allow-oom
-- Removes a queued or deferred job so it never runs, and lets its id be reused; atomic
-- against a claim (a claimed job has left the queue, so it is not deleted).
-- KEYS: queue, job, lock, tries, meta
-- ARGV: id, events_channel
-- Returns 1 if deleted, 0 if the job is running, finished or unknown.
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('PUBLISH', ARGV[2], 'deleted ' .. ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[5])
redis.call('HDEL', KEYS[4], ARGV[1])
return 1
