#!lua flags=allow-oom
-- Stores a worker's heartbeat (expiring) and indexes it by time, dropping stale entries.
-- Allowed when Redis is out of memory: a draining worker must not look dead to its probes.
-- KEYS: worker, workers
-- ARGV: worker_id, beat, now_ms, ttl_ms, index_kept_ms
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[5]))
return 1
