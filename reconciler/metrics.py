"""The reconciler's counters: a progress line for stderr and Prometheus text on a tiny endpoint."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, fields

from flashsale.engine.errors import FlashsaleError


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

    def observe_batch(self, size: int, flush_s: float, orders: int, dead: int) -> None:
        self.flushed_events += size
        self.orders += orders
        self.batches += 1
        self.last_batch_size = size
        self.flush_s_sum += flush_s
        self.last_flush_ms = flush_s * 1000
        self.max_flush_ms = max(self.max_flush_ms, self.last_flush_ms)
        self.dead_letters += dead

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

    def prometheus(self) -> str:
        out = []
        for f in fields(self):
            value = getattr(self, f.name)
            name = f"flashsale_reconciler_{f.name}"
            kind = "counter" if isinstance(value, int) and not _is_gauge(f.name) else "gauge"
            out += [f"# TYPE {name} {kind}", f"{name} {value}"]
        return "\n".join(out) + "\n"


def _is_gauge(name: str) -> bool:
    return name.startswith(("last_", "max_", "lag_", "owned_"))


async def serve(metrics: Metrics, port: int) -> asyncio.Server:
    """GET anything -> the Prometheus text; enough for a scraper, not a web server."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            await reader.readuntil(b"\r\n\r\n")
            body = metrics.prometheus().encode()
            head = (
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        writer.close()

    try:
        return await asyncio.start_server(answer, "127.0.0.1", port)
    except OSError as exc:
        raise FlashsaleError(f"metrics port {port}: {exc}") from exc
