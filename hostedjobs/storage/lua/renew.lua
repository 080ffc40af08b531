-- Renews the locks of a worker's running jobs and moves their queue scores along (see
-- claim.lua); a job whose lock is gone (its outcome was just committed) is left alone.
-- KEYS: queue, then per job: lock
-- ARGV: lock_ms, lapse_ms, then per job: id
-- Returns how many locks were renewed.
local members = {}
for n = 1, #KEYS - 1 do
  if redis.call('PEXPIRE', KEYS[n + 1], ARGV[1]) == 1 then
    members[#members + 1] = ARGV[2]
    members[#members + 1] = ARGV[n + 2]
  end
end
if #members > 0 then redis.call('ZADD', KEYS[1], 'XX', unpack(members)) end
return #members / 2
