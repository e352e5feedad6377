-- queue_join: give a customer their one ticket in a sale's waiting room; joining again returns it.
-- Tickets are numbered 1, 2, ... in join order. Before the room opens a ticket waits in the
-- pre-queue (its place is drawn at the opening); after, a ticket's place is its number.
-- KEYS[1] fs:{S}:sale        sale hash (status, ends_at_ms, waiting_room)
-- KEYS[2] wr:{S}:room        room hash (seq, opened_at_ms, seed, seed_sha256, ...)
-- KEYS[3] wr:{S}:tickets     hash customer -> ticket number
-- KEYS[4] wr:{S}:who         hash ticket number -> customer
-- KEYS[5] wr:{S}:seen        hash place -> 'silent_by_ms:next_poll_ms' (see queue_admit.lua)
-- ARGV[1] customer       customer id
-- ARGV[2] offset_ms      test clock offset (0 in production)
-- ARGV[3] seed           64 hex chars, committed only when the room has no seed yet
-- ARGV[4] seed_sha256    hex SHA-256 of that seed (public from now on; the seed after opening)
-- ARGV[5] retention_ms   the room's keys expire this long after the sale's end (when it has one)
-- ARGV[6] ghost_after_ms how long a ticket joined after the opening may stay silent at first
-- Returns {'OK', ticket, new(0|1)} | {'UNKNOWN_SALE'} | {'NO_WAITING_ROOM'}
--   | {'SALE_NOT_OPEN', status}: closed or past its end (an existing ticket is still returned)
local customer = ARGV[1]
local offset_ms = tonumber(ARGV[2])
local seed = ARGV[3]
local seed_sha256 = ARGV[4]
local retention_ms = tonumber(ARGV[5])
local ghost_after_ms = tonumber(ARGV[6])

local sale = redis.call('HMGET', KEYS[1], 'status', 'ends_at_ms', 'waiting_room')
if not sale[1] then return { 'UNKNOWN_SALE' } end
if sale[3] ~= '1' then return { 'NO_WAITING_ROOM' } end
local ticket = redis.call('HGET', KEYS[3], customer)
if ticket then return { 'OK', tonumber(ticket), 0 } end

local now = now_ms(offset_ms)
local ends_at_ms = tonumber(sale[2])
if sale[1] == 'closed' or (ends_at_ms > 0 and now >= ends_at_ms) then
  return { 'SALE_NOT_OPEN', sale[1] }
end
if redis.call('HEXISTS', KEYS[2], 'seed_sha256') == 0 then
  redis.call('HSET', KEYS[2], 'seed', seed, 'seed_sha256', seed_sha256)
end
local n = redis.call('HINCRBY', KEYS[2], 'seq', 1)
redis.call('HSET', KEYS[3], customer, n)
redis.call('HSET', KEYS[4], n, customer)
if redis.call('HEXISTS', KEYS[2], 'opened_at_ms') == 1 then
  redis.call('HSET', KEYS[5], n, (now + ghost_after_ms) .. ':' .. now)
end
if ends_at_ms > 0 then
  redis.call('PEXPIREAT', KEYS[2], ends_at_ms + retention_ms)
  expire_like(KEYS[2], { KEYS[3], KEYS[4], KEYS[5] })
end
return { 'OK', n, 1 }
