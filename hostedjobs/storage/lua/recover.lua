#!lua flags=allow-oom
-- Gives back the jobs of workers whose lease lapsed (they crashed, or lost Redis for longer
-- than their lease): each job goes back to the queue, due now, its try counted, and the
-- worker's lease and claims are dropped. A worker that renewed its lease meanwhile keeps
-- its jobs. Each job whose meta hash is passed gets its lost try in its try history (the
-- worker, the try's start from the tries hash, a plain error, no traceback), as commit.lua
-- keeps a failed try's; a job claimed after the caller read the claims has none passed and
-- goes back without it. Reads first, so nothing is written unless everything it needs was
-- readable.
-- KEYS: queue, claimed, leases, wake, tries, then per worker: claims, then per job: meta
-- ARGV: now_ms, wake_kept, events_channel, meta_ttl_s, tries_kept, worker count, then per
--       worker: worker_id, then per job: id, its worker's position (from 1)
-- Returns how many jobs went back to the queue.
local clock = redis.call('TIME')
local redis_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local fixed_argv, fixed_keys = 6, 5
local workers = tonumber(ARGV[6])
local meta_of = {}
local job = 1
for i = fixed_argv + workers + 1, #ARGV, 2 do
  meta_of[ARGV[i + 1] .. ' ' .. ARGV[i]] = KEYS[fixed_keys + workers + job]
  job = job + 1
end
local lapsed, sets, jobs, owners = {}, {}, {}, {}
for n = 1, workers do
  local worker = ARGV[fixed_argv + n]
  local lease = redis.call('ZSCORE', KEYS[3], worker)
  if lease and tonumber(lease) <= redis_ms then
    lapsed[#lapsed + 1] = worker
    sets[#sets + 1] = KEYS[fixed_keys + n]
    for _, id in ipairs(redis.call('SMEMBERS', KEYS[fixed_keys + n])) do
      jobs[#jobs + 1] = id
      owners[#owners + 1] = n
    end
  end
end
if #lapsed == 0 then return 0 end
local counts = {}
if #jobs > 0 then
  counts = redis.call('HMGET', KEYS[5], unpack(jobs))
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
  local tries_kept = tonumber(ARGV[5])
  for i = 1, #jobs do
    local meta = meta_of[owners[i] .. ' ' .. jobs[i]]
    local try, started = string.match(counts[i] or '', '^(%d+) (%d+)')
    if meta and try then
      try = tonumber(try)
      local worker = ARGV[fixed_argv + owners[i]]
      local error = 'its worker ' .. worker .. ' stopped during try ' .. try .. ' (lease lapsed)'
      local entry = cjson.encode({
        ['try'] = try, at = redis_ms, error = error, traceback = '', worker = worker,
        started_at = tonumber(started)
      })
      redis.call('HSET', meta, 'error', error, 'traceback', '', 'try:' .. try, entry)
      if try > tries_kept then redis.call('HDEL', meta, 'try:' .. (try - tries_kept)) end
      redis.call('EXPIRE', meta, ARGV[4])
    end
  end
end
return #jobs
