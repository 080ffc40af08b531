#!lua
-- Admits jobs of rate-limited, debounced or cooled-down types to run now, or says why not,
-- each in one atomic step, so every worker of the fleet counts against the same limits. A
-- worker sends the jobs it starts in one turn of its loop together, in their order.
-- KEYS: then per job: rate, debounce, cooldown
-- ARGV: then per job: job_id, limit, window_ms, check_debounce, cooldown_ms
-- limit 0: no rate limit; check_debounce 0 or 1; cooldown_ms 0: no cooldown.
-- Returns per job {0, ''} if admitted (its start recorded, the cooldown begun); {1, ms until
-- the window admits a start} over the rate limit; {2, ms left} in the cooldown; {3, id of
-- the newer job} superseded. Times by Redis's clock, so the fleet's clocks do not matter.
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local stamp = ':' .. now[1] .. ':' .. now[2]
local turned_away = {}

local function admit(rate, debounce, cooldown, id, limit, window, check_debounce, cooldown_ms)
  if check_debounce == '1' then
    local latest = redis.call('GET', debounce)
    if latest and latest ~= id then return {3, latest} end
  end
  if cooldown_ms > 0 then
    local left = redis.call('PTTL', cooldown)
    if left ~= -2 then return {2, tostring(left)} end
  end
  if limit > 0 then
    -- A sliding-window log: the starts of the last window ms, scored by their time.
    redis.call('ZREMRANGEBYSCORE', rate, '-inf', now_ms - window)
    local count = redis.call('ZCARD', rate)
    if count >= limit then
      -- The j-th job of this call turned away from the key waits for the j-th start to
      -- come, not all of them for the first (they would all be taken and turned away again).
      local j = turned_away[rate] or 0
      turned_away[rate] = j + 1
      local at = count - limit + j % limit
      local oldest = redis.call('ZRANGE', rate, at, at, 'WITHSCORES')
      local wait = tonumber(oldest[2]) + window * (1 + math.floor(j / limit)) - now_ms
      return {1, tostring(wait)}
    end
    redis.call('ZADD', rate, now_ms, id .. stamp)
    redis.call('PEXPIRE', rate, window)
  end
  if cooldown_ms > 0 then redis.call('SET', cooldown, id, 'PX', cooldown_ms) end
  return {0, ''}
end

local verdicts = {}
for i = 0, #KEYS / 3 - 1 do
  local k, a = i * 3, i * 5
  verdicts[i + 1] = admit(KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], ARGV[a + 1],
    tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), ARGV[a + 4], tonumber(ARGV[a + 5]))
end
return verdicts
