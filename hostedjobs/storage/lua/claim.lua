#!lua flags=allow-oom
-- Claims jobs a peek found, each by exactly one worker: a job still due, and not locked by a
-- stock arq worker, moves from the queue to the claimed set (scored by the claim's time) and
-- to the worker's own claims, held while the worker's lease lives (worker_lease.lua), with
-- its try counted and its start time kept beside the count. A worker without a live lease
-- claims nothing. Its arq in-progress key is touched (set
-- and removed), so a stock arq worker that was about to take it (it WATCHes that key) backs
-- off. Batched commands only: nothing here costs a command per job. The caller reads the
-- claimed jobs' records in the same round trip. The reply ends with ids due next, so a busy
-- worker's next claim needs no peek first (from a window at a random place among the first
-- due ones, as in peek.lua, so busy workers rarely pick the same ones).
-- Sent again, it answers as it did: a candidate the worker already holds (in its claims and
-- the claimed set) is answered as claimed, its try not counted again and nothing written,
-- so a claim that redis-py sends again (its connection dropped after Redis had run it: a
-- failover, a restart) does not leave jobs the worker holds but never runs. Such a job's
-- score is its claim's time (when it was due is gone from the queue). The worker starts
-- none it already runs (a candidate from a peek older than its claim).
-- KEYS: queue, claimed, abort, tries, leases, claims, then per candidate: lock
-- ARGV: now_ms, worker_id, limit, events_channel, lookahead, spread (0 to 1), then per
--       candidate: id
-- Returns {{position, score, tries, aborted (0/1)} flat for each claimed candidate (its
-- position in the candidates, from 1), locked (how many stock arq workers held), {next due
-- ids}, leased (0: the worker's lease is gone, nothing claimed)}.
local queue, claimed_set, abort, tries = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[3])
if not redis.call('ZSCORE', KEYS[5], ARGV[2]) then return {{}, 0, {}, 0} end
local ids = {}
for i = 7, #ARGV do ids[i - 6] = ARGV[i] end
if #ids == 0 then return {{}, 0, {}, 1} end
local lock_keys = {}
for n = 1, #ids do lock_keys[n] = KEYS[6 + n] end
local scores = redis.call('ZMSCORE', queue, unpack(ids))
local aborts = {}
if redis.call('EXISTS', abort) == 1 then aborts = redis.call('ZMSCORE', abort, unpack(ids)) end
local locks = redis.call('MGET', unpack(lock_keys))
local counts = redis.call('HMGET', tries, unpack(ids))
-- Only a candidate gone from the queue can be one this worker holds already.
local held, held_at = {}, {}
for n = 1, #ids do
  if not scores[n] then
    held = redis.call('SMISMEMBER', KEYS[6], unpack(ids))
    held_at = redis.call('ZMSCORE', claimed_set, unpack(ids))
    break
  end
end
local reply, taken, touched, moved, counted = {}, {}, {}, {}, {}
local locked = 0
for n = 1, #ids do
  if #reply >= 4 * limit then break end
  local score = scores[n]
  if not score and held[n] == 1 and held_at[n] then
    reply[#reply + 1] = n
    reply[#reply + 1] = held_at[n]
    reply[#reply + 1] = math.max(tonumber(string.match(counts[n] or '', '^%d+')) or 1, 1)
    reply[#reply + 1] = aborts[n] and 1 or 0
  elseif score and tonumber(score) <= now then
    if locks[n] then
      locked = locked + 1
    else
      local count = 1
      -- A damaged entry (not written here) counts as no try, rather than failing the claim.
      if counts[n] then count = (tonumber(string.match(counts[n], '^%d+')) or 0) + 1 end
      local t = #taken + 1
      taken[t] = ids[n]
      touched[2 * t - 1] = lock_keys[n]
      touched[2 * t] = '1'
      moved[2 * t - 1] = ARGV[1]
      moved[2 * t] = ids[n]
      counted[2 * t - 1] = ids[n]
      counted[2 * t] = count .. ' ' .. ARGV[1]
      reply[#reply + 1] = n
      reply[#reply + 1] = score
      reply[#reply + 1] = count
      reply[#reply + 1] = aborts[n] and 1 or 0
    end
  end
end
if #taken > 0 then
  -- First, while nothing is written: a failure here (an ACL without pub/sub) writes nothing.
  redis.call('PUBLISH', ARGV[4], 'running ' .. table.concat(taken, ' '))
  redis.call('MSET', unpack(touched))
  local lock_taken = {}
  for t = 1, #taken do lock_taken[t] = touched[2 * t - 1] end
  redis.call('DEL', unpack(lock_taken))
  redis.call('ZREM', queue, unpack(taken))
  redis.call('ZADD', claimed_set, unpack(moved))
  redis.call('SADD', KEYS[6], unpack(taken))
  redis.call('HSET', tries, unpack(counted))
end
local upcoming = {}
local lookahead = tonumber(ARGV[5])
if lookahead > 0 then
  local head = redis.call('ZRANGEBYSCORE', queue, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
  if #head > 0 then
    -- Spread over the jobs due within a second of the first only, as peek.lua does.
    local near = math.min(now, tonumber(head[2]) + 1000)
    local due_count = redis.call('ZCOUNT', queue, '-inf', near)
    local offset = math.floor(tonumber(ARGV[6]) * math.max(0, math.min(due_count - lookahead, 8 * lookahead)))
    upcoming = redis.call('ZRANGEBYSCORE', queue, '-inf', now, 'LIMIT', offset, lookahead)
  end
end
return {reply, locked, upcoming, 1}
