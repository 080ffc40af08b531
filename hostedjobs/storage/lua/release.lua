#!lua flags=allow-oom
-- Gives back to the queue, due now and with their try uncounted, jobs a worker holds but does
-- not run: claims whose reply it never got (the call timed out after Redis had run it).
-- Only jobs still in the worker's claims are touched.
-- KEYS: queue, claimed, tries, claims, wake
-- ARGV: now_ms, wake_kept, then per job: id
-- Returns how many jobs went back to the queue.
local ids = {}
for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end
if #ids == 0 then return 0 end
local held = redis.call('SMISMEMBER', KEYS[4], unpack(ids))
local counts = redis.call('HMGET', KEYS[3], unpack(ids))
local back, due, tries = {}, {}, {}
for n = 1, #ids do
  if held[n] == 1 then
    back[#back + 1] = ids[n]
    due[#due + 1] = ARGV[1]
    due[#due + 1] = ids[n]
    local count = tonumber(string.match(counts[n] or '', '^%d+')) or 1
    tries[#tries + 1] = ids[n]
    tries[#tries + 1] = math.max(count - 1, 0) .. ' 0'
  end
end
if #back == 0 then return 0 end
redis.call('ZREM', KEYS[2], unpack(back))
redis.call('SREM', KEYS[4], unpack(back))
redis.call('ZADD', KEYS[1], unpack(due))
redis.call('HSET', KEYS[3], unpack(tries))
local kept = tonumber(ARGV[2])
if redis.call('LPUSH', KEYS[5], '1') > kept then redis.call('LTRIM', KEYS[5], 0, kept - 1) end
return #back
