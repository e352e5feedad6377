-- V3: the order saga (reconciler/saga/). An order's status is the saga's state; the saga's
-- cursor (next step, when it is due, who holds it) lives on the order row, so one order never
-- runs two steps at once; saga_steps keeps every step's tries and outcome.

-- Whether a compensation gave an order's units back is the ledger's business (a 'compensate'
-- row, which audit and recover read); the status is the saga's from here on.
UPDATE orders SET status = CASE status WHEN 'compensated' THEN 'PAYMENT_FAILED' ELSE 'PENDING' END;
ALTER TABLE orders ALTER COLUMN status SET DEFAULT 'PENDING';
ALTER TABLE orders ADD CONSTRAINT orders_status CHECK (status IN (
    'PENDING', 'AUTHORIZED', 'ALLOCATED', 'CONFIRMED', 'FULFILLED', 'PARTIALLY_FULFILLED',
    'BACKORDERED', 'PAYMENT_FAILED', 'CANCELLED', 'REFUNDED'));

ALTER TABLE orders
    ADD COLUMN next_step       text,                  -- NULL: the saga has nothing left to do
    ADD COLUMN step_due_at     timestamptz,           -- when next_step may run (or its lease ends)
    ADD COLUMN step_token      bigint  NOT NULL DEFAULT 0,  -- bumped by every claim and change
    ADD COLUMN claimed_until   timestamptz,           -- a process is running next_step until then
    ADD COLUMN authorization_id text,                 -- the payment provider's
    ADD COLUMN authorized_minor bigint NOT NULL DEFAULT 0 CHECK (authorized_minor >= 0),
    ADD COLUMN captured_minor  bigint  NOT NULL DEFAULT 0 CHECK (captured_minor >= 0),
    ADD COLUMN refunded_minor  bigint  NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0),
    ADD COLUMN dead_step       text;                  -- a step given up after its tries: an operator's
CREATE INDEX orders_saga_due ON orders (step_due_at) WHERE next_step IS NOT NULL;

-- round: a step run again after it ended (allocation after a retailer's "wait") is a new round,
-- and the idempotency key sent to the outside party is order:step:round.
ALTER TABLE saga_steps ADD COLUMN round integer NOT NULL DEFAULT 1 CHECK (round >= 1);
ALTER TABLE saga_steps ADD COLUMN outcome text;

-- Every status change, with its time and cause.
CREATE TABLE order_transitions (
    id          bigserial   PRIMARY KEY,
    order_id    text        NOT NULL REFERENCES orders ON DELETE CASCADE,
    from_status text        NOT NULL,
    to_status   text        NOT NULL,
    cause       text        NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_transitions_order ON order_transitions (order_id, id);

-- Who ships each order line. hold_supplier is where Redis took the units (the sale's stock
-- accounting never moves); supplier_id is who ships them, which a reroute changes. Margins are
-- line totals: planned = price - cost at hold_supplier; margin = price - cost at the shipper.
CREATE TABLE order_allocations (
    order_id       text        NOT NULL REFERENCES orders ON DELETE CASCADE,
    sku            text        NOT NULL,
    hold_supplier  text        NOT NULL,
    qty            bigint      NOT NULL CHECK (qty > 0),
    price_minor    bigint      NOT NULL CHECK (price_minor >= 0),  -- per unit
    status         text        NOT NULL DEFAULT 'pending' CHECK (status IN (
                       'pending', 'allocated', 'backordered', 'waiting', 'cancelled')),
    supplier_id    text,
    cost_minor     bigint      CHECK (cost_minor >= 0),            -- per unit, at supplier_id
    allocation_ref text,                                            -- the supplier's id
    confirmed      boolean     NOT NULL DEFAULT false,              -- supplier lock made firm
    planned_margin_minor bigint NOT NULL,
    margin_minor   bigint,
    refused_by     text[]      NOT NULL DEFAULT '{}',               -- this round's refusals
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, sku, hold_supplier)
);

-- Orders flushed before this migration join the saga with their lines, as the flush now
-- writes them for new orders.
INSERT INTO order_allocations (order_id, sku, hold_supplier, qty, price_minor, planned_margin_minor)
SELECT l.order_id, l.sku, l.supplier_id, l.qty, l.price_minor, l.qty * (l.price_minor - l.cost_minor)
FROM order_lines l JOIN orders o USING (order_id) WHERE o.status = 'PENDING';
UPDATE orders SET next_step = 'payment.authorize', step_due_at = now() WHERE status = 'PENDING';

-- A backorder is per order line: a line split over two suppliers can need two.
ALTER TABLE backorders ADD COLUMN hold_supplier text NOT NULL DEFAULT '';
ALTER TABLE backorders DROP CONSTRAINT backorders_order_id_sku_key;
ALTER TABLE backorders ADD CONSTRAINT backorders_line UNIQUE (order_id, sku, hold_supplier);
ALTER TABLE backorders ADD COLUMN promised_date date;
ALTER TABLE backorders ADD COLUMN applied boolean NOT NULL DEFAULT true;  -- decision carried out
ALTER TABLE backorders ADD CONSTRAINT backorders_status
    CHECK (status IN ('open', 'decided', 'waiting', 'cancelled', 'secondary', 'resolved'));

-- Notifications go to a recipient (customer or retailer); the payload carries its own id.
ALTER TABLE outbox ADD COLUMN recipient text NOT NULL DEFAULT 'retailer'
    CHECK (recipient IN ('customer', 'retailer'));
