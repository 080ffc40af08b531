#!lua flags=allow-oom
-- Frees finished runs' concurrency slots (acquire_slot.lua), each if its worker still holds
-- it (one whose lease lapsed may end a run that runs elsewhere now), and moves as many of
-- each group's waiting jobs back to the queue, oldest due first, at their due times, as
-- the group has free slots, waking a worker for each. Slots whose worker's lease
-- lapsed or whose job is no longer claimed are dropped first (a crashed worker's), so a
-- worker's periodic pass over every group with waiters (no ids) frees them. A group with
-- no waiters left is no longer listed. The moved jobs take a slot when claimed, so one
-- enqueued meanwhile may take it first and a moved one wait again.
-- KEYS: queue, wake, leases, claimed, groups, then per entry: slots, waiting
-- ARGV: wake_kept, worker_id (a slot is freed only if it holds it), then per entry:
--       group_field, limit, id (the run whose slot is freed, or '')
-- Returns how many jobs went back to the queue.
local clock = redis.call('TIME')
local redis_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local fixed_keys, fixed_argv = 5, 2
local moved, sent = 0, {}
for g = 1, (#KEYS - fixed_keys) / 2 do
  local slots, waiting = KEYS[fixed_keys + 2 * g - 1], KEYS[fixed_keys + 2 * g]
  local a = fixed_argv + 3 * (g - 1)
  local field, limit, id = ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3]
  if id ~= '' and redis.call('HGET', slots, id) == ARGV[2] then redis.call('HDEL', slots, id) end
  local waiters = redis.call('ZCARD', waiting)
  if waiters > 0 then
    local held = redis.call('HGETALL', slots)
    local stale = {}
    for i = 1, #held, 2 do
      local lease = redis.call('ZSCORE', KEYS[3], held[i + 1])
      if not lease or tonumber(lease) <= redis_ms or not redis.call('ZSCORE', KEYS[4], held[i]) then
        stale[#stale + 1] = held[i]
      end
    end
    if #stale > 0 then redis.call('HDEL', slots, unpack(stale)) end
    -- Less the waiters this call moved already (an earlier entry of the group).
    local free = limit - (#held / 2 - #stale) - (sent[field] or 0)
    if free > 0 then
      local items = redis.call('ZRANGE', waiting, 0, free - 1, 'WITHSCORES')
      local members = {}
      for i = 1, #items, 2 do
        members[i] = items[i + 1]
        members[i + 1] = items[i]
      end
      redis.call('ZADD', KEYS[1], unpack(members))
      redis.call('ZREMRANGEBYRANK', waiting, 0, #items / 2 - 1)
      moved = moved + #items / 2
      sent[field] = (sent[field] or 0) + #items / 2
      waiters = waiters - #items / 2
    end
  end
  if waiters == 0 then redis.call('HDEL', KEYS[5], field) end
end
if moved > 0 then
  local kept = tonumber(ARGV[1])
  local tokens = {}
  for i = 1, math.min(moved, kept) do tokens[i] = '1' end
  if redis.call('LPUSH', KEYS[2], unpack(tokens)) > kept then redis.call('LTRIM', KEYS[2], 0, kept - 1) end
end
return moved
