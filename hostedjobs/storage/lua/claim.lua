-- Claims jobs a peek found, each by exactly one worker: a job still due and not locked gets
-- its lock, its try counted, and its queue score moved to when the lock lapses (renewed with
-- the lock), so claims never wade through running jobs and a crashed worker's job is due
-- again once its lock lapses. Jobs locked by a stock arq worker are left alone.
-- KEYS: queue, running, abort, then per candidate: job, lock, tries
-- ARGV: now_ms, lock_ms, limit, events_channel, then per candidate: id
-- Returns {{id, score, record ('' if gone), tries, aborted (0/1)} ..., locked_count}.
local queue, running, abort = KEYS[1], KEYS[2], KEYS[3]
local now, lock_ms, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local ids = {}
for i = 5, #ARGV do ids[#ids + 1] = ARGV[i] end
if #ids == 0 then return {{}, 0} end
local scores = redis.call('ZMSCORE', queue, unpack(ids))
local aborts = redis.call('ZMSCORE', abort, unpack(ids))
local claimed, job_keys, lapsed, started = {}, {}, {}, {}
local locked, taken = 0, 0
for n = 1, #ids do
  if taken >= limit then break end
  local score = scores[n]
  if score and tonumber(score) <= now then
    local base = 3 * n
    if redis.call('SET', KEYS[base + 2], '1', 'PX', lock_ms, 'NX') then
      local tries = 1
      if not redis.call('SET', KEYS[base + 3], '1', 'EX', 88400, 'NX') then
        tries = redis.call('INCR', KEYS[base + 3])
      end
      taken = taken + 1
      job_keys[taken] = KEYS[base + 1]
      claimed[taken] = {ids[n], score, '', tries, aborts[n] and 1 or 0}
      lapsed[#lapsed + 1] = now + lock_ms
      lapsed[#lapsed + 1] = ids[n]
      started[#started + 1] = now
      started[#started + 1] = ids[n]
    else
      locked = locked + 1
    end
  end
end
if taken > 0 then
  local records = redis.call('MGET', unpack(job_keys))
  for n = 1, taken do claimed[n][3] = records[n] or '' end
  redis.call('ZADD', queue, 'XX', unpack(lapsed))
  redis.call('ZADD', running, unpack(started))
  local running_ids = {}
  for n = 1, taken do running_ids[n] = claimed[n][1] end
  redis.call('PUBLISH', ARGV[4], 'running ' .. table.concat(running_ids, ' '))
end
return {claimed, locked}
