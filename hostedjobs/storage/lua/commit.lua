-- Stores a batch of outcomes (a worker's group commit).
-- KEYS: queue, running, wake, abort, succeeded, failed, cancelled, then per outcome: lock, job, tries, result, meta
-- ARGV: now_ms, finished_kept, finished_max_age_ms (0: no limit), wake_kept, events_channel,
--       meta_ttl_s, then per outcome: kind, id, data, number
--   kind 'S' succeeded, 'X' failed, 'C' cancelled: data is the result record ('' to keep
--     none), number its lifetime in ms (-1: for ever);
--   kind 'R' to run again (a failed try; it counted): number is when (ms), data the error,
--     kept in the meta hash;
--   kind 'G' given back by a shutdown (not a try: the count is undone): number is when (ms).
-- Returns 1.
local queue, running, wake, abort = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local indexes = {S = KEYS[5], X = KEYS[6], C = KEYS[7]}
local now, kept, max_age = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local meta_ttl = tonumber(ARGV[6])
local deleted, ids, finished, requeued, indexed = {}, {}, {}, {}, {}
local finished_ids, requeued_ids = {}, {}
for n = 1, (#ARGV - 6) / 4 do
  local i, base = 7 + 4 * (n - 1), 7 + 5 * (n - 1)
  local kind, id, data, number = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  ids[#ids + 1] = id
  deleted[#deleted + 1] = KEYS[base + 1]
  if kind == 'R' or kind == 'G' then
    requeued[#requeued + 1] = number
    requeued[#requeued + 1] = id
    requeued_ids[#requeued_ids + 1] = id
    if kind == 'G' then
      if tonumber(redis.call('GET', KEYS[base + 3]) or '0') > 0 then
        redis.call('DECR', KEYS[base + 3])
      end
    elseif data ~= '' then
      redis.call('HSET', KEYS[base + 5], 'error', data)
      redis.call('EXPIRE', KEYS[base + 5], meta_ttl)
    end
  else
    if data ~= '' and number ~= 0 then
      if number > 0 then
        redis.call('SET', KEYS[base + 4], data, 'PX', number)
      else
        redis.call('SET', KEYS[base + 4], data)
      end
      local index = indexed[kind]
      if not index then
        index = {}
        indexed[kind] = index
      end
      index[#index + 1] = now
      index[#index + 1] = id
    end
    deleted[#deleted + 1] = KEYS[base + 2]
    deleted[#deleted + 1] = KEYS[base + 3]
    finished_ids[#finished_ids + 1] = id
  end
end
redis.call('DEL', unpack(deleted))
redis.call('ZREM', running, unpack(ids))
if #finished_ids > 0 then
  redis.call('ZREM', queue, unpack(finished_ids))
  redis.call('ZREM', abort, unpack(finished_ids))
  redis.call('PUBLISH', ARGV[5], 'finished ' .. table.concat(finished_ids, ' '))
end
for kind, members in pairs(indexed) do
  local index = indexes[kind]
  redis.call('ZADD', index, unpack(members))
  redis.call('ZREMRANGEBYRANK', index, 0, -kept - 1)
  if max_age > 0 then redis.call('ZREMRANGEBYSCORE', index, '-inf', now - max_age) end
end
if #requeued > 0 then
  redis.call('ZADD', queue, unpack(requeued))
  local wake_kept = tonumber(ARGV[4])
  if redis.call('LPUSH', wake, '1') > wake_kept then redis.call('LTRIM', wake, 0, wake_kept - 1) end
  redis.call('PUBLISH', ARGV[5], 'requeued ' .. table.concat(requeued_ids, ' '))
end
return 1
