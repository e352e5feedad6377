-- queue_beat: record that waiting places were heard from (a gateway worker's batched heartbeats).
-- KEYS[1] wr:{S}:room        room hash (places at or below `serving` need no heartbeat)
-- KEYS[2] wr:{S}:seen        hash place -> 'silent_by_ms:next_poll_ms' (see queue_admit.lua)
-- ARGV[1] offset_ms      test clock offset (0 in production)
-- ARGV[2..] place, allowance_ms, poll_ms   triples: a place heard from since the worker's last
--                                 batch; how long it may now stay silent (the polls it was told
--                                 to make that it may miss); the poll interval it was told
-- Returns the count of places recorded.
local offset_ms = tonumber(ARGV[1])

local now = now_ms(offset_ms)
local serving = tonumber(redis.call('HGET', KEYS[1], 'serving') or 0)
local fields = {}
for i = 2, #ARGV - 2, 3 do
  if tonumber(ARGV[i]) > serving then
    fields[#fields + 1] = ARGV[i]
    fields[#fields + 1] = (now + tonumber(ARGV[i + 1])) .. ':' .. (now + tonumber(ARGV[i + 2]))
  end
end
if #fields > 0 then
  redis.call('HSET', KEYS[2], unpack(fields))
  expire_like(KEYS[1], { KEYS[2] })
end
return #fields / 2
