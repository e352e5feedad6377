"""The order saga's state in PostgreSQL: the order model, the cursor's claims, outcomes written."""
