#!lua flags=allow-oom
-- Takes a concurrency slot for a claimed job of a limited job type (hostedjobs/concurrency.py),
-- or, with all `limit` slots of its group in use, sets the job aside until one frees: it
-- leaves the claimed set and the worker's claims for the group's waiting set (scored by
-- when it was due), its try uncounted, the reason in its meta hash (with the waiting set,
-- for cancel and delete), and the group is listed with its limit (release_slots.lua moves
-- waiters back). A slot is a field of the group's hash: job id -> worker id; one whose
-- worker's lease lapsed or whose job is no longer claimed is stale and dropped (only
-- looked at when the group is full). Only a job the worker still holds takes a slot.
-- KEYS: slots, waiting, groups, claimed, claims, leases, tries, meta
-- ARGV: id, worker_id, limit, due_ms, tries_field, function, reason, meta_ttl_s, group_field
-- Returns 1 if the job holds a slot, 0 if it waits, -1 if the worker no longer held it.
if redis.call('SISMEMBER', KEYS[5], ARGV[1]) == 0 then return -1 end
local limit = tonumber(ARGV[3])
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HLEN', KEYS[1]) >= limit then
  local clock = redis.call('TIME')
  local redis_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
  local held = redis.call('HGETALL', KEYS[1])
  local stale = {}
  for i = 1, #held, 2 do
    local lease = redis.call('ZSCORE', KEYS[6], held[i + 1])
    if not lease or tonumber(lease) <= redis_ms or not redis.call('ZSCORE', KEYS[4], held[i]) then
      stale[#stale + 1] = held[i]
    end
  end
  if #stale > 0 then redis.call('HDEL', KEYS[1], unpack(stale)) end
  if #held / 2 - #stale >= limit then
    redis.call('ZREM', KEYS[4], ARGV[1])
    redis.call('SREM', KEYS[5], ARGV[1])
    redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
    redis.call('HSET', KEYS[3], ARGV[9], ARGV[3])
    redis.call('HSET', KEYS[7], ARGV[1], ARGV[5])
    redis.call('HSET', KEYS[8], 'parked', ARGV[6], 'parked_reason', ARGV[7], 'parked_key', KEYS[2])
    redis.call('EXPIRE', KEYS[8], ARGV[8])
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
