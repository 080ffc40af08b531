#!lua flags=allow-oom
-- Moves parked jobs of functions the calling worker can run back to the queue, at their due
-- times, up to `limit` in all (a function's set is forgotten once empty). No other worker is
-- woken: the caller claims these jobs next, so a worker without their code (the one that
-- parked them, still running in a rolling deploy) does not take and park them again.
-- KEYS: queue, parked_functions, then per function: parked
-- ARGV: limit, then per function: function
-- Returns the ids moved.
local left, moved = tonumber(ARGV[1]), {}
for n = 2, #ARGV do
  local parked = KEYS[n + 1]
  if left > 0 then
    local items = redis.call('ZRANGE', parked, 0, left - 1, 'WITHSCORES')
    if #items > 0 then
      local members = {}
      for i = 1, #items, 2 do
        members[i] = items[i + 1]
        members[i + 1] = items[i]
        moved[#moved + 1] = items[i]
      end
      redis.call('ZADD', KEYS[1], unpack(members))
      redis.call('ZREMRANGEBYRANK', parked, 0, #items / 2 - 1)
      left = left - #items / 2
    end
  end
  if redis.call('ZCARD', parked) == 0 then redis.call('SREM', KEYS[2], ARGV[n]) end
end
return moved
