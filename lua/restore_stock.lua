-- restore_stock: first step of rebuilding a sale Redis lost, from PostgreSQL (see recover.py).
-- KEYS[1] fs:{S}:sale        sale hash (must hold no config version)
-- KEYS[2..1+n] fs:{S}:stock:{sku} one per sku, in ARGV order
-- ARGV[1] offset_ms      test clock offset (0 in production)
-- ARGV[2] n_skus         count of skus that follow
-- ARGV[3..] per sku: n_suppliers, then supplier, sold (units), adjusted (units), reserved
--   (units of the open holds restore_holds writes back next) for each
-- Returns {'OK', n_skus} | {'ALREADY_LOADED', version}
--
-- Writes each supplier's sold, adjusted and reserved units into fresh stock hashes and parks the
-- sale paused. load_sale then adds the config and `loaded` and derives available = loaded +
-- adjusted - reserved - sold (refusing a supplier that would go below 0), keeping the status.
-- Refused while the sale has a config, so a live sale is never overwritten.
local offset_ms = tonumber(ARGV[1])
local n_skus = tonumber(ARGV[2])

local version = redis.call('HGET', KEYS[1], 'version')
if version then return { 'ALREADY_LOADED', tonumber(version) } end

local at = 3
for i = 1, n_skus do
  local key, n_sup = KEYS[1 + i], tonumber(ARGV[at])
  at = at + 1
  redis.call('DEL', key)
  for _ = 1, n_sup do
    local sup, sold, adj, resv = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
    at = at + 4
    redis.call('HSET', key, 'resv:' .. sup, resv, 'sold:' .. sup, sold, 'adj:' .. sup, adj)
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'status', 'paused', 'status_at_ms', now_ms(offset_ms))
return { 'OK', n_skus }
