-- V10: changes asked of an order after the sale (store/saga/changes.py): cancellations by the
-- customer or an operator, and refunds (an operator's, or a return's). A change is recorded by
-- the route that asks for it (status 'pending') and carried out by the saga's order.change step,
-- which sets 'applied' (or 'refused', with the reason) in the transaction that writes its
-- outcome. The idempotency key is the caller's, per order: a replay finds the first row.
CREATE TABLE order_changes (
    id              bigserial   PRIMARY KEY,
    order_id        text        NOT NULL REFERENCES orders ON DELETE CASCADE,
    kind            text        NOT NULL CHECK (kind IN ('cancel', 'refund')),
    whole           boolean     NOT NULL DEFAULT false,  -- cancel: every unit left on the order
    lines           jsonb       NOT NULL DEFAULT '[]',   -- [{sku, hold_supplier, qty}]
    amount_minor    bigint      NOT NULL CHECK (amount_minor >= 0),  -- what it gives back
    reason          text        NOT NULL DEFAULT '',
    source          text        NOT NULL CHECK (source IN ('customer', 'operator', 'return')),
    idempotency_key text        NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'applied', 'refused')),
    outcome         text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    applied_at      timestamptz,
    UNIQUE (order_id, idempotency_key)
);
CREATE INDEX order_changes_pending ON order_changes (order_id, id) WHERE status = 'pending';

-- Per line: units cancelled (never shipped, never charged again), units refunded by line, and
-- the money refunded for the line (cancelled after capture, or refunded by line).
ALTER TABLE order_allocations
    ADD COLUMN cancelled_qty  bigint NOT NULL DEFAULT 0 CHECK (cancelled_qty >= 0),
    ADD COLUMN refunded_qty   bigint NOT NULL DEFAULT 0 CHECK (refunded_qty >= 0),
    ADD COLUMN refunded_minor bigint NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0),
    ADD CONSTRAINT order_allocations_changed CHECK (cancelled_qty + refunded_qty <= qty);

-- The step a change displaced (a promised day's allocation, say), resumed after it.
ALTER TABLE orders
    ADD COLUMN paused_step   text,
    ADD COLUMN paused_due_at timestamptz;
