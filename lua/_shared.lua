-- Helpers prepended to every script by engine/scripts.py (KEYS and ARGV: none of its own).
-- Stock hash fields: per supplier avail:<sup> resv:<sup> sold:<sup> loaded:<sup> adj:<sup>,
-- totals available reserved sold loaded adjusted, and `suppliers` (ids in priority order, comma-separated).
-- A hold's `lines` is "sku:supplier:qty,sku:supplier:qty,..." (ids never contain ',' or ':').

local TOTAL = { avail = 'available', resv = 'reserved', sold = 'sold' }
local ALLOC_PATTERN = '([^,:]+):([^,:]+):(%d+)'

-- Server time in ms; offset_ms is 0 unless the test clock is enabled in the settings.
local function now_ms(offset_ms)
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + offset_ms
end

-- Moves every allocation of a hold from one counter family to another (resv -> avail, ...).
local function move_units(pfx, lines, from, to)
  for sku, sup, qty in string.gmatch(lines, ALLOC_PATTERN) do
    local k = pfx .. 'stock:' .. sku
    local q = tonumber(qty)
    redis.call('HINCRBY', k, from .. ':' .. sup, -q)
    redis.call('HINCRBY', k, TOTAL[from], -q)
    redis.call('HINCRBY', k, to .. ':' .. sup, q)
    redis.call('HINCRBY', k, TOTAL[to], q)
  end
end

-- Gives a customer's per-sku limit room back; a field reaching 0 is removed.
local function uncount_customer(pfx, customer, lines)
  local ukey = pfx .. 'user:' .. customer
  for sku, _, qty in string.gmatch(lines, ALLOC_PATTERN) do
    if redis.call('HINCRBY', ukey, sku, -tonumber(qty)) <= 0 then
      redis.call('HDEL', ukey, sku)
    end
  end
end

-- The X-Request-Id of the call ('' = none: the sweeper, the engine alone). A script whose events
-- belong to a request sets it from its ARGV first thing; `emit` writes it on every event as `rid`.
local request_id = ''

local function emit(pfx, kind, hold_id, customer, lines, now, extra)
  local fields = { 'type', kind, 'hold', hold_id, 'user', customer, 'lines', lines, 'at_ms', now }
  if extra then
    for _, v in ipairs(extra) do fields[#fields + 1] = v end
  end
  if request_id ~= '' then
    fields[#fields + 1] = 'rid'
    fields[#fields + 1] = request_id
  end
  redis.call('XADD', pfx .. 'events', '*', unpack(fields))
end

-- Ends a held hold: its units go back to available, the customer's limit room is returned.
local function end_hold(pfx, hold_id, status, now, retention_ms)
  local hk = pfx .. 'hold:' .. hold_id
  local h = redis.call('HMGET', hk, 'user', 'lines')
  move_units(pfx, h[2], 'resv', 'avail')
  uncount_customer(pfx, h[1], h[2])
  redis.call('HSET', hk, 'status', status, 'ended_at_ms', now)
  redis.call('PEXPIRE', hk, retention_ms)
  redis.call('ZREM', pfx .. 'holds', hold_id)
  emit(pfx, status, hold_id, h[1], h[2], now)
end

-- Expires up to `limit` holds whose expiry has passed, oldest first; returns how many.
local function reclaim_expired(pfx, now, limit, retention_ms)
  if limit <= 0 then return 0 end
  local ids = redis.call('ZRANGEBYSCORE', pfx .. 'holds', '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(ids) do
    end_hold(pfx, id, 'expired', now, retention_ms)
  end
  return #ids
end

-- The waiting room's keys go when the sale is long over: `room_key` (the room hash) carries the
-- expiry (queue_join sets it from the sale's end, set_status from its closing); the others copy it.
local function expire_like(room_key, others)
  local at = redis.call('PEXPIRETIME', room_key)
  if at > 0 then
    for _, k in ipairs(others) do redis.call('PEXPIREAT', k, at) end
  end
end

-- A held hold past its expiry is expired on the spot; returns the hold's status after that.
local function settle(pfx, hold_id, status, expires_at_ms, now, retention_ms)
  if status == 'held' and tonumber(expires_at_ms) <= now then
    end_hold(pfx, hold_id, 'expired', now, retention_ms)
    return 'expired'
  end
  return status
end
