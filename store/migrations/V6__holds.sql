-- V6: every hold's last known state, written by the flush from the `reserved`, `extended`,
-- `confirmed`, `released`, `expired` and `compensated` events (store/holds.py), so that
-- `flashsale recover` can bring open holds and idempotency keys back after Redis lost them.
-- The flush only ever moves a row forward (held -> ended -> compensated, expiry only later),
-- so replayed or reordered events leave it as it was.
CREATE TABLE holds (
    sale_id     text        NOT NULL REFERENCES sales,
    hold_id     text        NOT NULL,
    customer_id text        NOT NULL,
    lines       text        NOT NULL,                -- sku:supplier:qty,... as Redis writes it
    status      text        NOT NULL CHECK (status IN (
                    'held', 'confirmed', 'released', 'expired', 'compensated')),
    status_at   timestamptz NOT NULL,                -- when it took that status
    idem_key    text        NOT NULL DEFAULT '',     -- the customer's idempotency key, '' = none
    fingerprint text        NOT NULL DEFAULT '',     -- digest of the cart sent with that key
    created_at  timestamptz,                         -- NULL: its `reserved` event never came
    expires_at  timestamptz,                         -- NULL: likewise, and never extended
    extended    boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (sale_id, hold_id)
);
-- What recover reads: a sale's open holds, and the ended ones still within their retention.
CREATE INDEX holds_sale_status ON holds (sale_id, status, status_at);
