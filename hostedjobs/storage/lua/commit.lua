#!lua flags=allow-oom
-- Stores a batch of one worker's outcomes, only for the jobs the worker still holds (in its
-- claims: a worker that lost its lease has had them taken back and run elsewhere, so its
-- outcome would double them). Each job leaves the claimed set and the worker's claims. A
-- finished job's result is stored (and indexed under its status, its job type's and the
-- worker's index of that status, unless it is a distributed cron run; each index trimmed
-- to finished_kept entries and max_age_ms), its record and try count removed, and its abort
-- request if it had one; a requeued job is due again at its time (a failed try's error,
-- traceback and entry in the job's try history kept in its meta hash, or a shutdown's try
-- uncounted). Allowed when Redis is out of memory: finishing jobs frees what they hold.
-- Each committed run is also counted in the minute's history hash (see hostedjobs/history.py):
-- its kind, kind per job type, and its run-time bucket per job type, one HINCRBY per field.
-- KEYS: claimed, tries, abort, queue, wake, claims, succeeded, failed, cancelled, worker_succeeded, worker_failed, worker_cancelled, history, then per outcome: job, result, meta, type_index
--       (worker_*: the worker's indexes of each state; type_index: the job type's index of
--       its status)
-- ARGV: now_ms, max_age_ms, finished_kept, wake_kept, events_channel, meta_ttl_s,
--       worker_index_ttl_ms, tries_kept, history_ttl_s (0: no history), then per outcome: id,
--       kind ('f' finished, 'r' requeued), ms (f: result kept ms, -1 for ever, 0 not kept; r:
--       due), data (f: result; r: the try's error, or ''), extra (f: status, with '!' after it
--       if it was aborted; r: '' if the try counts, else the tries field), more (f: 't'
--       indexed by status, job type and worker, 'i' by status and worker, '' not indexed; r:
--       the try's history entry as JSON with its number in "try" and its "traceback", or ''),
--       then per outcome its history entry: '<run-time bucket or -> <job type>'
-- Returns the ids not committed because the worker no longer held them.
local fixed_argv, fixed_keys, per_argv, per_keys = 9, 13, 6, 4
local n = (#ARGV - fixed_argv) / (per_argv + 1)
local ids = {}
for i = 1, n do ids[i] = ARGV[fixed_argv + (i - 1) * per_argv + 1] end
if n == 0 then return {} end
local held = redis.call('SMISMEMBER', KEYS[6], unpack(ids))
local indexes = {succeeded = KEYS[7], failed = KEYS[8], cancelled = KEYS[9]}
local by_worker = {succeeded = KEYS[10], failed = KEYS[11], cancelled = KEYS[12]}
local dropped, kept, finished, records, aborted, requeued, due = {}, {}, {}, {}, {}, {}, {}
local results, errors, uncounted = {}, {}, {}
local history, history_at = {}, fixed_argv + n * per_argv
local kinds = {succeeded = 's', failed = 'f', cancelled = 'c'}
local function count(i, kind)
  history[kind] = (history[kind] or 0) + 1
  local entry = ARGV[history_at + i]
  local space = string.find(entry, ' ', 1, true)
  local job_type = string.sub(entry, space + 1)
  if job_type == '' then return end
  local field = kind .. ' ' .. job_type
  history[field] = (history[field] or 0) + 1
  if kind ~= 'c' and string.sub(entry, 1, 1) ~= '-' then
    field = 'd' .. string.sub(entry, 1, space - 1) .. ' ' .. job_type
    history[field] = (history[field] or 0) + 1
  end
end
for i = 1, n do
  local a = fixed_argv + (i - 1) * per_argv
  local id, kind, ms, data, extra, more =
    ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6]
  local k = fixed_keys + (i - 1) * per_keys
  if held[i] ~= 1 then
    dropped[#dropped + 1] = id
  elseif kind == 'f' then
    kept[#kept + 1] = id
    finished[#finished + 1] = id
    records[#records + 1] = KEYS[k + 1]
    local status = extra
    if string.sub(extra, -1) == '!' then
      status = string.sub(extra, 1, -2)
      aborted[#aborted + 1] = id
    end
    if not indexes[status] then return redis.error_reply('unknown status ' .. status) end
    count(i, kinds[status])
    if data ~= '' and ms ~= '0' then
      local listed = {}
      if more ~= '' then listed = {indexes[status], by_worker[status]} end
      if more == 't' then listed[3] = KEYS[k + 4] end
      results[#results + 1] = {KEYS[k + 2], data, ms, listed, id}
    end
  else
    kept[#kept + 1] = id
    requeued[#requeued + 1] = id
    due[#due + 1] = ms
    due[#due + 1] = id
    if extra ~= '' then
      uncounted[#uncounted + 1] = id
      uncounted[#uncounted + 1] = extra
    else
      count(i, 'r')
      if data ~= '' then errors[#errors + 1] = {KEYS[k + 3], data, more} end
    end
  end
end
if #kept == 0 then return dropped end
-- Pub/sub first, while nothing is written: an ACL without it fails the batch cleanly.
if #finished > 0 then redis.call('PUBLISH', ARGV[5], 'finished ' .. table.concat(finished, ' ')) end
if #requeued > 0 then redis.call('PUBLISH', ARGV[5], 'requeued ' .. table.concat(requeued, ' ')) end
redis.call('ZREM', KEYS[1], unpack(kept))
redis.call('SREM', KEYS[6], unpack(kept))
local now = tonumber(ARGV[1])
local touched, order = {}, {}
for _, r in ipairs(results) do
  if r[3] == '-1' then
    redis.call('SET', r[1], r[2])
  else
    redis.call('SET', r[1], r[2], 'PX', r[3])
  end
  for _, index in ipairs(r[4]) do
    local members = touched[index]
    if not members then
      members = {}
      touched[index] = members
      order[#order + 1] = index
    end
    members[#members + 1] = now
    members[#members + 1] = r[5]
  end
end
local tries_kept = tonumber(ARGV[8])
for _, e in ipairs(errors) do
  if e[3] ~= '' then
    local entry = cjson.decode(e[3])
    redis.call('HSET', e[1], 'error', e[2], 'traceback', entry.traceback, 'try:' .. entry.try, e[3])
    if entry.try > tries_kept then redis.call('HDEL', e[1], 'try:' .. (entry.try - tries_kept)) end
  else
    redis.call('HSET', e[1], 'error', e[2])
  end
  redis.call('EXPIRE', e[1], ARGV[6])
end
if #finished > 0 then
  redis.call('DEL', unpack(records))
  redis.call('HDEL', KEYS[2], unpack(finished))
  if #aborted > 0 then redis.call('ZREM', KEYS[3], unpack(aborted)) end
end
local max_age = tonumber(ARGV[2])
local status_index = {[KEYS[7]] = true, [KEYS[8]] = true, [KEYS[9]] = true}
local worker_index = {[KEYS[10]] = true, [KEYS[11]] = true, [KEYS[12]] = true}
for _, index in ipairs(order) do
  redis.call('ZADD', index, unpack(touched[index]))
  redis.call('ZREMRANGEBYRANK', index, 0, -tonumber(ARGV[3]) - 1)
  if max_age > 0 then redis.call('ZREMRANGEBYSCORE', index, '-inf', now - max_age) end
  if worker_index[index] then
    redis.call('PEXPIRE', index, ARGV[7])
  elseif not status_index[index] and max_age > 0 then
    redis.call('PEXPIRE', index, max_age)
  end
end
if #uncounted > 0 then redis.call('HSET', KEYS[2], unpack(uncounted)) end
if #requeued > 0 then
  redis.call('ZADD', KEYS[4], unpack(due))
  local tokens = tonumber(ARGV[4])
  if redis.call('LPUSH', KEYS[5], '1') > tokens then redis.call('LTRIM', KEYS[5], 0, tokens - 1) end
end
if ARGV[9] ~= '0' and next(history) then
  for field, value in pairs(history) do redis.call('HINCRBY', KEYS[13], field, value) end
  redis.call('EXPIRE', KEYS[13], ARGV[9])
end
return dropped
