"""The feed connectors that bring supplier stock in from outside: stock files (a drop folder, an
upload, `flashsale feeds load`) read as streams, and the poller of suppliers' stock endpoints."""
