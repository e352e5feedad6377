-- apply_feed: one supplier feed delivery sets the offers of one sale, each (sku, supplier) at
-- once from the counters as they are now (reserves move them; a plan made outside would race).
-- An offer (avail:<sup>) becomes on_hand - pending - reserved, where pending = sold - settled
-- (units sold from the supplier not yet allocated there), never below 0 and never above what
-- the sale was loaded with from it (loaded - reserved - sold): stock that comes back raises it
-- again up to there. The change moves adj:<sup> with it, so available + reserved + sold ==
-- loaded + adjusted still holds.
-- KEYS[1] fs:{S}:events      stream the reconciler reads
-- KEYS[2..n+1] fs:{S}:stock:{sku} one per row, in row order (a sku may repeat)
-- ARGV[1] offset_ms      test clock offset (0 in production)
-- ARGV[2] source         webhook | poll | file | replay, or sale (a sale (re)loaded takes the
--                        newest levels: delivery_id is then the sale id)
-- ARGV[3] delivery_id    the delivery (named on every event)
-- ARGV[4] as_of_ms       the delivery's newest as_of, epoch ms
-- ARGV[5..] per row: sku, supplier, on_hand (units), settled (units)
-- Returns one {code, before, after, shortfall} per row, code OK | UNKNOWN_SKU | UNKNOWN_SUPPLIER;
--   shortfall: units sold or held at the supplier beyond its on_hand, for the saga to reroute.
-- Every row whose offer changes appends `adjusted` to the stream (delta = applied = the change,
-- shortfall, reason naming the feed, delivery and as_of; also delivery and as_of_ms fields).
local offset_ms = tonumber(ARGV[1])
local source = ARGV[2]
local delivery_id = ARGV[3]
local as_of_ms = ARGV[4]
local n_rows = (#ARGV - 4) / 4

local now = now_ms(offset_ms)
local reason = 'feed ' .. source .. ' delivery ' .. delivery_id .. ' as_of_ms ' .. as_of_ms
local out = {}
for i = 1, n_rows do
  local at = 4 + 4 * (i - 1)
  local sku, sup = ARGV[at + 1], ARGV[at + 2]
  local on_hand, settled = tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4])
  local key = KEYS[1 + i]
  local s = redis.call('HMGET', key, 'suppliers', 'avail:' .. sup, 'resv:' .. sup, 'sold:' .. sup,
    'loaded:' .. sup)
  if not s[1] then
    out[i] = { 'UNKNOWN_SKU', 0, 0, 0 }
  elseif not s[2] then
    out[i] = { 'UNKNOWN_SUPPLIER', 0, 0, 0 }
  else
    local avail, resv, sold = tonumber(s[2]), tonumber(s[3]), tonumber(s[4])
    local pending = math.max(0, sold - settled)
    local ceiling = math.max(0, tonumber(s[5] or 0) - resv - sold)
    local target = math.max(0, math.min(on_hand - pending - resv, ceiling))
    local shortfall = math.max(0, pending + resv - on_hand)
    local delta = target - avail
    if delta ~= 0 then
      redis.call('HINCRBY', key, 'avail:' .. sup, delta)
      redis.call('HINCRBY', key, 'available', delta)
      redis.call('HINCRBY', key, 'adj:' .. sup, delta)
      redis.call('HINCRBY', key, 'adjusted', delta)
      redis.call('XADD', KEYS[1], '*', 'type', 'adjusted', 'sku', sku, 'supplier', sup,
        'delta', delta, 'applied', delta, 'shortfall', shortfall, 'reason', reason,
        'delivery', delivery_id, 'as_of_ms', as_of_ms, 'at_ms', now)
    end
    out[i] = { 'OK', avail, target, shortfall }
  end
end
return out
