-- release: give a hold's units back. mode 'release' ends a held hold (the customer's choice);
-- mode 'compensate' undoes a confirmed one (the saga's compensation when payment fails).
-- KEYS[1] fs:{S}:hold:{id}   the hold's hash
-- KEYS[2] fs:{S}:holds       zset hold_id -> expires_at_ms
-- KEYS[3] fs:{S}:events      stream the reconciler reads
-- ARGV[1] pfx            key prefix fs:{S}:
-- ARGV[2] hold_id        the hold
-- ARGV[3] offset_ms      test clock offset (0 in production)
-- ARGV[4] retention_ms   how long an ended hold stays readable
-- ARGV[5] mode           'release' | 'compensate'
-- ARGV[6] reason         free text recorded on a compensation event
-- ARGV[7] writeoff       compensate only: "sku:supplier:qty,..." of the hold's units that must
--                        not go back on sale (no supplier can ship them): they leave the stock
--                        as an adjustment (an `adjusted` event each) instead; '' = none
-- ARGV[8] owner          the customer asking ('' = anyone: the admin, the saga); another
--                        customer's hold answers UNKNOWN_HOLD
-- ARGV[9] request_id     the caller's X-Request-Id (the saga's: the order's), written on the
--                        events as `rid` ('' = none)
-- Returns {'OK', status, replay(0|1)} | {'UNKNOWN_HOLD'} | {'HOLD_CONFIRMED', status}
--   | {'NOT_CONFIRMED', status} | {'INVALID_WRITEOFF', 'sku:supplier'}
local pfx = ARGV[1]
local hold_id = ARGV[2]
local offset_ms = tonumber(ARGV[3])
local retention_ms = tonumber(ARGV[4])
local mode = ARGV[5]
local reason = ARGV[6]
local writeoff = ARGV[7] or ''
local owner = ARGV[8] or ''
request_id = ARGV[9] or ''  -- lua/_shared.lua's, read by emit

local h = redis.call('HMGET', KEYS[1], 'status', 'expires_at_ms', 'user', 'lines')
if not h[1] or (owner ~= '' and h[3] ~= owner) then return { 'UNKNOWN_HOLD' } end
local now = now_ms(offset_ms)
local status = settle(pfx, hold_id, h[1], h[2], now, retention_ms)

if mode == 'compensate' then
  if status == 'compensated' then return { 'OK', status, 1 } end
  if status ~= 'confirmed' then return { 'NOT_CONFIRMED', status } end
  -- Plan the write-off before any write: each part must be units this hold has.
  local held = {}
  for sku, sup, qty in string.gmatch(h[4], ALLOC_PATTERN) do
    held[sku .. ':' .. sup] = (held[sku .. ':' .. sup] or 0) + tonumber(qty)
  end
  local cuts = {}
  for sku, sup, qty in string.gmatch(writeoff, ALLOC_PATTERN) do
    local key = sku .. ':' .. sup
    local q = tonumber(qty)
    if q < 1 or (held[key] or 0) < q then return { 'INVALID_WRITEOFF', key } end
    held[key] = held[key] - q
    cuts[#cuts + 1] = { sku, sup, q }
  end
  move_units(pfx, h[4], 'sold', 'avail')
  uncount_customer(pfx, h[3], h[4])
  redis.call('HSET', KEYS[1], 'status', 'compensated', 'ended_at_ms', now)
  emit(pfx, 'compensated', hold_id, h[3], h[4], now, { 'reason', reason })
  for _, cut in ipairs(cuts) do
    local k = pfx .. 'stock:' .. cut[1]
    redis.call('HINCRBY', k, 'avail:' .. cut[2], -cut[3])
    redis.call('HINCRBY', k, 'available', -cut[3])
    redis.call('HINCRBY', k, 'adj:' .. cut[2], -cut[3])
    redis.call('HINCRBY', k, 'adjusted', -cut[3])
    redis.call('XADD', KEYS[3], '*', 'type', 'adjusted', 'sku', cut[1], 'supplier', cut[2],
      'delta', -cut[3], 'applied', -cut[3], 'shortfall', 0,
      'reason', 'written off with hold ' .. hold_id .. ': ' .. reason, 'at_ms', now)
  end
  return { 'OK', 'compensated', 0 }
end

if status == 'confirmed' or status == 'compensated' then return { 'HOLD_CONFIRMED', status } end
if status ~= 'held' then return { 'OK', status, h[1] == 'held' and 0 or 1 } end
end_hold(pfx, hold_id, 'released', now, retention_ms)
return { 'OK', 'released', 0 }
