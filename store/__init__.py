"""PostgreSQL, the system of record: migrations, sale records, orders, the ledger, saga state."""
