-- extend: push a held hold's expiry out once, by the sale's extend_ms (while the customer pays).
-- KEYS[1] fs:{S}:hold:{id}   the hold's hash
-- KEYS[2] fs:{S}:holds       zset hold_id -> expires_at_ms
-- KEYS[3] fs:{S}:sale        sale hash (extend_ms)
-- ARGV[1] pfx            key prefix fs:{S}:
-- ARGV[2] hold_id        the hold
-- ARGV[3] offset_ms      test clock offset (0 in production)
-- ARGV[4] retention_ms   how long an ended hold stays readable
-- ARGV[5] owner          the customer asking ('' = anyone: the admin); another customer's hold
--                        answers UNKNOWN_HOLD
-- ARGV[6] request_id     the caller's X-Request-Id, written on the events as `rid` ('' = none)
-- Returns {'OK', expires_at_ms} | {'UNKNOWN_HOLD'} | {'HOLD_EXPIRED', status}
--   | {'HOLD_RELEASED', status} | {'HOLD_CONFIRMED', status} | {'ALREADY_EXTENDED', expires_at_ms}
-- An extension appends `extended` (hold, user, lines, at_ms, expires_at_ms) to fs:{S}:events
-- (pfx .. 'events', same slot), so the hold's new expiry reaches PostgreSQL.
local pfx = ARGV[1]
local hold_id = ARGV[2]
local offset_ms = tonumber(ARGV[3])
local retention_ms = tonumber(ARGV[4])
local owner = ARGV[5] or ''
request_id = ARGV[6] or ''  -- lua/_shared.lua's, read by emit

local h = redis.call('HMGET', KEYS[1], 'status', 'expires_at_ms', 'extended', 'user', 'lines')
if not h[1] or (owner ~= '' and h[4] ~= owner) then return { 'UNKNOWN_HOLD' } end
local now = now_ms(offset_ms)
local status = settle(pfx, hold_id, h[1], h[2], now, retention_ms)
if status == 'expired' then return { 'HOLD_EXPIRED', status } end
if status == 'confirmed' or status == 'compensated' then return { 'HOLD_CONFIRMED', status } end
if status ~= 'held' then return { 'HOLD_RELEASED', status } end
if h[3] == '1' then return { 'ALREADY_EXTENDED', tonumber(h[2]) } end

local expires_at_ms = tonumber(h[2]) + tonumber(redis.call('HGET', KEYS[3], 'extend_ms') or 0)
redis.call('HSET', KEYS[1], 'expires_at_ms', expires_at_ms, 'extended', 1)
redis.call('ZADD', KEYS[2], 'XX', expires_at_ms, hold_id)
emit(pfx, 'extended', hold_id, h[4], h[5], now, { 'expires_at_ms', expires_at_ms })
return { 'OK', expires_at_ms }
