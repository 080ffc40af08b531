#!lua flags=allow-oom
-- Takes a concurrency slot for each of a worker's claimed jobs of limited job types
-- (hostedjobs/concurrency.py), in order, or, with all `limit` slots of the job's group in
-- use, sets the job aside until one frees: it leaves the claimed set and the worker's claims
-- for the group's waiting set (scored by when it was due), its try uncounted, the reason in
-- its meta hash (with the waiting set, for cancel and delete), and the group is listed with
-- its limit (release_slots.lua moves waiters back). A slot is a field of the group's hash:
-- job id -> worker id; one whose worker's lease lapsed or whose job is no longer claimed is
-- stale and dropped (only looked at when the group is full). Only a job the worker still
-- holds takes a slot.
-- KEYS: groups, claimed, claims, leases, tries, then per job: slots, waiting, meta
-- ARGV: worker_id, meta_ttl_s, then per job: id, limit, due_ms, tries_field, function, reason, group_field
-- Returns per job: 1 if it holds a slot, 0 if it waits, -1 if the worker no longer held it.
local fixed_keys, fixed_argv, per_keys, per_argv = 5, 2, 3, 7
local redis_ms
local results = {}
for n = 1, (#KEYS - fixed_keys) / per_keys do
  local k, a = fixed_keys + (n - 1) * per_keys, fixed_argv + (n - 1) * per_argv
  local slots, waiting, meta = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local id, limit = ARGV[a + 1], tonumber(ARGV[a + 2])
  local result = 1
  if redis.call('SISMEMBER', KEYS[3], id) == 0 then
    result = -1
  elseif redis.call('HEXISTS', slots, id) == 0 and redis.call('HLEN', slots) >= limit then
    if not redis_ms then
      local clock = redis.call('TIME')
      redis_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
    end
    local held = redis.call('HGETALL', slots)
    local stale = {}
    for i = 1, #held, 2 do
      local lease = redis.call('ZSCORE', KEYS[4], held[i + 1])
      if not lease or tonumber(lease) <= redis_ms or not redis.call('ZSCORE', KEYS[2], held[i]) then
        stale[#stale + 1] = held[i]
      end
    end
    if #stale > 0 then redis.call('HDEL', slots, unpack(stale)) end
    if #held / 2 - #stale >= limit then
      result = 0
      redis.call('ZREM', KEYS[2], id)
      redis.call('SREM', KEYS[3], id)
      redis.call('ZADD', waiting, ARGV[a + 3], id)
      redis.call('HSET', KEYS[1], ARGV[a + 7], ARGV[a + 2])
      redis.call('HSET', KEYS[5], id, ARGV[a + 4])
      redis.call('HSET', meta, 'parked', ARGV[a + 5], 'parked_reason', ARGV[a + 6], 'parked_key', waiting)
      redis.call('EXPIRE', meta, ARGV[2])
    end
  end
  if result == 1 then redis.call('HSET', slots, id, ARGV[1]) end
  results[n] = result
end
return results
