-- V12: after the sale: the retailer's credit when a reroute or a secondary supplier lowers a
-- line's margin (store/retailer_ledger.py), and the returns an operator records
-- (store/returns.py). The settlement (store/settlement.py) reads both.

-- How much of a line's lost margin the retailer is credited: 'none', 'full', or a share
-- written as a decimal between 0 and 1 exclusive ('0.5'). The gateway checks the body's form.
ALTER TABLE sales ADD COLUMN credit_policy text NOT NULL DEFAULT 'none'
    CHECK (credit_policy IN ('none', 'full') OR credit_policy ~ '^0\.[0-9]{1,12}$');

-- The credit a line is owed follows the line: a 'credit' entry when it grows, a 'reversal'
-- when it shrinks (units or the line cancelled, the order undone, the line allocated again at
-- another cost), so that per line sum(credit) - sum(reversal) is what the line is owed now. The
-- saga's write (store/saga/orders.py) brings the entries in line, under the order's row lock,
-- in the transaction that writes the line: a step run twice finds nothing left to write.
-- owed = policy x live units x (unit cost now - unit cost planned), rounded down, only on a
-- line its supplier confirmed, shipped by another supplier than the one it was sold from.
CREATE TABLE retailer_ledger (
    id            bigserial   PRIMARY KEY,
    sale_id       text        NOT NULL REFERENCES sales,
    order_id      text        NOT NULL REFERENCES orders ON DELETE CASCADE,
    sku           text        NOT NULL,
    hold_supplier text        NOT NULL,
    supplier_id   text,                       -- who ships the line now
    kind          text        NOT NULL CHECK (kind IN ('credit', 'reversal')),
    amount_minor  bigint      NOT NULL CHECK (amount_minor > 0),
    cause         text        NOT NULL CHECK (cause IN ('reroute', 'secondary', 'cancelled',
                                  'payment_failed', 'refunded', 'reallocated')),
    margin_drop_minor bigint  NOT NULL CHECK (margin_drop_minor >= 0),  -- the line's, now
    owed_minor    bigint      NOT NULL CHECK (owed_minor >= 0),  -- the line's credit after it
    policy        text        NOT NULL,       -- the sale's policy when the entry was written
    at            timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (order_id, sku, hold_supplier) REFERENCES order_allocations
);
CREATE INDEX retailer_ledger_line ON retailer_ledger (order_id, sku, hold_supplier);
CREATE INDEX retailer_ledger_sale ON retailer_ledger (sale_id, id);

-- A return an operator recorded; its Idempotency-Key names it within its order, and the
-- request's digest tells a replay from a reuse of the key for another body.
-- restock: none (nothing to put back on sale), pending -> restocking (claimed at
-- restock_claimed_at by the request that adds the units through the engine's adjust, each
-- once per line: a claim older than the lease is taken over by a replay) -> done.
CREATE TABLE returns (
    id               bigserial   PRIMARY KEY,
    order_id         text        NOT NULL REFERENCES orders ON DELETE CASCADE,
    sale_id          text        NOT NULL REFERENCES sales,
    idempotency_key  text        NOT NULL,
    request_digest   text        NOT NULL,
    reason           text        NOT NULL DEFAULT '',
    refund_minor     bigint      NOT NULL CHECK (refund_minor >= 0),
    refund_change_id bigint      REFERENCES order_changes,  -- the refund (store/saga/changes.py)
    restock          text        NOT NULL CHECK (restock IN ('none', 'pending', 'restocking', 'done')),
    restock_claimed_at timestamptz,
    at               timestamptz NOT NULL DEFAULT now(),
    UNIQUE (order_id, idempotency_key)
);
CREATE INDEX returns_sale ON returns (sale_id, id);

-- Per order line (sku, hold_supplier) and condition. destination: sale_stock (back on sale,
-- restocked_qty once the adjust is made), ledger (the sale was over: recorded here only),
-- written_off (damaged).
CREATE TABLE return_lines (
    return_id     bigint      NOT NULL REFERENCES returns ON DELETE CASCADE,
    order_id      text        NOT NULL,
    sku           text        NOT NULL,
    hold_supplier text        NOT NULL,
    qty           bigint      NOT NULL CHECK (qty > 0),
    condition     text        NOT NULL CHECK (condition IN ('restockable', 'damaged')),
    destination   text        NOT NULL CHECK (destination IN ('sale_stock', 'ledger', 'written_off')),
    restocked_qty bigint      NOT NULL DEFAULT 0 CHECK (restocked_qty BETWEEN 0 AND qty),
    refund_minor  bigint      NOT NULL CHECK (refund_minor >= 0),
    PRIMARY KEY (return_id, sku, hold_supplier, condition),
    FOREIGN KEY (order_id, sku, hold_supplier) REFERENCES order_allocations
);
CREATE INDEX return_lines_order ON return_lines (order_id, sku, hold_supplier);
