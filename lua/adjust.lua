-- adjust: a supplier's stock for a sku changes by delta; never below what is reserved + sold.
-- KEYS[1] fs:{S}:stock:{sku} stock hash of the sku
-- KEYS[2] fs:{S}:events      stream the reconciler reads
-- KEYS[3] fs:{S}:adjusted:{ref}  optional: the change applied once for `ref` (a caller's key,
--                            e.g. the saga's cancelled line); a second call answers the first
-- ARGV[1] pfx            key prefix fs:{S}:
-- ARGV[2] sku            the sku
-- ARGV[3] supplier       the supplier whose stock changed
-- ARGV[4] delta          signed change in units
-- ARGV[5] offset_ms      test clock offset (0 in production)
-- ARGV[6] reason         free text recorded on the event
-- ARGV[7] once_ttl_ms    with KEYS[3]: how long the marker is kept
-- Returns {'OK', applied, shortfall, available_of_supplier, replay(0|1)} | {'UNKNOWN_SKU'}
--   | {'UNKNOWN_SUPPLIER'}
--   applied: the change made (a cut stops at 0 available); shortfall: the part of the cut that
--   falls on units already reserved or sold (at most reserved + sold), for the saga to reroute.
local pfx = ARGV[1]
local sku = ARGV[2]
local supplier = ARGV[3]
local delta = tonumber(ARGV[4])
local offset_ms = tonumber(ARGV[5])
local reason = ARGV[6]
local once_ttl_ms = tonumber(ARGV[7] or '0')

local s = redis.call('HMGET', KEYS[1], 'suppliers', 'avail:' .. supplier, 'resv:' .. supplier,
  'sold:' .. supplier)
if not s[1] then return { 'UNKNOWN_SKU' } end
if not s[2] then return { 'UNKNOWN_SUPPLIER' } end
local avail = tonumber(s[2])
if KEYS[3] then
  local done = redis.call('GET', KEYS[3])
  if done then return { 'OK', tonumber(done), 0, avail, 1 } end
end
local applied = math.max(delta, -avail)
local shortfall = math.min(applied - delta, tonumber(s[3]) + tonumber(s[4]))
if applied ~= 0 then
  redis.call('HINCRBY', KEYS[1], 'avail:' .. supplier, applied)
  redis.call('HINCRBY', KEYS[1], 'available', applied)
  redis.call('HINCRBY', KEYS[1], 'adj:' .. supplier, applied)
  redis.call('HINCRBY', KEYS[1], 'adjusted', applied)
end
local now = now_ms(offset_ms)
redis.call('XADD', KEYS[2], '*', 'type', 'adjusted', 'sku', sku, 'supplier', supplier,
  'delta', delta, 'applied', applied, 'shortfall', shortfall, 'reason', reason, 'at_ms', now)
if KEYS[3] then redis.call('SET', KEYS[3], applied, 'PX', once_ttl_ms) end
return { 'OK', applied, shortfall, avail + applied, 0 }
