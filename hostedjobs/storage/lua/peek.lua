#!lua flags=allow-oom
-- Finds due jobs for a claim to try, claiming nothing: the first half of a claim, which can
-- ride behind a worker's blocking wait (the ids it finds are then claimed with their keys).
-- It also names workers whose lease lapsed (they stopped renewing it: they crashed), for the
-- caller to recover their jobs (recover.lua). When more jobs are due than the limit, the ids
-- come from a window at a random place among the first due ones (`spread`, from the caller),
-- so workers peeking at once rarely pick the same ones; only among those due within a second
-- of the first, so that a job with a priority is not passed over. Keeps the wake list in step:
-- a token for other workers while more jobs are due, none once nothing is. An idle peek runs
-- five commands.
-- KEYS: queue, wake, leases
-- ARGV: now_ms ('' for Redis's clock minus clock_offset_ms: a peek sent behind a BLPOP runs
--       when the BLPOP returns), limit, clock_offset_ms, wake_kept, spread (0 to 1)
-- Returns {now_ms, {due ids}, more_due (0/1), next_due_ms or '', redis_ms, {lapsed workers}}.
local clock = redis.call('TIME')
local redis_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local now = ARGV[1]
if now == '' then now = string.format('%d', redis_ms - tonumber(ARGV[3])) end
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', redis_ms, 'LIMIT', 0, 8)
local limit = tonumber(ARGV[2])
local first = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit + 1)
local due = {}
for i = 1, #first, 2 do due[#due + 1] = first[i] end
local more = 0
if #due > limit then
  more = 1
  -- The window spreads over jobs due within a second of the first one only, so a job queued
  -- with a priority (scored its head start earlier) is never skipped for younger ones.
  local near = math.min(tonumber(now), tonumber(first[2]) + 1000)
  local due_count = redis.call('ZCOUNT', KEYS[1], '-inf', near)
  local offset = math.floor(tonumber(ARGV[5]) * math.max(0, math.min(due_count - limit, 8 * limit)))
  due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', offset, limit)
  local kept = tonumber(ARGV[4])
  if redis.call('LPUSH', KEYS[2], '1') > kept then redis.call('LTRIM', KEYS[2], 0, kept - 1) end
else
  redis.call('DEL', KEYS[2])
end
local later = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
return {now, due, more, later[2] or '', redis_ms, lapsed}
