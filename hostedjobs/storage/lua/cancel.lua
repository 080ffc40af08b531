#!lua flags=allow-oom
-- Cancels a job: a running one is flagged in arq's abort set (its worker cancels the run and
-- stores it cancelled; requests older than an hour, whose job finished as they came, are
-- dropped then); a queued or deferred one, if it is still the record the caller read,
-- leaves the queue and is stored cancelled at once.
-- A cancelled queued job is counted in the minute's run history (hostedjobs/history.py).
-- KEYS: queue, job, lock, tries, meta, result, cancelled, abort, claimed, type_cancelled, history, parked
--       (type_cancelled: its job type's cancelled index; history: the minute's run history;
--       parked: the set of parked jobs it may be in, as queued for the caller)
-- ARGV: id, record, result_data, result_ms (-1: for ever, 0: not kept), now_ms,
--       events_channel, finished_kept, history_ttl_s (0: no history), the job type's history
--       field ('c <type>', or '' if unknown)
-- Returns 2 if the running job was asked to stop, 1 if the queued job was cancelled, 0 if
-- the job is unknown, finished, or changed meanwhile.
if redis.call('ZSCORE', KEYS[9], ARGV[1]) or redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('ZREMRANGEBYSCORE', KEYS[8], '-inf', tonumber(ARGV[5]) - 3600000)
  redis.call('ZADD', KEYS[8], ARGV[5], ARGV[1])
  return 2
end
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
if not (redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZSCORE', KEYS[12], ARGV[1])) then
  return 0
end
redis.call('PUBLISH', ARGV[6], 'finished ' .. ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[12], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[5])
redis.call('HDEL', KEYS[4], ARGV[1])
local ms = tonumber(ARGV[4])
if ms ~= 0 then
  if ms > 0 then
    redis.call('SET', KEYS[6], ARGV[3], 'PX', ms)
  else
    redis.call('SET', KEYS[6], ARGV[3])
  end
  for _, i in ipairs({7, 10}) do
    redis.call('ZADD', KEYS[i], ARGV[5], ARGV[1])
    redis.call('ZREMRANGEBYRANK', KEYS[i], 0, -tonumber(ARGV[7]) - 1)
  end
  if ms > 0 then redis.call('PEXPIRE', KEYS[10], ms) end
end
if ARGV[8] ~= '0' then
  redis.call('HINCRBY', KEYS[11], 'c', 1)
  if ARGV[9] ~= '' then redis.call('HINCRBY', KEYS[11], ARGV[9], 1) end
  redis.call('EXPIRE', KEYS[11], ARGV[8])
end
return 1
