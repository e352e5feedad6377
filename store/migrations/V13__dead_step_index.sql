-- V13: the dead letters without a scan of every order. The operator console lists them every
-- 2 s (GET /v1/admin/orders?dead=true, store/orders.py dead_orders); only a few orders ever
-- have a dead step, so a partial index holds just those.

CREATE INDEX orders_dead_step ON orders (order_id) WHERE dead_step IS NOT NULL;
