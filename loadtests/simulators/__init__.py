"""Outside parties of the order saga as real HTTP servers (a payment provider, suppliers, a webhook
receiver; one module each), and the processes that run them. They speak the protocol of
reconciler/adapters.py, misbehave on request (declines, stalls, 5xx, stock that runs out), and keep
records the tests compare with PostgreSQL."""
