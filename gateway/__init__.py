"""The HTTP gateway: checkout hot path, waiting room, admin API, metrics."""
