-- Admits a job of a rate-limited, debounced or cooled-down type to run now, or says why not,
-- in one atomic step, so every worker of the fleet counts against the same limits.
-- KEYS: rate, debounce, cooldown
-- ARGV: job_id, limit, window_ms, check_debounce, cooldown_ms
-- limit 0: no rate limit; check_debounce 0 or 1; cooldown_ms 0: no cooldown.
-- Returns {0, ''} if admitted (its start recorded, the cooldown begun); {1, ms until the
-- window admits a start} over the rate limit; {2, ms left} in the cooldown; {3, id of the
-- newer job} superseded. Times by Redis's clock, so the fleet's clocks do not matter.
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if ARGV[4] == '1' then
  local latest = redis.call('GET', KEYS[2])
  if latest and latest ~= ARGV[1] then return {3, latest} end
end
local cooldown_ms = tonumber(ARGV[5])
if cooldown_ms > 0 then
  local left = redis.call('PTTL', KEYS[3])
  if left ~= -2 then return {2, tostring(left)} end
end
local limit = tonumber(ARGV[2])
if limit > 0 then
  -- A sliding-window log: the starts of the last window_ms, scored by their time.
  local window = tonumber(ARGV[3])
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - window)
  local count = redis.call('ZCARD', KEYS[1])
  if count >= limit then
    local oldest = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
    return {1, tostring(tonumber(oldest[2]) + window - now_ms)}
  end
  redis.call('ZADD', KEYS[1], now_ms, ARGV[1] .. ':' .. now[1] .. ':' .. now[2])
  redis.call('PEXPIRE', KEYS[1], window)
end
if cooldown_ms > 0 then redis.call('SET', KEYS[3], ARGV[1], 'PX', cooldown_ms) end
return {0, ''}
