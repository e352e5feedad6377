-- queue_claim: the holder of a ticket whose place was passed asks for its turn (a status read).
-- An admission not picked up yet is picked up now (it will not be taken back); a place that was
-- skipped as a ghost, or whose admission was taken back unused, comes back: the admission loop
-- lets it in first at its next ticks (lua/queue_admit.lua).
-- KEYS[1] wr:{S}:room        room hash (serving)
-- KEYS[2] wr:{S}:who         hash ticket number -> customer
-- KEYS[3] wr:{S}:admitted    hash place -> 'admitted_at_ms:session_end_ms[:r]'
-- KEYS[4] wr:{S}:unclaimed   zset place -> ms by which its admission must be picked up
-- KEYS[5] wr:{S}:back        zset place -> ms it came back
-- ARGV[1] ticket         ticket number
-- ARGV[2] place          the ticket's place in line
-- ARGV[3] offset_ms      test clock offset (0 in production)
-- ARGV[4] may_return     '1': a passed place without an admission comes back; '0': it does not
--                        (the sale is over)
-- Returns {customer, 'ADMITTED', admission} | {customer, 'BACK', ahead}: back in line, `ahead`
--   places came back before it | {customer, 'PASSED'}: no admission, not back (may_return '0')
--   | {customer, 'WAITING'}: the place was not passed yet | {''}: no such ticket
local ticket = ARGV[1]
local place = ARGV[2]
local offset_ms = tonumber(ARGV[3])
local may_return = ARGV[4]

local customer = redis.call('HGET', KEYS[2], ticket)
if not customer then return { '' } end
if tonumber(place) > tonumber(redis.call('HGET', KEYS[1], 'serving') or 0) then
  return { customer, 'WAITING' }
end
local admission = redis.call('HGET', KEYS[3], place)
if admission then
  redis.call('ZREM', KEYS[4], place)
  return { customer, 'ADMITTED', admission }
end
if may_return ~= '1' then return { customer, 'PASSED' } end
redis.call('ZADD', KEYS[5], 'NX', now_ms(offset_ms), place)
expire_like(KEYS[1], { KEYS[5] })
return { customer, 'BACK', redis.call('ZRANK', KEYS[5], place) }
