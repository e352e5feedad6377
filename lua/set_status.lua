-- set_status: move a sale between scheduled, open, paused and closed; closed is final.
-- KEYS[1] fs:{S}:sale        sale hash
-- KEYS[2..] wr:{S}:*         the waiting room's long-lived keys: closing the sale gives each
--                            one retention_ms to live (once: closing again changes nothing)
-- ARGV[1] status         'scheduled' | 'open' | 'paused' | 'closed'
-- ARGV[2] offset_ms      test clock offset (0 in production)
-- ARGV[3] retention_ms   how long the room's keys outlive the closing
-- Returns {'OK', previous_status} | {'UNKNOWN_SALE'} | {'BAD_TRANSITION', current_status}
local status = ARGV[1]
local offset_ms = tonumber(ARGV[2])
local retention_ms = tonumber(ARGV[3])

local current = redis.call('HGET', KEYS[1], 'status')
if not current then return { 'UNKNOWN_SALE' } end
if current == 'closed' and status ~= 'closed' then return { 'BAD_TRANSITION', current } end
redis.call('HSET', KEYS[1], 'status', status, 'status_at_ms', now_ms(offset_ms))
if status == 'closed' and current ~= 'closed' then
  for i = 2, #KEYS do redis.call('PEXPIRE', KEYS[i], retention_ms) end
end
return { 'OK', current }
