#!lua flags=allow-oom
-- Gives back the jobs of workers whose lease lapsed (they crashed, or lost Redis for longer
-- than their lease): each job goes back to the queue, due now, its try counted, and the
-- worker's lease and claims are dropped. A worker that renewed its lease meanwhile keeps
-- its jobs. Reads first, so nothing is written unless everything it needs was readable.
-- KEYS: queue, claimed, leases, wake, then per worker: claims
-- ARGV: now_ms, wake_kept, events_channel, then per worker: worker_id
-- Returns how many jobs went back to the queue.
local clock = redis.call('TIME')
local redis_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local lapsed, sets, jobs = {}, {}, {}
for n = 4, #ARGV do
  local lease = redis.call('ZSCORE', KEYS[3], ARGV[n])
  if lease and tonumber(lease) <= redis_ms then
    lapsed[#lapsed + 1] = ARGV[n]
    sets[#sets + 1] = KEYS[n + 1]
    for _, id in ipairs(redis.call('SMEMBERS', KEYS[n + 1])) do jobs[#jobs + 1] = id end
  end
end
if #lapsed == 0 then return 0 end
if #jobs > 0 then
  redis.call('PUBLISH', ARGV[3], 'requeued ' .. table.concat(jobs, ' '))
end
redis.call('ZREM', KEYS[3], unpack(lapsed))
redis.call('DEL', unpack(sets))
if #jobs > 0 then
  local members = {}
  for i = 1, #jobs do
    members[2 * i - 1] = ARGV[1]
    members[2 * i] = jobs[i]
  end
  redis.call('ZADD', KEYS[1], unpack(members))
  redis.call('ZREM', KEYS[2], unpack(jobs))
  local kept = tonumber(ARGV[2])
  if redis.call('LPUSH', KEYS[4], '1') > kept then redis.call('LTRIM', KEYS[4], 0, kept - 1) end
end
return #jobs
