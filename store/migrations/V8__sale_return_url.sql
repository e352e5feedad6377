-- V8: where the queue page sends a shopper after reserving (the shop's checkout for the hold):
-- a URL template with {hold_id} exactly once; NULL = none. The gateway checks its form
-- (engine/validation.py); the bound here only keeps a stray writer from storing a novel.
ALTER TABLE sales ADD COLUMN return_url text
    CHECK (return_url IS NULL OR length(return_url) BETWEEN 1 AND 2048);
