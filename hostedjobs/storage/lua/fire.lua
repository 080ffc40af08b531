#!lua
-- Fires one tick of a distributed cron job: claims (job, tick) for exactly one process,
-- records it as the last fired tick, and, unless the previous run is alive (its lease) or
-- still waiting in the queue for its first try (no worker took it), enqueues the run under
-- an id derived from the tick. A previous run waiting to be tried again (its worker crashed)
-- does not hold the tick back: the two never overlap, the later to start waits its turn.
-- A paused job's tick is claimed and recorded as fired like any other (so it is never run
-- later, by misfire catch-up or another process), but not enqueued; the first such tick of
-- a pause goes in the history as skipped (resuming clears the state's paused_noted).
-- KEYS: claim, last_tick, lease, pending, state, history, job, result, queue, wake, tries, paused
-- ARGV: tick_ms, claim_ttl_ms, owner, run_id, record, record_ttl_ms, skip_if_running (0/1),
--       skipped_entry, next_run, wake_kept, history_length, skipped_while_queued_entry, now_ms,
--       name, paused_entry
-- Returns 0 claimed elsewhere, 1 enqueued, 2 skipped (running), 3 already enqueued,
-- 4 skipped (the previous run is still queued), 5 skipped (paused).
if not redis.call('SET', KEYS[1], ARGV[3], 'NX', 'PX', ARGV[2]) then return 0 end
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) > last then redis.call('SET', KEYS[2], ARGV[1]) end
redis.call('HSET', KEYS[5], 'next_run', ARGV[9])
if redis.call('SISMEMBER', KEYS[12], ARGV[14]) == 1 then
  if redis.call('HSETNX', KEYS[5], 'paused_noted', '1') == 1 then
    redis.call('LPUSH', KEYS[6], ARGV[15])
    redis.call('LTRIM', KEYS[6], 0, tonumber(ARGV[11]) - 1)
  end
  return 5
end
if ARGV[7] == '1' then
  local busy = 0
  if redis.call('EXISTS', KEYS[3]) == 1 then busy = 2 end
  if busy == 0 then
    local pending = redis.call('GET', KEYS[4])
    if pending then
      local score = redis.call('ZSCORE', KEYS[9], pending)
      if score and tonumber(score) <= tonumber(ARGV[13]) and redis.call('HEXISTS', KEYS[11], pending) == 0 then
        busy = 4
      end
    end
  end
  if busy > 0 then
    local entry = ARGV[8]
    if busy == 4 then entry = ARGV[12] end
    redis.call('LPUSH', KEYS[6], entry)
    redis.call('LTRIM', KEYS[6], 0, tonumber(ARGV[11]) - 1)
    return busy
  end
end
if redis.call('EXISTS', KEYS[7], KEYS[8]) > 0 then return 3 end
redis.call('SET', KEYS[7], ARGV[5], 'PX', ARGV[6])
redis.call('ZADD', KEYS[9], ARGV[1], ARGV[4])
redis.call('SET', KEYS[4], ARGV[4])
local kept = tonumber(ARGV[10])
if redis.call('LPUSH', KEYS[10], '1') > kept then redis.call('LTRIM', KEYS[10], 0, kept - 1) end
return 1
