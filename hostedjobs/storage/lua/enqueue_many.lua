#!lua
-- Adds a batch of jobs (each unless its id is taken) and wakes a worker.
-- KEYS: queue, wake, then per job: job, result
-- ARGV: score_ms, ttl_ms, wake_kept, then per job: id, record
-- Returns how many jobs were added.
local score, ttl, kept = ARGV[1], ARGV[2], tonumber(ARGV[3])
local members = {}
for n = 1, (#KEYS - 2) / 2 do
  if redis.call('EXISTS', KEYS[2 + 2 * n]) == 0
      and redis.call('SET', KEYS[1 + 2 * n], ARGV[3 + 2 * n], 'PX', ttl, 'NX') then
    members[#members + 1] = score
    members[#members + 1] = ARGV[2 + 2 * n]
  end
end
if #members > 0 then
  redis.call('ZADD', KEYS[1], unpack(members))
  if redis.call('LPUSH', KEYS[2], '1') > kept then redis.call('LTRIM', KEYS[2], 0, kept - 1) end
end
return #members / 2
