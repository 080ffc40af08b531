-- Fires one due tick of a runtime schedule, once cluster-wide: only if the schedule's score
-- in the due set is still tick_ms and its definition is still the one the caller read (a
-- compare-and-set), moves the score to next_ms and, when told to, enqueues the run as
-- enqueue.lua does, under an id derived from (schedule, tick) so no retry adds it twice.
-- KEYS: definitions, due, job, result, queue, wake
-- ARGV: name, tick_ms, definition, next_ms (empty: no next tick), enqueue (0/1), record, ttl_ms, run_id, run_score_ms, wake_kept
-- Returns 0 the tick was not (or no longer) due as read, 1 enqueued, 2 moved on without a run.
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[3] then return 0 end
if ARGV[4] == '' then
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
end
if ARGV[5] ~= '1' then return 2 end
if redis.call('EXISTS', KEYS[4]) == 1 then return 2 end
if not redis.call('SET', KEYS[3], ARGV[6], 'PX', ARGV[7], 'NX') then return 2 end
redis.call('ZADD', KEYS[5], ARGV[9], ARGV[8])
local kept = tonumber(ARGV[10])
if redis.call('LPUSH', KEYS[6], '1') > kept then redis.call('LTRIM', KEYS[6], 0, kept - 1) end
return 1
