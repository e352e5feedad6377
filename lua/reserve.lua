-- reserve: place one hold on a cart of 1..N lines, all lines or none.
-- KEYS[1] fs:{S}:sale          sale hash (status, starts_at_ms, ends_at_ms, hold_ttl_ms,
--                               per_user_limit, waiting_room)
-- KEYS[2] fs:{S}:holds         zset hold_id -> expires_at_ms
-- KEYS[3] fs:{S}:user:{cust}   hash sku -> units held or bought by this customer
-- KEYS[4] fs:{S}:idem:{cust}:{key} string hold_id (unused when ARGV[4] is '')
-- KEYS[5] fs:{S}:hold:{id}     the new hold's hash
-- KEYS[6] wr:{S}:tries:{place} checkout attempts made with this admission token (unused when
--                               ARGV[11] is '')
-- KEYS[7] wr:{S}:active        zset place -> session end ms of the waiting room's open sessions
-- KEYS[8..7+n] fs:{S}:stock:{sku} one per line, in line order
-- ARGV[1] pfx            key prefix fs:{S}: (to reach expired holds' keys, same slot)
-- ARGV[2] hold_id        id for the new hold
-- ARGV[3] customer       customer id
-- ARGV[4] idem_key       idempotency key or ''
-- ARGV[5] fingerprint    digest of (customer, lines); same key + other fingerprint is a conflict
-- ARGV[6] offset_ms      test clock offset (0 in production)
-- ARGV[7] reclaim_limit  expired holds to release first (count)
-- ARGV[8] retention_ms   how long an ended hold stays readable
-- ARGV[9] idem_ttl_ms    lifetime of the idempotency key
-- ARGV[10] admitted      1 when the caller verified a waiting-room admission for this sale
-- ARGV[11] token_place   place of the verified admission token, '' when none: its attempts
--                        are counted, and its place leaves the open sessions once it holds
-- ARGV[12] max_attempts  checkout attempts one token may make (count; with a token only)
-- ARGV[13] token_expires_at_ms the token's expiry (checked against TIME); its attempt counter
--                        lives as long
-- ARGV[14] request_id    the caller's X-Request-Id, written on the events as `rid` ('' = none)
-- ARGV[15..] sku, qty    pairs, one per line
-- Returns {'OK', hold_id, expires_at_ms, lines, replay(0|1)} | {'SOLD_OUT', sku, available}
--   | {'LIMIT_EXCEEDED', sku, units_already} | {'SALE_NOT_OPEN', status} | {'UNKNOWN_SALE'}
--   | {'UNKNOWN_SKU', sku} | {'IDEMPOTENCY_CONFLICT', hold_id} | {'NOT_ADMITTED'}
--   | {'TOKEN_EXHAUSTED', attempts} | {'TOKEN_EXPIRED'} (by the server's clock) | {'INVALID', reason}
-- A new hold (not a replay) appends `reserved` to fs:{S}:events (pfx .. 'events', same slot):
-- hold, user, lines, at_ms, expires_at_ms, and idem, fp when it has an idempotency key.
-- An idempotent replay does not count as an attempt; every other attempt with a token does,
-- whatever its answer, so a token cannot be used to hammer the stock.
local pfx = ARGV[1]
local hold_id = ARGV[2]
local customer = ARGV[3]
local idem_key = ARGV[4]
local fingerprint = ARGV[5]
local offset_ms = tonumber(ARGV[6])
local reclaim_limit = tonumber(ARGV[7])
local retention_ms = tonumber(ARGV[8])
local idem_ttl_ms = tonumber(ARGV[9])
local admitted = ARGV[10]
local token_place = ARGV[11]
local max_attempts = tonumber(ARGV[12])
local token_expires_at_ms = tonumber(ARGV[13])
local n_lines = (#ARGV - 14) / 2

local now = now_ms(offset_ms)
-- Other customers' holds expired on the way are not this request's doing: their `expired`
-- events carry no request id (as the sweeper's do).
reclaim_expired(pfx, now, reclaim_limit, retention_ms)
request_id = ARGV[14]  -- lua/_shared.lua's, read by emit

local sale = redis.call('HMGET', KEYS[1], 'status', 'starts_at_ms', 'ends_at_ms', 'hold_ttl_ms',
  'per_user_limit', 'waiting_room')
if not sale[1] then return { 'UNKNOWN_SALE' } end
-- The admission before anything else, replays included: a replay answers only a caller who
-- could have placed the hold. The token's expiry is judged by Redis's clock, not the gateway's.
if sale[6] == '1' and admitted ~= '1' then return { 'NOT_ADMITTED' } end
if token_place ~= '' and now >= token_expires_at_ms then return { 'TOKEN_EXPIRED' } end

if idem_key ~= '' then
  local prior = redis.call('GET', KEYS[4])
  if prior then
    local h = redis.call('HMGET', pfx .. 'hold:' .. prior, 'fp', 'expires_at_ms', 'lines')
    if h[1] then
      if h[1] ~= fingerprint then return { 'IDEMPOTENCY_CONFLICT', prior } end
      return { 'OK', prior, tonumber(h[2]), h[3], 1 }
    end
  end
end

local status, ends_at_ms = sale[1], tonumber(sale[3])
local started = status == 'open' or (status == 'scheduled' and now >= tonumber(sale[2]))
if not started or (ends_at_ms > 0 and now >= ends_at_ms) then
  return { 'SALE_NOT_OPEN', status }
end
local limit = tonumber(sale[5])
if token_place ~= '' then
  local tries = tonumber(redis.call('GET', KEYS[6]) or 0)
  if tries >= max_attempts then return { 'TOKEN_EXHAUSTED', tries } end
  redis.call('INCR', KEYS[6])
  redis.call('PEXPIREAT', KEYS[6], token_expires_at_ms + 1000)
end

-- Check every line before touching anything: all or nothing.
local skus, qtys, stocks, seen = {}, {}, {}, {}
for i = 1, n_lines do
  local sku, qty = ARGV[13 + 2 * i], tonumber(ARGV[14 + 2 * i])
  if seen[sku] or not qty or qty < 1 then return { 'INVALID', 'line ' .. i } end
  seen[sku] = true
  local s = redis.call('HMGET', KEYS[7 + i], 'available', 'reserved', 'suppliers')
  if not s[3] then return { 'UNKNOWN_SKU', sku } end
  skus[i], qtys[i], stocks[i] = sku, qty, s
end
if limit > 0 then
  local had = redis.call('HMGET', KEYS[3], unpack(skus))
  for i = 1, n_lines do
    local already = tonumber(had[i] or 0)
    if already + qtys[i] > limit then return { 'LIMIT_EXCEEDED', skus[i], already } end
  end
end
for i = 1, n_lines do
  local available = tonumber(stocks[i][1])
  if available < qtys[i] then return { 'SOLD_OUT', skus[i], available } end
end

-- Take from suppliers in priority order; a line may split across suppliers. Plan every write
-- first: a script that fails half-way would leave its earlier writes in place.
local allocs, plans = {}, {}
for i = 1, n_lines do
  local sku, qty, s = skus[i], qtys[i], stocks[i]
  local sups, fields = {}, {}
  for sup in string.gmatch(s[3], '[^,]+') do
    sups[#sups + 1] = sup
    fields[#fields + 1] = 'avail:' .. sup
    fields[#fields + 1] = 'resv:' .. sup
  end
  local cur = redis.call('HMGET', KEYS[7 + i], unpack(fields))
  local writes = { 'available', tonumber(s[1]) - qty, 'reserved', tonumber(s[2]) + qty }
  local left = qty
  for j, sup in ipairs(sups) do
    local take = math.min(tonumber(cur[2 * j - 1] or 0), left)
    if take > 0 then
      writes[#writes + 1] = 'avail:' .. sup
      writes[#writes + 1] = tonumber(cur[2 * j - 1]) - take
      writes[#writes + 1] = 'resv:' .. sup
      writes[#writes + 1] = tonumber(cur[2 * j] or 0) + take
      allocs[#allocs + 1] = sku .. ':' .. sup .. ':' .. take
      left = left - take
      if left == 0 then break end
    end
  end
  if left > 0 then return redis.error_reply('stock of ' .. sku .. ' disagrees with its suppliers') end
  plans[i] = writes
end
for i = 1, n_lines do
  redis.call('HSET', KEYS[7 + i], unpack(plans[i]))
  redis.call('HINCRBY', KEYS[3], skus[i], qtys[i])
end

local lines = table.concat(allocs, ',')
local expires_at_ms = now + tonumber(sale[4])
redis.call('HSET', KEYS[5], 'user', customer, 'status', 'held', 'expires_at_ms', expires_at_ms,
  'created_at_ms', now, 'lines', lines, 'idem', idem_key, 'fp', fingerprint, 'extended', 0)
redis.call('ZADD', KEYS[2], expires_at_ms, hold_id)
-- The reconciler keeps every hold in PostgreSQL from its `reserved` event, so `flashsale
-- recover` can bring an open hold and its idempotency key back after Redis lost them.
local about = { 'expires_at_ms', expires_at_ms }
if idem_key ~= '' then
  redis.call('SET', KEYS[4], hold_id, 'PX', idem_ttl_ms)
  about = { 'expires_at_ms', expires_at_ms, 'idem', idem_key, 'fp', fingerprint }
end
emit(pfx, 'reserved', hold_id, customer, lines, now, about)
if token_place ~= '' then
  redis.call('ZREM', KEYS[7], token_place)  -- the session has its hold: no longer open
end
return { 'OK', hold_id, expires_at_ms, lines, 0 }
