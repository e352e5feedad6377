-- V2: what the reconciler needs to keep from a confirmation once its stream entry is deleted.
-- The payment reference is what the saga's authorisation step charges; the stream entry that
-- carried it is deleted after the flush, so PostgreSQL is the only place left to keep it.
ALTER TABLE orders ADD COLUMN payment_ref text NOT NULL DEFAULT '';

-- Ledger sign convention (store/flush.py): qty is added to the stock_levels column its
-- kind moves: sum(load) = loaded, sum(adjust) = adjusted, sum(confirm) + sum(compensate) = sold
-- (confirm > 0, compensate < 0). release and expire rows (qty > 0, units back on sale) move
-- `reserved`, which only Redis keeps. The audit sums the ledger per kind against the levels.
COMMENT ON COLUMN stock_movements.qty IS
    'added to the stock_levels column of its kind: load->loaded, adjust->adjusted, '
    'confirm(+)/compensate(-)->sold; release/expire (+) move only Redis reserved';
