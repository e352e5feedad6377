-- V4: what a customer may see of an order, and the names shoppers see.
-- An outbox row names its order, so the customer's view lists the notifications meant for them
-- without reading every payload.
ALTER TABLE outbox ADD COLUMN order_id text;
UPDATE outbox SET order_id = payload->>'order_id' WHERE payload ? 'order_id';
CREATE INDEX outbox_order ON outbox (order_id, id) WHERE order_id IS NOT NULL;

-- An item's name, shown to shoppers instead of its sku (NULL: the sku is shown).
ALTER TABLE skus ADD COLUMN name text CHECK (name IS NULL OR length(name) BETWEEN 1 AND 200);
