-- V5: the X-Request-Id of the request that confirmed an order (the `rid` of its `confirmed`
-- event), kept on the order, on each saga step row and on each notification the order causes,
-- so one id leads from the gateway's log line to every row it caused ('' = none: a confirmation
-- made before this migration, or by a caller that sent no request id).
ALTER TABLE orders ADD COLUMN request_id text NOT NULL DEFAULT '';
ALTER TABLE saga_steps ADD COLUMN request_id text NOT NULL DEFAULT '';
ALTER TABLE outbox ADD COLUMN request_id text NOT NULL DEFAULT '';
