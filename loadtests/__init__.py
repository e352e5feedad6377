"""Locust scenarios, the benchmark harness and the post-run audit."""
