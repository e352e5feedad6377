-- sweep: expire a bounded batch of holds whose expiry has passed, oldest first.
-- KEYS[1] fs:{S}:holds       zset hold_id -> expires_at_ms
-- KEYS[2] fs:{S}:events      stream the reconciler reads
-- ARGV[1] pfx            key prefix fs:{S}:
-- ARGV[2] offset_ms      test clock offset (0 in production)
-- ARGV[3] limit          most holds to expire in this call (count)
-- ARGV[4] retention_ms   how long an ended hold stays readable
-- Returns {expired_count, more(0|1)}: more = expired holds are still waiting after this batch.
local pfx = ARGV[1]
local offset_ms = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local retention_ms = tonumber(ARGV[4])

local now = now_ms(offset_ms)
local n = reclaim_expired(pfx, now, limit, retention_ms)
local more = redis.call('ZCOUNT', KEYS[1], '-inf', now) > 0 and 1 or 0
return { n, more }
