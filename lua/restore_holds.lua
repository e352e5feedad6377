-- restore_holds: write back holds of a sale Redis lost, as PostgreSQL remembers them (a step of
-- `flashsale recover`, reconciler/recover.py, after restore_stock and load_sale have put the
-- held holds' units in `resv:` and the customers' counters are written).
-- KEYS[1] fs:{S}:holds       zset hold_id -> expires_at_ms (held holds go back in)
-- ARGV[1] pfx            key prefix fs:{S}: (each hold's hash and idempotency key, same slot)
-- ARGV[2] offset_ms      test clock offset (0 in production)
-- ARGV[3..] per hold 14 values: hold_id, customer, status, lines, created_at_ms,
--   expires_at_ms, extended (0|1), idem_key ('' = none), fingerprint, confirmed_at_ms
--   (0 = not confirmed), ended_at_ms (0 = not ended), payment, keep_until_ms (when the hash
--   goes, as confirm.lua's and end_hold's PEXPIRE had it; 0 = never: a held hold),
--   idem_until_ms (when the idempotency key goes, as reserve.lua's PX had it)
-- Returns {'OK', holds_written, idem_keys_written}
--
-- The hash has the fields reserve.lua wrote and those confirm / end_hold added, plus
-- `restored` = 1. A hold whose hash exists is left alone, key included, so writing the same
-- holds twice writes them once. A hash or key whose time is up by the server's clock is not
-- written (a key with a hold whose hash is gone would not be replayed anyway). Holds are given
-- in creation order: of two holds with one customer's key, the later one keeps it.
local pfx = ARGV[1]
local offset_ms = tonumber(ARGV[2])

local now = now_ms(offset_ms)
local written, keys_written = 0, 0
for at = 3, #ARGV, 14 do
  local hold_id, customer, status = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  local idem_key = ARGV[at + 7]
  local keep_until, idem_until = tonumber(ARGV[at + 12]), tonumber(ARGV[at + 13])
  local hk = pfx .. 'hold:' .. hold_id
  if (keep_until == 0 or keep_until > now) and redis.call('EXISTS', hk) == 0 then
    redis.call('HSET', hk, 'user', customer, 'status', status, 'lines', ARGV[at + 3],
      'created_at_ms', ARGV[at + 4], 'expires_at_ms', ARGV[at + 5], 'extended', ARGV[at + 6],
      'idem', idem_key, 'fp', ARGV[at + 8], 'restored', 1)
    if ARGV[at + 9] ~= '0' then
      redis.call('HSET', hk, 'confirmed_at_ms', ARGV[at + 9], 'payment', ARGV[at + 11])
    end
    if ARGV[at + 10] ~= '0' then redis.call('HSET', hk, 'ended_at_ms', ARGV[at + 10]) end
    if status == 'held' then redis.call('ZADD', KEYS[1], ARGV[at + 5], hold_id) end
    if keep_until > 0 then redis.call('PEXPIRE', hk, keep_until - now) end
    written = written + 1
    if idem_key ~= '' and idem_until > now then
      redis.call('SET', pfx .. 'idem:' .. customer .. ':' .. idem_key, hold_id, 'PX',
        idem_until - now)
      keys_written = keys_written + 1
    end
  end
end
return { 'OK', written, keys_written }
