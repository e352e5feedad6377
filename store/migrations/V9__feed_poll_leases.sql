-- V9: the poller's schedule per supplier, shared by every reconciler (store/feed_polls.py).
-- A reconciler claims a due poll by moving `lease_until` forward in one statement, so one
-- fetch is in flight per supplier at a time and each interval has one fetch, however many
-- reconcilers race for it; a claimant that dies loses the lease when `lease_until` passes.
-- The ETag and Last-Modified of the last good poll are the feed core's (supplier_feeds, V7).
CREATE TABLE feed_poll_leases (
    supplier_id text        PRIMARY KEY,
    due_at      timestamptz NOT NULL,             -- the next poll may start from then
    lease_until timestamptz,                      -- a poll in flight until then; NULL: none
    failures    integer     NOT NULL DEFAULT 0    -- polls failed in a row (the backoff's step)
);
