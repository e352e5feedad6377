"""The reconciler: event stream to PostgreSQL, hold sweeper, order saga."""
