-- Starts a distributed cron run: takes its lease (unless the previous run holds it and
-- overlaps are skipped) and records the start, in one step.
-- KEYS: lease, state
-- ARGV: run_id, lease_ms, skip_if_held (0/1), scheduled_at, started_at, running_entry
-- Returns 1 if the run may go ahead, 0 if it is skipped.
local took = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
if not took and ARGV[3] == '1' then return 0 end
redis.call('HSET', KEYS[2], 'last_scheduled_at', ARGV[4], 'last_started_at', ARGV[5],
  'running_run', ARGV[6])
return 1
