"""The reconciler's counts: a progress line for its log, and Prometheus families (prometheus_client)
on a small endpoint (`flashsale reconcile --metrics-port P`).

One reconciler is one process, so its counts live in this object and are turned into families
when scraped; several reconcilers are several scrape targets, summed by Prometheus. What only
PostgreSQL knows (orders per saga state, dead steps, the audit's findings) is refreshed by the
watch job (reconciler/watch.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from flashsale.engine.errors import FlashsaleError
from flashsale.reconciler.adapters import Answer, StockQuote, Suppliers

FLUSH_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(slots=True)
class Metrics:
    flushed_events: int = 0  # entries applied (or found already applied) and acknowledged
    orders: int = 0  # orders inserted
    batches: int = 0
    last_batch_size: int = 0
    flush_s_sum: float = 0.0  # PostgreSQL transaction time over all batches
    last_flush_ms: float = 0.0
    max_flush_ms: float = 0.0
    retries: int = 0  # failed rounds (PostgreSQL or Redis unreachable) waited out
    dead_letters: int = 0  # entries moved to fs:{S}:events:dead
    swept_holds: int = 0  # expired holds released by the sweeper
    sweep_errors: int = 0
    owned_sales: int = 0
    lag_entries: int = 0  # not yet flushed, over the owned sales
    lag_s: float = 0.0  # age of the oldest of them
    saga_steps: int = 0  # saga steps whose outcome was written
    saga_retries: int = 0  # tries that could not reach a party, Redis or PostgreSQL
    saga_dead: int = 0  # steps given up after their tries
    notices_sent: int = 0  # notifications a webhook accepted
    notice_failures: int = 0  # deliveries that failed and wait for their next try
    # By label: (step, done|retry|dead) and (supplier, allocated|refused|failed).
    saga_outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    allocations: Counter[tuple[str, str]] = field(default_factory=Counter)
    flush_buckets: list[int] = field(default_factory=lambda: [0] * len(FLUSH_BUCKETS_S))
    # Refreshed from PostgreSQL and the audit by the watch job.
    saga_orders: dict[str, int] = field(default_factory=dict)
    saga_dead_open: int = 0
    audit_mismatches: dict[str, int] = field(default_factory=dict)
    audit_last_run_s: float = 0.0

    def observe_batch(self, size: int, flush_s: float, orders: int, dead: int) -> None:
        self.flushed_events += size
        self.orders += orders
        self.batches += 1
        self.last_batch_size = size
        self.flush_s_sum += flush_s
        self.last_flush_ms = flush_s * 1000
        self.max_flush_ms = max(self.max_flush_ms, self.last_flush_ms)
        self.dead_letters += dead
        for i, bound in enumerate(FLUSH_BUCKETS_S):
            if flush_s <= bound:
                self.flush_buckets[i] += 1
                break

    def saga(self, step: str, outcome: str) -> None:
        """One try of a saga step ended: done (its outcome written), retry or dead."""
        self.saga_outcomes[(step, outcome)] += 1
        if outcome == "done":
            self.saga_steps += 1
        elif outcome == "retry":
            self.saga_retries += 1
        else:
            self.saga_dead += 1

    def line(self) -> str:
        """One progress line; tests read `flushed=` and `retries=` from it."""
        mean_ms = self.flush_s_sum * 1000 / self.batches if self.batches else 0.0
        return (
            f"flushed={self.flushed_events} orders={self.orders} batches={self.batches} "
            f"batch={self.last_batch_size} flush_ms={self.last_flush_ms:.1f} "
            f"mean_flush_ms={mean_ms:.1f} max_flush_ms={self.max_flush_ms:.1f} "
            f"retries={self.retries} dead={self.dead_letters} swept={self.swept_holds} "
            f"owned={self.owned_sales} lag={self.lag_entries} lag_s={self.lag_s:.2f}"
        )

    def prometheus(self) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(self))
        return generate_latest(registry)


_COUNTERS = {
    "flushed_events": "Stream events applied to PostgreSQL and acknowledged.",
    "orders": "Orders inserted by the flush.",
    "batches": "Batches flushed, one PostgreSQL transaction each.",
    "retries": "Rounds waited out because Redis or PostgreSQL could not be reached.",
    "dead_letters": "Stream entries moved to the dead letters (not applied).",
    "swept_holds": "Expired holds released by the sweeper.",
    "sweep_errors": "Sweeper rounds that failed.",
}
_GAUGES = {
    "owned_sales": "Sales whose stream this reconciler flushes.",
    "lag_entries": "Stream entries not yet flushed, over the owned sales.",
    "lag_seconds": "Age of the oldest stream entry not yet flushed.",
}


class _Families(Collector):
    def __init__(self, m: Metrics) -> None:
        self.m = m

    def collect(self) -> Iterator[Metric]:
        m = self.m
        for name, doc in _COUNTERS.items():
            yield CounterMetricFamily(f"flashsale_reconciler_{name}", doc, getattr(m, name))
        gauges = {
            "owned_sales": m.owned_sales,
            "lag_entries": m.lag_entries,
            "lag_seconds": m.lag_s,
        }
        for name, doc in _GAUGES.items():
            yield GaugeMetricFamily(f"flashsale_reconciler_{name}", doc, gauges[name])
        yield self._flush_histogram()
        yield _labelled(
            CounterMetricFamily,
            "flashsale_saga_steps",
            "Tries of saga steps by step and outcome (done, retry, dead).",
            ("step", "outcome"),
            m.saga_outcomes.items(),
        )
        yield _labelled(
            CounterMetricFamily,
            "flashsale_supplier_allocations",
            "Allocation requests to suppliers by outcome (allocated, refused, failed).",
            ("supplier", "outcome"),
            m.allocations.items(),
        )
        notices = {("sent",): m.notices_sent, ("failed",): m.notice_failures}
        yield _labelled(
            CounterMetricFamily,
            "flashsale_notifications",
            "Notification deliveries by outcome (failed ones are tried again).",
            ("outcome",),
            notices.items(),
        )
        orders = {(status,): n for status, n in m.saga_orders.items()}
        yield _labelled(
            GaugeMetricFamily,
            "flashsale_saga_orders",
            "Orders per saga state, as PostgreSQL had them at the last watch.",
            ("status",),
            orders.items(),
        )
        yield GaugeMetricFamily(
            "flashsale_saga_dead_steps",
            "Dead-lettered saga steps waiting for `flashsale saga retry`.",
            m.saga_dead_open,
        )
        audit = {(sale,): n for sale, n in m.audit_mismatches.items()}
        yield _labelled(
            GaugeMetricFamily,
            "flashsale_audit_mismatches",
            "Violations found by the last audit of each loaded sale (0: sound).",
            ("sale",),
            audit.items(),
        )
        yield GaugeMetricFamily(
            "flashsale_audit_last_run_timestamp_seconds",
            "When the last audit round ended (unix seconds; 0: none yet).",
            m.audit_last_run_s,
        )

    def _flush_histogram(self) -> HistogramMetricFamily:
        m = self.m
        buckets, running = [], 0
        for bound, count in zip(FLUSH_BUCKETS_S, m.flush_buckets, strict=True):
            running += count
            buckets.append((str(bound), float(running)))
        buckets.append(("+Inf", float(m.batches)))
        return HistogramMetricFamily(
            "flashsale_reconciler_flush_seconds",
            "PostgreSQL transaction time of one flushed batch.",
            buckets=buckets,
            sum_value=m.flush_s_sum,
        )


def _labelled(
    kind: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    doc: str,
    labels: tuple[str, ...],
    values: Iterable[tuple[Sequence[str], float]],
) -> Metric:
    family = kind(name, doc, labels=list(labels))
    for key, value in sorted(values):
        family.add_metric(list(key), value)
    return family


class CountedSuppliers:
    """The suppliers' adapter, counting each allocation request by supplier and outcome."""

    def __init__(self, inner: Suppliers, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics

    async def allocate(self, supplier_id: str, key: str, sku: str, qty: int, lock_s: int) -> Answer:
        try:
            answer = await self.inner.allocate(supplier_id, key, sku, qty, lock_s)
        except Exception:
            self.metrics.allocations[(supplier_id, "failed")] += 1
            raise
        self.metrics.allocations[(supplier_id, "allocated" if answer.ok else "refused")] += 1
        return answer

    async def confirm(self, supplier_id: str, key: str, allocation_id: str) -> Answer:
        return await self.inner.confirm(supplier_id, key, allocation_id)

    async def cancel(self, supplier_id: str, key: str, allocation_id: str) -> Answer:
        return await self.inner.cancel(supplier_id, key, allocation_id)

    async def stock(self, supplier_id: str, sku: str) -> StockQuote | None:
        return await self.inner.stock(supplier_id, sku)


async def serve(metrics: Metrics, host: str, port: int) -> asyncio.Server:
    """GET anything -> the Prometheus page; enough for a scraper, not a web server."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            await reader.readuntil(b"\r\n\r\n")
            body = metrics.prometheus()
            head = (
                f"HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        writer.close()

    try:
        return await asyncio.start_server(answer, host, port)
    except OSError as exc:
        raise FlashsaleError(f"metrics on {host}:{port}: {exc}") from exc
