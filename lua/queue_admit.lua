-- queue_admit: one tick of a room's admission loop; only the lease holder moves the room.
-- KEYS[1] fs:{S}:sale        sale hash (status, starts_at_ms, ends_at_ms, waiting_room)
-- KEYS[2] fs:{S}:skus        set of the sale's skus (stock hashes fs:{S}:stock:{sku})
-- KEYS[3] wr:{S}:room        room hash
-- KEYS[4] wr:{S}:seen        hash place -> 'silent_by_ms:next_poll_ms': by when it must be heard
--                            from again (else a ghost), and when its next poll is due
-- KEYS[5] wr:{S}:active      zset place -> session end ms (admitted, no hold placed yet)
-- KEYS[6] wr:{S}:admitted    hash place -> 'admitted_at_ms:session_end_ms' (':r' appended for
--                            a place let in again after it came back)
-- KEYS[7] wr:{S}:lease       string: owner id of the loop running this room
-- KEYS[8] wr:{S}:tickets     hash customer -> ticket number (only its expiry is set here)
-- KEYS[9] wr:{S}:who         hash ticket number -> customer (likewise)
-- KEYS[10] wr:{S}:unclaimed  zset place -> ms by which its admission must be picked up
-- KEYS[11] wr:{S}:back       zset place -> ms it came back (skipped or taken back, then polled)
-- KEYS[12] wr:{S}:released   hash place -> 'admitted_at_ms:released_at_ms' (taken back unused)
-- ARGV[1] pfx              key prefix fs:{S}: (to reach each sku's stock hash, same slot)
-- ARGV[2] owner            id of the calling loop
-- ARGV[3] lease_ms         lease length; every tick of the holder renews it
-- ARGV[4] offset_ms        test clock offset (0 in production)
-- ARGV[5] admit_rate_per_s admissions per second
-- ARGV[6] max_active       most open sessions at once
-- ARGV[7] session_ms       length of a session (the admission token's lifetime)
-- ARGV[8] ghost_after_ms   a place not heard from since the opening is skipped this long after it
--                          (a place heard from carries its own deadline in `seen`)
-- ARGV[9] max_scan         most places passed in one tick (bounds the script's run time)
-- ARGV[10] seed            64 hex chars, committed only when the room has no seed yet
-- ARGV[11] seed_sha256     hex SHA-256 of that seed
-- ARGV[12] retention_ms    the room's keys expire this long after the sale's end (when it has
--                          one); every tick sets it again, so a moved end is followed
-- ARGV[13] claim_ms        least time an admission waits to be picked up (a status read of its
--                          ticket, lua/queue_claim.lua) before it is taken back; 0: never
-- ARGV[14] unheard_poll_ms  the line's poll interval: a place never heard from (pre-queue, before
--                          its first poll in line) is awaited this long, then claim_ms
-- Returns {'OK', serving, skipped, seq, released, readmitted, place, place, ...}: the places
--   admitted by this tick, the `readmitted` places that came back first, then the line's in
--   order (skipped, released: counts of this tick; seq: tickets issued so far)
--   | {'NOT_LEADER', holder} | {'UNKNOWN_SALE'} | {'NO_WAITING_ROOM'}
--   | {'SALE_NOT_OPEN', status}: not started, paused, closed or ended (nothing admitted)
--
-- Opens the room once the sale has started: the pre-queue's size is fixed and its seed becomes
-- public. Takes back the admissions nobody picked up in time: their sessions close and their
-- credit returns. Then admits the places that came back, in the order they came, and passes
-- the next places in order: a place whose deadline has not passed is admitted (a session until
-- now + session_ms), a silent one is skipped. Admits at most admit_rate_per_s (credit carries
-- between ticks, at most 1 s of it), never more than max_active open sessions, and never more
-- open sessions than units left to sell.
local pfx = ARGV[1]
local owner = ARGV[2]
local lease_ms = tonumber(ARGV[3])
local offset_ms = tonumber(ARGV[4])
local rate = tonumber(ARGV[5])
local max_active = tonumber(ARGV[6])
local session_ms = tonumber(ARGV[7])
local ghost_after_ms = tonumber(ARGV[8])
local max_scan = tonumber(ARGV[9])
local seed = ARGV[10]
local seed_sha256 = ARGV[11]
local retention_ms = tonumber(ARGV[12])
local claim_ms = tonumber(ARGV[13])
local unheard_poll_ms = tonumber(ARGV[14] or 0)

local sale = redis.call('HMGET', KEYS[1], 'status', 'starts_at_ms', 'ends_at_ms', 'waiting_room')
if not sale[1] then return { 'UNKNOWN_SALE' } end
if sale[4] ~= '1' then return { 'NO_WAITING_ROOM' } end
local holder = redis.call('GET', KEYS[7])
if holder and holder ~= owner then return { 'NOT_LEADER', holder } end
redis.call('SET', KEYS[7], owner, 'PX', lease_ms)

local now = now_ms(offset_ms)
if redis.call('HEXISTS', KEYS[3], 'seed_sha256') == 0 then
  redis.call('HSET', KEYS[3], 'seed', seed, 'seed_sha256', seed_sha256)
end
local room_keys = { KEYS[4], KEYS[5], KEYS[6], KEYS[10], KEYS[11], KEYS[12] }
local status, ends_at_ms = sale[1], tonumber(sale[3])
if ends_at_ms > 0 then
  redis.call('PEXPIREAT', KEYS[3], ends_at_ms + retention_ms)
  expire_like(KEYS[3], { KEYS[8], KEYS[9], unpack(room_keys) })
end
local started = status == 'open' or (status == 'scheduled' and now >= tonumber(sale[2]))
if not started or (ends_at_ms > 0 and now >= ends_at_ms) then
  return { 'SALE_NOT_OPEN', status }
end

local room = redis.call('HMGET', KEYS[3], 'seq', 'serving', 'opened_at_ms', 'allowance', 'tick_ms',
  'rate_per_s')
local seq, serving = tonumber(room[1] or 0), tonumber(room[2] or 0)
local opened_at = tonumber(room[3])
if not opened_at then
  -- From here on the pre-queue is closed: its size and the seed fix every pre-queue place.
  opened_at = now
  redis.call('HSET', KEYS[3], 'opened_at_ms', now, 'prequeue', seq, 'tick_ms', now)
end
if tonumber(room[6]) ~= rate then redis.call('HSET', KEYS[3], 'rate_per_s', rate) end

redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
-- An admission nobody picked up by its deadline is taken back: its session closes and its
-- credit returns, so the slot goes to someone still here. No token was ever given for it (a
-- token needs the claim), so nobody can check out with it.
local released = 0
if claim_ms > 0 then
  for _, place in ipairs(redis.call('ZRANGEBYSCORE', KEYS[10], '-inf', now, 'LIMIT', 0, max_scan)) do
    redis.call('ZREM', KEYS[10], place)
    if redis.call('ZREM', KEYS[5], place) == 1 then
      local admission = redis.call('HGET', KEYS[6], place)
      redis.call('HDEL', KEYS[6], place)
      redis.call('HSET', KEYS[12], place, string.match(admission, '^%d+') .. ':' .. now)
      released = released + 1
    end
  end
end
-- Credit grows linearly with time since the last tick that wrote it, so ticks that admit nobody
-- need not write anything (an idle room's hash stays as it is). At most 1 s of it is kept.
local last = tonumber(room[5] or now)
local credit = tonumber(room[4] or 0) + math.max(now - last, 0) * rate / 1000 + released
credit = math.min(credit, math.max(rate, 1))

local active = redis.call('ZCARD', KEYS[5])
local units = 0
for _, sku in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  units = units + tonumber(redis.call('HGET', pfx .. 'stock:' .. sku, 'available') or 0)
end
-- Each open session may still take a unit: admit no one the stock left cannot serve.
local wanted = math.min(math.floor(credit), max_active - active, units - active)

local out, admitted = { 'OK', 0, 0, seq, released, 0 }, 0
-- An admission is picked up at the waiter's next poll: it waits for it, and claim_ms more.
local function admit(place, next_poll, mark)
  local ends = now + session_ms
  redis.call('ZADD', KEYS[5], ends, place)
  redis.call('HSET', KEYS[6], place, string.format('%d:%d%s', now, ends, mark))
  if claim_ms > 0 then
    redis.call('ZADD', KEYS[10], math.max(next_poll, now) + claim_ms, place)
  end
  admitted = admitted + 1
  out[#out + 1] = place
end

-- Places that came back go first, in the order they came: they have waited their turn already.
local readmitted = 0
if wanted > 0 then
  for _, place in ipairs(redis.call('ZRANGE', KEYS[11], 0, wanted - 1)) do
    redis.call('ZREM', KEYS[11], place)
    admit(place, now, ':r')  -- it has just polled: it is polling at the front's pace
    readmitted = readmitted + 1
  end
end
local skipped, scanned = 0, 0
while admitted < wanted and serving < seq and scanned < max_scan do
  serving = serving + 1
  scanned = scanned + 1
  -- Never heard from (a pre-queue place before its first poll in line): it polls at the
  -- line's interval. A bare number is the heartbeat time an older version wrote.
  local entry = redis.call('HGET', KEYS[4], serving)
  local silent_by, next_poll = 0, now + unheard_poll_ms
  if entry then
    local by, poll = string.match(entry, '^(%d+):(%d+)$')
    if by then
      silent_by, next_poll = tonumber(by), tonumber(poll)
    else
      silent_by = (tonumber(entry) or 0) + ghost_after_ms
    end
  end
  if math.max(silent_by, opened_at + ghost_after_ms) < now then
    skipped = skipped + 1
  else
    admit(serving, next_poll, '')
  end
  redis.call('HDEL', KEYS[4], serving)  -- a passed place needs no heartbeat any more
end
if scanned > 0 or admitted > 0 or released > 0 then
  redis.call('HSET', KEYS[3], 'serving', serving, 'tick_ms', now,
    'allowance', string.format('%.6f', credit - admitted))
  if admitted > 0 then redis.call('HINCRBY', KEYS[3], 'admitted', admitted) end
  if skipped > 0 then redis.call('HINCRBY', KEYS[3], 'skipped', skipped) end
  if released > 0 then redis.call('HINCRBY', KEYS[3], 'released', released) end
  if readmitted > 0 then redis.call('HINCRBY', KEYS[3], 'returned', readmitted) end
  expire_like(KEYS[3], room_keys)  -- keys this tick may have made anew
end
out[2], out[3], out[6] = serving, skipped, readmitted
return out
