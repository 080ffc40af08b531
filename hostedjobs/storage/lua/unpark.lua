#!lua flags=allow-oom
-- Moves parked jobs of functions the calling worker can run back to the queue, at their due
-- times, up to `limit` per function per call (a function's set is forgotten once empty).
-- KEYS: queue, parked_functions, wake, then per function: parked
-- ARGV: limit, wake_kept, then per function: function
-- Returns how many jobs went back to the queue.
local limit, moved = tonumber(ARGV[1]), 0
for n = 3, #ARGV do
  local parked = KEYS[n + 1]
  local items = redis.call('ZRANGE', parked, 0, limit - 1, 'WITHSCORES')
  if #items > 0 then
    local members = {}
    for i = 1, #items, 2 do
      members[i] = items[i + 1]
      members[i + 1] = items[i]
    end
    redis.call('ZADD', KEYS[1], unpack(members))
    redis.call('ZREMRANGEBYRANK', parked, 0, #items / 2 - 1)
    moved = moved + #items / 2
  end
  if redis.call('ZCARD', parked) == 0 then redis.call('SREM', KEYS[2], ARGV[n]) end
end
if moved > 0 then
  local kept = tonumber(ARGV[2])
  if redis.call('LPUSH', KEYS[3], '1') > kept then redis.call('LTRIM', KEYS[3], 0, kept - 1) end
end
return moved
