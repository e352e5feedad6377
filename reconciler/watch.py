"""The watch job of `flashsale reconcile`: what only PostgreSQL and a full audit can tell, read on
a timer for /metrics and the alert rules — orders per saga state, dead saga steps waiting for an
operator, and the audit of every sale loaded in Redis (invariants 1-4, as `flashsale audit`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import asyncpg

from flashsale.engine import Engine, logs
from flashsale.reconciler.audit import audit
from flashsale.reconciler.metrics import Metrics
from flashsale.reconciler.worker import PG_DOWN, REDIS_DOWN
from flashsale.store.db import Connection
from flashsale.store.health import dead_steps, orders_by_status

log = logging.getLogger("flashsale.reconciler.watch")


@dataclass(frozen=True, slots=True)
class WatchConfig:
    database_url: str
    interval_s: float  # orders per state and dead steps
    audit_interval_s: float  # 0: no periodic audit
    only_sales: tuple[str, ...] | None = None  # None: every sale loaded in Redis


class Watch:
    def __init__(self, engine: Engine, config: WatchConfig, metrics: Metrics) -> None:
        self.engine = engine
        self.config = config
        self.metrics = metrics
        self._conn: Connection | None = None
        self._audit_due = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`; an unreachable Redis or PostgreSQL skips a round, and so does anything
        else that goes wrong (logged with its traceback): a frozen gauge would hide it."""
        try:
            while not stop.is_set():
                try:
                    await self.round()
                except (*PG_DOWN, *REDIS_DOWN) as exc:
                    await self._close()
                    log.warning(
                        "watch: skipped a round: %s: %s",
                        type(exc).__name__,
                        exc,
                        extra={"event": "watch.unavailable"},
                    )
                except Exception:
                    await self._close()
                    log.exception("watch: round failed", extra={"event": "watch.failed"})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.config.interval_s)
        finally:
            await self._close()

    async def round(self) -> None:
        conn = await self._connection()
        self.metrics.saga_orders = await orders_by_status(conn)
        self.metrics.saga_dead_open = await dead_steps(conn)
        if self.config.audit_interval_s and time.monotonic() >= self._audit_due:
            await self.audit_all(conn)
            self._audit_due = time.monotonic() + self.config.audit_interval_s

    async def audit_all(self, conn: Connection) -> None:
        """Every loaded sale, non-strict: events not yet flushed are not a mismatch. An audit that
        fails on a sale for another reason than Redis or PostgreSQL being away counts as one
        mismatch (logged): someone has to look at that sale."""
        found: dict[str, int] = {}
        for sale_id in self.config.only_sales or await self.engine.sale_ids():
            try:
                result = await audit(self.engine, conn, sale_id)
            except (*PG_DOWN, *REDIS_DOWN):
                raise
            except Exception:
                log.exception("audit of %s failed", sale_id, extra={"event": "audit.failed"})
                found[sale_id] = 1
                continue
            found[sale_id] = sum(len(v) for v in result.violations.values())
            if found[sale_id]:
                with logs.bind(sale_id=sale_id):
                    log.error(
                        "audit of %s: %d violations",
                        sale_id,
                        found[sale_id],
                        extra={"event": "audit.mismatch", "violations": found[sale_id]},
                    )
        self.metrics.audit_mismatches = found
        self.metrics.audit_last_run_s = time.time()

    async def _connection(self) -> Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self.config.database_url, timeout=10)
        return self._conn

    async def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(*PG_DOWN):
                await self._conn.close()
            self._conn = None
