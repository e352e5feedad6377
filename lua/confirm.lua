-- confirm: a held, unexpired hold becomes sold; confirming again returns the first answer.
-- KEYS[1] fs:{S}:hold:{id}   the hold's hash
-- KEYS[2] fs:{S}:holds       zset hold_id -> expires_at_ms
-- KEYS[3] fs:{S}:events      stream the reconciler reads
-- ARGV[1] pfx            key prefix fs:{S}:
-- ARGV[2] hold_id        the hold
-- ARGV[3] offset_ms      test clock offset (0 in production)
-- ARGV[4] retention_ms   how long an ended hold stays readable
-- ARGV[5] payment        opaque payment reference handed to the saga ('' for none)
-- ARGV[6] owner          the customer asking ('' = anyone: the admin): a hold of another
--                        customer answers UNKNOWN_HOLD, so its existence is not revealed
-- ARGV[7] request_id     the caller's X-Request-Id, written on the events as `rid` ('' = none)
-- Returns {'OK', status, confirmed_at_ms, replay(0|1)} | {'UNKNOWN_HOLD'}
--   | {'HOLD_EXPIRED', status} (expired, also when it expires on this call) | {'HOLD_RELEASED', status}
local pfx = ARGV[1]
local hold_id = ARGV[2]
local offset_ms = tonumber(ARGV[3])
local retention_ms = tonumber(ARGV[4])
local payment = ARGV[5]
local owner = ARGV[6] or ''
request_id = ARGV[7] or ''  -- lua/_shared.lua's, read by emit

local h = redis.call('HMGET', KEYS[1], 'status', 'expires_at_ms', 'user', 'lines', 'confirmed_at_ms')
if not h[1] or (owner ~= '' and h[3] ~= owner) then return { 'UNKNOWN_HOLD' } end
if h[1] == 'confirmed' or h[1] == 'compensated' then
  return { 'OK', h[1], tonumber(h[5]), 1 }
end
local now = now_ms(offset_ms)
local status = settle(pfx, hold_id, h[1], h[2], now, retention_ms)
if status == 'expired' then return { 'HOLD_EXPIRED', status } end
if status ~= 'held' then return { 'HOLD_RELEASED', status } end

move_units(pfx, h[4], 'resv', 'sold')
redis.call('HSET', KEYS[1], 'status', 'confirmed', 'confirmed_at_ms', now, 'payment', payment)
redis.call('PEXPIRE', KEYS[1], retention_ms)
redis.call('ZREM', KEYS[2], hold_id)
emit(pfx, 'confirmed', hold_id, h[3], h[4], now, { 'payment', payment })
return { 'OK', 'confirmed', now, 0 }
