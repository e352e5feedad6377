-- V7: supplier stock feeds (store/feeds.py, store/feed_intake.py, docs/feeds.md).
-- A supplier's feed config and health, its SKU map, every delivery it handed in (the delivery id
-- is what makes each connector idempotent), the newest accepted level per (supplier, sku), and
-- the records held back for review.

CREATE TABLE supplier_feeds (
    supplier_id          text        PRIMARY KEY REFERENCES suppliers,
    kind                 text        NOT NULL CHECK (kind IN ('webhook', 'poll', 'file')),
    url                  text        NOT NULL DEFAULT '',           -- poll URL
    interval_s           integer     NOT NULL DEFAULT 0 CHECK (interval_s >= 0),
    format               text        NOT NULL DEFAULT 'json' CHECK (format IN ('csv', 'json', 'xml')),
    secret_enc           bytea,                                     -- sealed (store/feed_secrets.py)
    thresholds           jsonb       NOT NULL DEFAULT '{}',
    configured_at        timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    -- health: written by every delivery (under the supplier's advisory lock) and by the poller
    last_applied_at      timestamptz,                               -- last delivery that applied a record
    last_as_of           timestamptz,                               -- the newest as_of applied
    last_lag_ms          bigint,                                    -- applied - as_of, that delivery
    deliveries_accepted  bigint      NOT NULL DEFAULT 0,
    deliveries_duplicate bigint      NOT NULL DEFAULT 0,
    records_applied      bigint      NOT NULL DEFAULT 0,
    records_stale        bigint      NOT NULL DEFAULT 0,
    records_quarantined  bigint      NOT NULL DEFAULT 0,
    records_unknown      bigint      NOT NULL DEFAULT 0,
    records_duplicate    bigint      NOT NULL DEFAULT 0,
    poll_errors          bigint      NOT NULL DEFAULT 0,
    last_poll_at         timestamptz,
    last_poll_error      text,
    last_poll_error_at   timestamptz,
    poll_etag            text,                                      -- for If-None-Match
    poll_last_modified   text                                       -- for If-Modified-Since
);

-- Supplier SKU -> our sku, with the pack size (our units = on_hand x pack_size). One row per
-- sku too: two supplier SKUs feeding one level would overwrite each other.
CREATE TABLE supplier_sku_map (
    supplier_id  text    NOT NULL REFERENCES supplier_feeds ON DELETE CASCADE,
    supplier_sku text    NOT NULL,
    sku          text    NOT NULL,
    pack_size    integer NOT NULL DEFAULT 1 CHECK (pack_size >= 1),
    PRIMARY KEY (supplier_id, supplier_sku),
    UNIQUE (supplier_id, sku)
);

CREATE TABLE feed_deliveries (
    supplier_id    text        NOT NULL REFERENCES supplier_feeds,
    delivery_id    text        NOT NULL,
    source         text        NOT NULL CHECK (source IN ('webhook', 'poll', 'file')),
    received_at    timestamptz NOT NULL DEFAULT now(),
    applied_at     timestamptz,
    as_of          timestamptz,                                     -- newest as_of accepted
    records        integer     NOT NULL DEFAULT 0,
    applied        integer     NOT NULL DEFAULT 0,
    stale          integer     NOT NULL DEFAULT 0,
    quarantined    integer     NOT NULL DEFAULT 0,
    unknown        integer     NOT NULL DEFAULT 0,
    duplicates     integer     NOT NULL DEFAULT 0,
    sales          integer     NOT NULL DEFAULT 0,                  -- sales whose offers were set
    shortfall      bigint      NOT NULL DEFAULT 0,                  -- units the saga must reroute
    unknown_sample text[]      NOT NULL DEFAULT '{}',
    PRIMARY KEY (supplier_id, delivery_id)
);
CREATE INDEX feed_deliveries_id ON feed_deliveries (delivery_id);

-- The newest accepted level per (supplier, sku), in our units. allocated_since: units allocated
-- at the supplier that its on_hand still counts (those recorded after its as_of when it was
-- accepted, then every claim of the saga), so the allocation step knows the room left before
-- it asks; on_hand - allocated_since is what a sale may still be offered from it.
CREATE TABLE feed_levels (
    supplier_id     text        NOT NULL REFERENCES supplier_feeds,
    sku             text        NOT NULL,
    on_hand         bigint      NOT NULL CHECK (on_hand >= 0),
    as_of           timestamptz NOT NULL,
    delivery_id     text        NOT NULL,
    accepted_at     timestamptz NOT NULL DEFAULT now(),
    allocated_since bigint      NOT NULL DEFAULT 0 CHECK (allocated_since >= 0),
    PRIMARY KEY (supplier_id, sku)
);
CREATE INDEX feed_levels_sku ON feed_levels (sku);

CREATE TABLE feed_quarantine (
    id           bigserial   PRIMARY KEY,
    supplier_id  text        NOT NULL,
    delivery_id  text        NOT NULL,
    line         integer     NOT NULL DEFAULT 0,
    supplier_sku text        NOT NULL,
    on_hand      text        NOT NULL,                              -- as given, cut to 64 chars
    as_of        timestamptz,
    reason       text        NOT NULL,
    status       text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'replayed')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (supplier_id, delivery_id) REFERENCES feed_deliveries
);
CREATE INDEX feed_quarantine_open ON feed_quarantine (supplier_id, id) WHERE status = 'open';
CREATE INDEX feed_quarantine_delivery ON feed_quarantine (supplier_id, delivery_id);

-- Every delivery reads what the sales' lines held at its supplier no longer wait for
-- (store/feed_intake.py, _SETTLED) and what was allocated there after its as_of
-- (_WRITE_LEVELS): by (supplier, sku), not by a scan of every line.
CREATE INDEX order_allocations_hold ON order_allocations (hold_supplier, sku);
-- ... and which open sales offer the (supplier, sku)s it changed (_OFFERING).
CREATE INDEX supplier_skus_supplier_sku ON supplier_skus (supplier_id, sku);
CREATE INDEX order_allocations_at ON order_allocations (supplier_id, sku, updated_at)
    WHERE status = 'allocated';
