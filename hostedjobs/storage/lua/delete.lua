#!lua flags=allow-oom
-- Removes a queued or deferred job so it never runs, and lets its id be reused; atomic
-- against a claim (a claimed job has left the queue, so it is not deleted). With a
-- tombstone, the job is kept as cancelled outside arq's keys (so the id stays free) and
-- listed in the cancelled indexes for the tombstone's lifetime.
-- KEYS: queue, job, lock, tries, meta, tombstone, cancelled, type_cancelled, parked
--       (type_cancelled: its job type's cancelled index; parked: the set of parked jobs it
--       may be in, a job type paused or with no worker that has its code: it is as queued)
-- ARGV: id, events_channel, tombstone ('' for none), tombstone_ms, now_ms, finished_kept
-- Returns 1 if deleted, 0 if the job is running, finished or unknown.
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
if not (redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZSCORE', KEYS[9], ARGV[1])) then
  return 0
end
redis.call('PUBLISH', ARGV[2], 'deleted ' .. ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[9], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[5])
redis.call('HDEL', KEYS[4], ARGV[1])
if ARGV[3] ~= '' then
  local ms = tonumber(ARGV[4])
  if ms > 0 then
    redis.call('SET', KEYS[6], ARGV[3], 'PX', ms)
  else
    redis.call('SET', KEYS[6], ARGV[3])
  end
  for i = 7, 8 do
    redis.call('ZADD', KEYS[i], ARGV[5], ARGV[1])
    redis.call('ZREMRANGEBYRANK', KEYS[i], 0, -tonumber(ARGV[6]) - 1)
    if i == 8 and ms > 0 then redis.call('PEXPIRE', KEYS[i], ms) end
  end
end
return 1
