-- V1: the system of record (docs/design.md, the data model).
-- Money is integer minor units (bigint), unit counts are bigint, times are timestamptz (UTC).
-- Tables are unqualified so the migration lands in the connection's search_path schema.

-- A sale as the admin API defines it. config_version goes up by one on every replace and is
-- what Redis's load_sale compares, so an older config never overwrites a newer one there.
CREATE TABLE sales (
    sale_id        text        PRIMARY KEY,
    name           text        NOT NULL,
    status         text        NOT NULL DEFAULT 'scheduled'
                               CHECK (status IN ('scheduled', 'open', 'paused', 'closed')),
    starts_at      timestamptz NOT NULL,
    ends_at        timestamptz,                       -- NULL = no end
    hold_ttl_s     integer     NOT NULL CHECK (hold_ttl_s > 0),
    per_user_limit bigint      NOT NULL DEFAULT 0 CHECK (per_user_limit >= 0),  -- 0 = no limit
    waiting_room   jsonb       NOT NULL DEFAULT '{}',
    rate_limit     jsonb       NOT NULL DEFAULT '{}',
    config_version bigint      NOT NULL DEFAULT 1 CHECK (config_version >= 1),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at IS NULL OR ends_at > starts_at)
);

-- position keeps the admin's item order, so a stored sale reads back exactly as it was given.
CREATE TABLE skus (
    sale_id     text    NOT NULL REFERENCES sales,
    sku         text    NOT NULL,
    price_minor bigint  NOT NULL CHECK (price_minor >= 0),
    position    integer NOT NULL DEFAULT 0,
    PRIMARY KEY (sale_id, sku)
);

CREATE TABLE suppliers (
    supplier_id text        PRIMARY KEY,
    name        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Allocation order is priority, then position: equal priorities keep the order they were given
-- in (ItemConfig.by_priority), which a plain ORDER BY priority would lose.
CREATE TABLE supplier_skus (
    sale_id     text    NOT NULL,
    sku         text    NOT NULL,
    supplier_id text    NOT NULL REFERENCES suppliers,
    cost_minor  bigint  NOT NULL DEFAULT 0 CHECK (cost_minor >= 0),
    priority    integer NOT NULL DEFAULT 0,
    position    integer NOT NULL DEFAULT 0,
    PRIMARY KEY (sale_id, sku, supplier_id),
    FOREIGN KEY (sale_id, sku) REFERENCES skus
);
CREATE INDEX supplier_skus_supplier ON supplier_skus (supplier_id);

-- Invariant 1 seen from PostgreSQL: sold never exceeds what was loaded plus adjustments.
-- The foreign key has no cascade on purpose: a mapping cannot vanish while it has stock.
CREATE TABLE stock_levels (
    sale_id     text        NOT NULL,
    sku         text        NOT NULL,
    supplier_id text        NOT NULL,
    loaded      bigint      NOT NULL DEFAULT 0 CHECK (loaded >= 0),
    adjusted    bigint      NOT NULL DEFAULT 0,
    sold        bigint      NOT NULL DEFAULT 0 CHECK (sold >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sale_id, sku, supplier_id),
    FOREIGN KEY (sale_id, sku, supplier_id) REFERENCES supplier_skus,
    CHECK (loaded + adjusted >= 0),
    CHECK (sold <= loaded + adjusted)
);

-- order_id is the hold id, so a replayed flush of the same confirmation inserts nothing.
-- Status values belong to the saga and are free text here until it fixes its state names.
CREATE TABLE orders (
    order_id     text        PRIMARY KEY,
    sale_id      text        NOT NULL REFERENCES sales,
    customer_id  text        NOT NULL,
    status       text        NOT NULL DEFAULT 'confirmed',
    total_minor  bigint      NOT NULL DEFAULT 0 CHECK (total_minor >= 0),
    event_id     text,                                -- the stream entry that confirmed it
    created_at   timestamptz NOT NULL DEFAULT now(),
    confirmed_at timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_sale_customer ON orders (sale_id, customer_id);
CREATE INDEX orders_sale_created ON orders (sale_id, created_at);

-- One row per (sku, supplier) split of a hold line; the split is what Redis allocated.
CREATE TABLE order_lines (
    order_id    text   NOT NULL REFERENCES orders ON DELETE CASCADE,
    sku         text   NOT NULL,
    supplier_id text   NOT NULL,
    qty         bigint NOT NULL CHECK (qty > 0),
    price_minor bigint NOT NULL DEFAULT 0 CHECK (price_minor >= 0),
    cost_minor  bigint NOT NULL DEFAULT 0 CHECK (cost_minor >= 0),
    PRIMARY KEY (order_id, sku, supplier_id)
);

-- Append-only ledger. qty is signed (+ adds to the stock level's column, - takes away).
-- The unique key makes every writer idempotent: a replayed batch hits ON CONFLICT DO NOTHING.
-- No foreign key: the ledger outlives stock rows that a replace drops.
CREATE TABLE stock_movements (
    id          bigserial   PRIMARY KEY,
    sale_id     text        NOT NULL,
    sku         text        NOT NULL,
    supplier_id text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN (
                    'load', 'confirm', 'release', 'expire', 'adjust', 'compensate', 'reroute')),
    qty         bigint      NOT NULL,
    ref         text        NOT NULL,                 -- hold id, stream event id, or sale:v<n>
    reason      text        NOT NULL DEFAULT '',
    at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, ref, sku, supplier_id)
);
CREATE INDEX stock_movements_stock ON stock_movements (sale_id, sku, supplier_id);

-- Saga progress; persisted so a restarted reconciler resumes. (status, next_attempt_at) serves
-- "due steps in state X" without naming the states here.
CREATE TABLE saga_steps (
    order_id        text        NOT NULL REFERENCES orders ON DELETE CASCADE,
    step            text        NOT NULL,
    status          text        NOT NULL DEFAULT 'pending',
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    result          jsonb,                            -- e.g. the authorisation id capture needs
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, step)
);
CREATE INDEX saga_steps_due ON saga_steps (status, next_attempt_at);

-- Notifications to deliver at least once; dedupe_key (e.g. order id + step) keeps a retried
-- saga step from queueing the same message twice.
CREATE TABLE outbox (
    id              bigserial   PRIMARY KEY,
    topic           text        NOT NULL,
    payload         jsonb       NOT NULL,
    dedupe_key      text        UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text
);
CREATE INDEX outbox_pending ON outbox (next_attempt_at) WHERE delivered_at IS NULL;

-- Open decisions for the retailer: units no supplier could ship. One per order and sku, so the
-- allocate step can be retried without opening a second decision.
CREATE TABLE backorders (
    id         bigserial   PRIMARY KEY,
    order_id   text        NOT NULL REFERENCES orders,
    sku        text        NOT NULL,
    qty        bigint      NOT NULL CHECK (qty > 0),
    status     text        NOT NULL DEFAULT 'open',
    options    jsonb       NOT NULL DEFAULT '[]',
    decision   jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    decided_at timestamptz,
    UNIQUE (order_id, sku)
);
CREATE INDEX backorders_open ON backorders (created_at) WHERE status = 'open';
