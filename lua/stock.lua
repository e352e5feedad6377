-- stock: one consistent read of a sale: its config and status, every sku's stock hash, open holds.
-- KEYS[1] fs:{S}:sale        sale hash
-- KEYS[2] fs:{S}:skus        set of the sale's skus
-- KEYS[3] fs:{S}:holds       zset hold_id -> expires_at_ms
-- ARGV[1] pfx            key prefix fs:{S}:
-- ARGV[2] offset_ms      test clock offset (0 in production)
-- Returns {} for an unknown sale, else {sale_fields, now_ms, open_holds, sku, stock_fields, sku, ...}
--   where *_fields are flat HGETALL replies.
local pfx = ARGV[1]
local offset_ms = tonumber(ARGV[2])

local sale = redis.call('HGETALL', KEYS[1])
if #sale == 0 then return {} end
local out = { sale, now_ms(offset_ms), redis.call('ZCARD', KEYS[3]) }
local skus = redis.call('SMEMBERS', KEYS[2])
table.sort(skus)
for _, sku in ipairs(skus) do
  out[#out + 1] = sku
  out[#out + 1] = redis.call('HGETALL', pfx .. 'stock:' .. sku)
end
return out
