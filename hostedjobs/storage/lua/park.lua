#!lua flags=allow-oom
-- Sets aside a claimed job that its worker has no code for (another application's job type,
-- or a version from a newer deploy), for a worker that has: it leaves the claimed set for a
-- set of its function's parked jobs (scored by when it was due), its try uncounted, with the
-- reason in its meta hash. Workers that can run a parked function move its jobs back to the
-- queue (unpark.lua). Only a job the worker still holds is parked.
-- KEYS: claimed, tries, claims, parked_functions, parked, meta
-- ARGV: id, function, due_ms, tries_field, reason, meta_ttl_s
-- Returns 1 if parked, 0 if the worker no longer held the job.
if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
redis.call('HSET', KEYS[6], 'parked', ARGV[2], 'parked_reason', ARGV[5])
redis.call('EXPIRE', KEYS[6], ARGV[6])
return 1
