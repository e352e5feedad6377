"""The gateway's Prometheus metrics, kept with prometheus_client.

`flashsale serve` sets PROMETHEUS_MULTIPROC_DIR before its workers start: each worker then
writes its counters and histograms to its own mmap'd files there, and a scrape of any worker
sums every worker's (prometheus_client's multiprocess mode), so a counter is exact whichever
worker answers. Without the variable (the app built in-process) the process's own registry is
scraped. What is read at scrape time (stock, rooms, Redis memory) is not kept per worker: the
scraping worker reads it from Redis and adds it to the page as one-shot families.

Label values come only from route templates, methods, status numbers, problem codes and
configured ids (sales, skus, suppliers), so the number of series stays bounded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# The outcome a handler decided, for the middleware to count: the problem code it answered with
# (set where a Problem is sent) or, when absent, "OK" below 400.
OUTCOME_KEY = "flashsale.outcome"
HOLDS_ROUTE = "/v1/sales/{sale}/holds"
HOLD_ACTIONS = {
    "/v1/sales/{sale}/holds/{hold}/confirm": "confirm",
    "/v1/sales/{sale}/holds/{hold}/release": "release",
    "/v1/sales/{sale}/holds/{hold}/extend": "extend",
}

# No `_created` series: multiprocess mode cannot sum them anyway.
disable_created_metrics()  # type: ignore[no-untyped-call]

REQUESTS = Counter(
    "flashsale_http_requests",
    "HTTP requests answered, by route template, method and status.",
    ("route", "method", "status"),
)
DURATION = Histogram(
    "flashsale_http_request_duration_seconds",
    "Time from the request's arrival to the end of its answer, by route template.",
    ("route",),
    buckets=LATENCY_BUCKETS_S,
)
CHECKOUTS = Counter(
    "flashsale_checkouts",
    "Checkout attempts (POST holds) by outcome: OK or the problem code answered.",
    ("outcome",),
)
HOLDS = Counter(
    "flashsale_holds",
    "Hold actions (confirm, release, extend) by outcome: OK or the problem code answered.",
    ("action", "outcome"),
)
RATE_LIMIT_UNREADABLE = Counter(
    "flashsale_rate_limit_unreadable",
    "Requests whose sale's rate limits could not be read; the settings' defaults applied.",
)
REDIS_BATCHES = Counter(
    "flashsale_redis_batches", "Pipelines the script batcher sent to Redis (one per loop tick)."
)
REDIS_BATCHED_CALLS = Counter(
    "flashsale_redis_batched_calls", "Script calls the batcher sent, over all its pipelines."
)

REDIS_WAIT_SHORT = Counter(
    "flashsale_redis_wait_short",
    "Pipelines whose WAIT heard from fewer replicas than FLASHSALE_REDIS_WAIT_REPLICAS in time "
    "(their writes were answered 503).",
)


class RequestMetrics:
    """The per-request counting of the middleware, with each label set's child looked up once
    (`labels()` takes a lock and builds a tuple; this path runs on every request)."""

    def __init__(self) -> None:
        self._request: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._outcome: dict[tuple[str, str], Counter] = {}

    def observe(self, route: str, method: str, status: int, elapsed_s: float) -> None:
        key = (route, method, status)
        pair = self._request.get(key)
        if pair is None:
            pair = REQUESTS.labels(route, method, str(status)), DURATION.labels(route)
            self._request[key] = pair
        pair[0].inc()
        pair[1].observe(elapsed_s)

    def outcome(self, route: str, status: int, code: str | None) -> None:
        """Counts a checkout or a hold action by what it answered."""
        if route == HOLDS_ROUTE:
            action = ""
        elif route in HOLD_ACTIONS:
            action = HOLD_ACTIONS[route]
        else:
            return
        outcome = code or ("OK" if status < 400 else f"HTTP_{status}")
        key = (action, outcome)
        child = self._outcome.get(key)
        if child is None:
            child = CHECKOUTS.labels(outcome) if not action else HOLDS.labels(action, outcome)
            self._outcome[key] = child
        child.inc()


def count_batch(calls: int) -> None:
    """The script batcher's observer: one pipeline of `calls` script calls went out."""
    REDIS_BATCHES.inc()
    REDIS_BATCHED_CALLS.inc(calls)


# --- the scrape ----------------------------------------------------------------------------------

Sample = tuple[str, dict[str, str], float]  # (name, labels, value) read at scrape time


class _ReadNow(Collector):
    """Families read at scrape time. A name ending in `_total` is a counter kept elsewhere
    (Redis), exposed as such; every other name is a gauge."""

    def __init__(self, samples: Iterable[Sample], help_text: dict[str, str]) -> None:
        self.samples = list(samples)
        self.help_text = help_text

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for name, labels, value in self.samples:
            family = families.get(name)
            if family is None:
                doc = self.help_text.get(name, name.replace("_", " "))
                family = (
                    CounterMetricFamily(name.removesuffix("_total"), doc, labels=list(labels))
                    if name.endswith("_total")
                    else GaugeMetricFamily(name, doc, labels=list(labels))
                )
                families[name] = family
            family.add_metric(list(labels.values()), value)
        yield from families.values()


def render(samples: Iterable[Sample], help_text: dict[str, str]) -> bytes:
    """The whole page: every worker's counters (or this process's) and the scrape's reads."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        kept = CollectorRegistry(auto_describe=False)
        multiprocess.MultiProcessCollector(kept, path)  # type: ignore[no-untyped-call]
    else:
        kept = REGISTRY
    now = CollectorRegistry(auto_describe=False)
    now.register(_ReadNow(samples, help_text))
    return generate_latest(kept) + generate_latest(now)
