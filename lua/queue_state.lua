-- queue_state: one consistent read of a room and its sale (the gateways cache it per worker).
-- KEYS[1] fs:{S}:sale        sale hash
-- KEYS[2] fs:{S}:skus        set of the sale's skus (stock hashes fs:{S}:stock:{sku})
-- KEYS[3] wr:{S}:room        room hash
-- KEYS[4] wr:{S}:active      zset place -> session end ms
-- KEYS[5] wr:{S}:back        zset place -> ms it came back (passed places to be let in first)
-- ARGV[1] pfx            key prefix fs:{S}: (to reach each sku's stock hash, same slot)
-- ARGV[2] offset_ms      test clock offset (0 in production)
-- Returns {} for an unknown sale, else {now_ms, status, starts_at_ms, ends_at_ms,
--   waiting_room(0|1), units_left, active, seq, serving, prequeue, opened_at_ms, seed_sha256,
--   seed ('' until the room has opened), admitted, skipped, rate_per_s (the loop's setting),
--   released, returned (counters), coming_back (places back in line now)}
local pfx = ARGV[1]
local offset_ms = tonumber(ARGV[2])

local sale = redis.call('HMGET', KEYS[1], 'status', 'starts_at_ms', 'ends_at_ms', 'waiting_room')
if not sale[1] then return {} end
local now = now_ms(offset_ms)
local units = 0
for _, sku in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  units = units + tonumber(redis.call('HGET', pfx .. 'stock:' .. sku, 'available') or 0)
end
local active = redis.call('ZCOUNT', KEYS[4], '(' .. now, '+inf')
local r = redis.call('HMGET', KEYS[3], 'seq', 'serving', 'prequeue', 'opened_at_ms', 'seed_sha256',
  'seed', 'admitted', 'skipped', 'rate_per_s', 'released', 'returned')
local opened = r[4] and true or false
return { now, sale[1], sale[2], sale[3], sale[4] == '1' and 1 or 0, units, active,
  r[1] or 0, r[2] or 0, r[3] or 0, r[4] or 0, r[5] or '', opened and r[6] or '', r[7] or 0,
  r[8] or 0, r[9] or 0, r[10] or 0, r[11] or 0, redis.call('ZCARD', KEYS[5]) }
