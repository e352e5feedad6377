-- load_sale: create or replace a sale's config and stock; idempotent by config version.
-- A replace keeps what is reserved, sold and adjusted: available = loaded + adjusted - reserved - sold,
-- and it is refused when that would go below 0 or drop a supplier or sku that has committed units.
-- KEYS[1] fs:{S}:sale        sale hash
-- KEYS[2] fs:{S}:skus        set of the sale's skus
-- KEYS[3..] fs:{S}:stock:{sku} one per sku of the new config, in ARGV order
-- ARGV[1] pfx            key prefix fs:{S}: (to reach stock of skus the new config drops)
-- ARGV[2] version        config version (integer, increasing)
-- ARGV[3] starts_at_ms   sale start, epoch ms
-- ARGV[4] ends_at_ms     sale end, epoch ms (0 = no end)
-- ARGV[5] hold_ttl_ms    hold lifetime
-- ARGV[6] extend_ms      the one extension's length
-- ARGV[7] per_user_limit units per customer per sku (0 = no limit)
-- ARGV[8] waiting_room   1 when checkout needs a waiting-room admission, else 0
-- ARGV[9] n_skus         count of skus that follow
-- ARGV[10..] per sku: sku, n_suppliers, then supplier, units for each supplier in priority order
-- Returns {'OK', version} | {'ALREADY_LOADED', version} | {'STALE_VERSION', version}
--   | {'STOCK_COMMITTED', sku, supplier}
local pfx = ARGV[1]
local version = tonumber(ARGV[2])
local starts_at_ms = ARGV[3]
local ends_at_ms = ARGV[4]
local hold_ttl_ms = ARGV[5]
local extend_ms = ARGV[6]
local per_user_limit = ARGV[7]
local waiting_room = ARGV[8]
local n_skus = tonumber(ARGV[9])

local current = tonumber(redis.call('HGET', KEYS[1], 'version') or 0)
if current == version then return { 'ALREADY_LOADED', version } end
if current > version then return { 'STALE_VERSION', current } end

-- Read and check everything first; write only when the whole config fits.
local plans, kept = {}, {}
local at = 10
for i = 1, n_skus do
  local sku, n_sup = ARGV[at], tonumber(ARGV[at + 1])
  at = at + 2
  kept[sku] = true
  local key, order, new_sups = KEYS[2 + i], {}, {}
  local writes = {}
  local totals = { loaded = 0, available = 0, reserved = 0, sold = 0, adjusted = 0 }
  for _ = 1, n_sup do
    local sup, units = ARGV[at], tonumber(ARGV[at + 1])
    at = at + 2
    order[#order + 1] = sup
    new_sups[sup] = true
    local c = redis.call('HMGET', key, 'resv:' .. sup, 'sold:' .. sup, 'adj:' .. sup)
    local resv, sold, adj = tonumber(c[1] or 0), tonumber(c[2] or 0), tonumber(c[3] or 0)
    local avail = units + adj - resv - sold
    if avail < 0 then return { 'STOCK_COMMITTED', sku, sup } end
    for _, f in ipairs({ 'loaded:' .. sup, units, 'avail:' .. sup, avail, 'resv:' .. sup, resv,
      'sold:' .. sup, sold, 'adj:' .. sup, adj }) do
      writes[#writes + 1] = f
    end
    totals.loaded = totals.loaded + units
    totals.available = totals.available + avail
    totals.reserved = totals.reserved + resv
    totals.sold = totals.sold + sold
    totals.adjusted = totals.adjusted + adj
  end
  local old = redis.call('HGET', key, 'suppliers')
  if old then
    for sup in string.gmatch(old, '[^,]+') do
      local c = redis.call('HMGET', key, 'resv:' .. sup, 'sold:' .. sup)
      if not new_sups[sup] and tonumber(c[1] or 0) + tonumber(c[2] or 0) > 0 then
        return { 'STOCK_COMMITTED', sku, sup }
      end
    end
  end
  for k, v in pairs(totals) do
    writes[#writes + 1] = k
    writes[#writes + 1] = v
  end
  writes[#writes + 1] = 'suppliers'
  writes[#writes + 1] = table.concat(order, ',')
  plans[i] = { key, writes, sku }
end
local dropped = {}
for _, sku in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if not kept[sku] then
    local key = pfx .. 'stock:' .. sku
    local t = redis.call('HMGET', key, 'reserved', 'sold')
    if tonumber(t[1] or 0) + tonumber(t[2] or 0) > 0 then return { 'STOCK_COMMITTED', sku, '' } end
    dropped[#dropped + 1] = sku
  end
end

for _, sku in ipairs(dropped) do
  redis.call('DEL', pfx .. 'stock:' .. sku)
  redis.call('SREM', KEYS[2], sku)
end
for _, plan in ipairs(plans) do
  redis.call('DEL', plan[1])
  redis.call('HSET', plan[1], unpack(plan[2]))
  redis.call('SADD', KEYS[2], plan[3])
end
redis.call('HSETNX', KEYS[1], 'status', 'scheduled')
redis.call('HSET', KEYS[1], 'version', version, 'starts_at_ms', starts_at_ms, 'ends_at_ms', ends_at_ms,
  'hold_ttl_ms', hold_ttl_ms, 'extend_ms', extend_ms, 'per_user_limit', per_user_limit,
  'waiting_room', waiting_room)
return { 'OK', version }
