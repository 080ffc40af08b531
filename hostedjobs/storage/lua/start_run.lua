#!lua flags=allow-oom
-- Starts a distributed cron run: takes its lease (unless another run holds it and overlaps
-- are skipped) and records the start, in one step. A run tried again after its worker
-- crashed is not skipped for another run's lease: it waits for its turn.
-- KEYS: lease, state
-- ARGV: run_id, lease_ms, skip_if_held (0/1), scheduled_at, started_at, running_entry,
--       retry (0/1)
-- Returns 1 if the run may go ahead, 0 if it is skipped, 2 if it must wait (a retry).
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] and ARGV[3] == '1' then
  if ARGV[7] == '1' then return 2 end
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[2], 'last_scheduled_at', ARGV[4], 'last_started_at', ARGV[5],
  'running_run', ARGV[6])
return 1
