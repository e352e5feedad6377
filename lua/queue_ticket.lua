-- queue_ticket: who holds a ticket, and the admission of its place if there was one (read only).
-- KEYS[1] wr:{S}:who         hash ticket number -> customer
-- KEYS[2] wr:{S}:admitted    hash place -> 'admitted_at_ms:session_end_ms'
-- ARGV[1] ticket         ticket number
-- ARGV[2] place          the ticket's place in line
-- Returns {customer or '', admission or ''}: '' admission for a place that was skipped or not
--   reached yet.
local ticket = ARGV[1]
local place = ARGV[2]

return { redis.call('HGET', KEYS[1], ticket) or '', redis.call('HGET', KEYS[2], place) or '' }
