-- V11: shipments and promised dates (store/shipments.py, store/promised_dates.py, docs/saga.md).
-- A supplier that reports shipments (supplier_feeds.reports_shipments) sends each one, signed,
-- to POST /v1/shipments/{supplier}; its lines count as shipped only when they are. The
-- shipment id is the supplier's, so a shipment sent twice is applied once.

ALTER TABLE order_allocations
    ADD COLUMN shipped_qty bigint NOT NULL DEFAULT 0 CHECK (shipped_qty >= 0);
-- A cancelled unit (V10) is never shipped, a shipped one never cancelled.
ALTER TABLE order_allocations
    ADD CONSTRAINT order_allocations_shipped CHECK (shipped_qty + cancelled_qty <= qty);

ALTER TABLE supplier_feeds
    ADD COLUMN reports_shipments boolean NOT NULL DEFAULT false;

CREATE TABLE shipments (
    supplier_id  text        NOT NULL REFERENCES suppliers,
    shipment_id  text        NOT NULL,
    order_id     text        NOT NULL REFERENCES orders ON DELETE CASCADE,
    carrier      text        NOT NULL,
    tracking_id  text        NOT NULL,
    shipped_at   timestamptz NOT NULL,                  -- as the supplier says
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (supplier_id, shipment_id)
);
CREATE INDEX shipments_order ON shipments (order_id, received_at);

-- A shipment's units per order line (a sku split over two holds can need two rows).
CREATE TABLE shipment_lines (
    supplier_id   text   NOT NULL,
    shipment_id   text   NOT NULL,
    order_id      text   NOT NULL,
    sku           text   NOT NULL,
    hold_supplier text   NOT NULL,
    qty           bigint NOT NULL CHECK (qty > 0),
    PRIMARY KEY (supplier_id, shipment_id, sku, hold_supplier),
    FOREIGN KEY (supplier_id, shipment_id) REFERENCES shipments ON DELETE CASCADE,
    FOREIGN KEY (order_id, sku, hold_supplier) REFERENCES order_allocations ON DELETE CASCADE
);

-- Every promised date a waiting backorder was given, and why: the retailer's "wait", an
-- operator's change, or the saga moving it when the day came and the line was still short.
CREATE TABLE backorder_dates (
    id            bigserial   PRIMARY KEY,
    backorder_id  bigint      NOT NULL REFERENCES backorders ON DELETE CASCADE,
    promised_date date        NOT NULL,
    reason        text        NOT NULL,
    source        text        NOT NULL CHECK (source IN ('retailer', 'operator', 'saga')),
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX backorder_dates_backorder ON backorder_dates (backorder_id, id);
