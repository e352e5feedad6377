-- queue_ticket: who holds a ticket, and what became of its place (read only: the load-test
-- report and the tests read it; a shopper's status read is lua/queue_claim.lua).
-- KEYS[1] wr:{S}:who         hash ticket number -> customer
-- KEYS[2] wr:{S}:admitted    hash place -> 'admitted_at_ms:session_end_ms[:r]'
-- KEYS[3] wr:{S}:released    hash place -> 'admitted_at_ms:released_at_ms'
-- ARGV[1] ticket         ticket number
-- ARGV[2] place          the ticket's place in line
-- Returns {customer or '', admission or '', release or ''}: '' admission for a place that was
--   skipped, taken back, or not reached yet; a release: an admission taken back unused (the
--   place may have been let in again since: then it has both).
local ticket = ARGV[1]
local place = ARGV[2]

return { redis.call('HGET', KEYS[1], ticket) or '', redis.call('HGET', KEYS[2], place) or '',
  redis.call('HGET', KEYS[3], place) or '' }
