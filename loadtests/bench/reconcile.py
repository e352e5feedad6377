"""`flashsale bench reconcile`: confirmations flushed per second, batched vs one per transaction."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any, cast

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints

from flashsale import services
from flashsale.engine import Code, Engine, ItemConfig, Settings, SupplierStockConfig, keys
from flashsale.engine.events import HoldEvent, decode
from flashsale.engine.sale import SaleRecord
from flashsale.reconciler.cli import engine_for
from flashsale.reconciler.config import ReconcilerConfig
from flashsale.reconciler.worker import Reconciler
from flashsale.store.db import Connection
from flashsale.store.migrate import migrate
from flashsale.store.sales import save_sale, set_status

BENCH_SALE = "bench-reconcile"
PRICE_MINOR, COST_MINOR = 1500, 900


def _record() -> SaleRecord:
    sups = (
        SupplierStockConfig("p", 10**9, COST_MINOR, 0),
        SupplierStockConfig("q", 10**9, COST_MINOR, 1),
    )
    return SaleRecord(BENCH_SALE, "bench", 0, 0, 3600, 0, (ItemConfig("hot", PRICE_MINOR, sups),))


async def _forget(engine: Engine, conn: Connection) -> None:
    """Nothing of an earlier run left, in Redis or PostgreSQL."""
    await engine.forget_sale(BENCH_SALE)
    sale = [BENCH_SALE]
    await conn.execute(
        "DELETE FROM order_lines WHERE order_id IN "
        "(SELECT order_id FROM orders WHERE sale_id = ANY($1::text[]))",
        sale,
    )
    tables = ("orders", "holds", "stock_movements", "stock_levels", "supplier_skus", "skus")
    for table in (*tables, "sales"):
        await conn.execute(f"DELETE FROM {table} WHERE sale_id = ANY($1::text[])", sale)


async def _unflush(conn: Connection) -> None:
    """Undo the flush of the baseline so the batched run writes the same rows into the same
    tables."""
    await conn.execute(
        "DELETE FROM order_lines l USING orders o WHERE o.order_id = l.order_id AND o.sale_id = $1",
        BENCH_SALE,
    )
    await conn.execute("DELETE FROM orders WHERE sale_id = $1", BENCH_SALE)
    await conn.execute("DELETE FROM holds WHERE sale_id = $1", BENCH_SALE)
    await conn.execute(
        "DELETE FROM stock_movements WHERE sale_id = $1 AND kind <> 'load'", BENCH_SALE
    )
    await conn.execute("UPDATE stock_levels SET sold = 0 WHERE sale_id = $1", BENCH_SALE)


async def _confirmations(engine: Engine, count: int) -> None:
    gate = asyncio.Semaphore(200)

    async def one(i: int) -> None:
        async with gate:
            held = await engine.reserve(BENCH_SALE, f"b{i}", [("hot", 1 + i % 2)])
            assert held.ok, held
            assert (await engine.confirm(BENCH_SALE, held.hold_id, "pay")).code is Code.OK

    await asyncio.gather(*(one(i) for i in range(count)))


_HELD = (
    "INSERT INTO holds (sale_id, hold_id, customer_id, lines, status, status_at, created_at, "
    "expires_at) VALUES ($1, $2, $3, $4, 'held', {at}, {at}, "
    "'epoch'::timestamptz + $6 * interval '1 millisecond') ON CONFLICT DO NOTHING"
).format(at="'epoch'::timestamptz + $5 * interval '1 millisecond'")
_CONFIRMED = (
    "UPDATE holds SET status = 'confirmed', "
    "status_at = 'epoch'::timestamptz + $3 * interval '1 millisecond' "
    "WHERE sale_id = $1 AND hold_id = $2"
)


async def _one_per_transaction(conn: Connection, events: list[HoldEvent]) -> float:
    """The naive flush: per event, one transaction of single-row statements; the same rows as
    the reconciler writes (a `reserved` opens the hold's journal row, a `confirmed` writes the
    order, its lines, ledger rows and stock levels, and closes the journal row)."""
    started = time.perf_counter()
    for e in events:
        lines = ",".join(f"{a.sku}:{a.supplier}:{a.qty}" for a in e.lines)
        if e.kind == "reserved":
            await conn.execute(
                _HELD, BENCH_SALE, e.hold_id, e.customer_id, lines, e.at_ms, e.expires_at_ms
            )
            continue
        async with conn.transaction():
            await conn.execute(_CONFIRMED, BENCH_SALE, e.hold_id, e.at_ms)
            total = sum(a.qty for a in e.lines) * PRICE_MINOR
            await conn.execute(
                "INSERT INTO orders (order_id, sale_id, customer_id, total_minor, event_id, "
                "confirmed_at, payment_ref) VALUES ($1, $2, $3, $4, $5, "
                "'epoch'::timestamptz + $6 * interval '1 millisecond', $7) "
                "ON CONFLICT DO NOTHING",
                e.hold_id, BENCH_SALE, e.customer_id, total, e.entry_id, e.at_ms, e.payment,
            )  # fmt: skip
            for a in e.lines:
                await conn.execute(
                    "INSERT INTO order_lines VALUES ($1, $2, $3, $4, $5, $6) "
                    "ON CONFLICT DO NOTHING",
                    e.hold_id, a.sku, a.supplier, a.qty, PRICE_MINOR, COST_MINOR,
                )  # fmt: skip
                await conn.execute(
                    "INSERT INTO stock_movements (sale_id, sku, supplier_id, kind, qty, ref) "
                    "VALUES ($1, $2, $3, 'confirm', $4, $5) ON CONFLICT DO NOTHING",
                    BENCH_SALE, a.sku, a.supplier, a.qty, e.hold_id,
                )  # fmt: skip
                await conn.execute(
                    "UPDATE stock_levels SET sold = sold + $3 "
                    "WHERE sale_id = $4 AND sku = $1 AND supplier_id = $2",
                    a.sku, a.supplier, a.qty, BENCH_SALE,
                )  # fmt: skip
    return time.perf_counter() - started


async def _prepare(engine: Engine, conn: Connection, count: int) -> list[HoldEvent]:
    await _forget(engine, conn)
    version = await save_sale(conn, _record())
    loaded = await engine.load_sale(_record().to_config(version))
    assert loaded.code is Code.OK, loaded
    await set_status(conn, BENCH_SALE, "open")
    await engine.set_status(BENCH_SALE, "open")
    await _confirmations(engine, count)
    entries = cast(list[Any], await engine.client.xrange(keys.events(BENCH_SALE)))
    events = decode([(str(i), dict(f)) for i, f in entries]).events
    return [e for e in events if isinstance(e, HoldEvent)]  # reserved and confirmed, in order


async def _batched(engine: Engine, settings: Settings) -> tuple[float, Reconciler]:
    config = ReconcilerConfig.from_settings(settings, only_sales=(BENCH_SALE,), progress_s=0)
    worker = Reconciler(engine, config, log=lambda _line: None)
    started = time.perf_counter()
    await worker.run(once=True)
    return time.perf_counter() - started, worker


@dataclasses.dataclass(frozen=True, slots=True)
class FlushBench:
    """One run of both flushes over the same confirmed events."""

    events: int
    naive_s: float
    batched_s: float
    batches: int
    mean_batch_ms: float
    max_batch_ms: float

    NAIVE = "one event per transaction (single-row statements)"
    BATCHED = "reconciler: stream read, batch flush (unnest), ack"

    def rates(self) -> list[tuple[str, float]]:
        """(path, events/s), the baseline first."""
        return [
            (self.NAIVE, self.events / self.naive_s),
            (self.BATCHED, self.events / self.batched_s),
        ]

    def note(self) -> str:
        mean = self.events / self.batches if self.batches else 0
        return (
            f"{self.events} events, {self.batches} batches (mean {mean:.0f} events, "
            f"mean transaction {self.mean_batch_ms:.1f} ms, max {self.max_batch_ms:.1f} ms)"
        )


def _result(count: int, naive_s: float, batched_s: float, worker: Reconciler) -> FlushBench:
    m = worker.metrics
    mean_ms = m.flush_s_sum * 1000 / m.batches if m.batches else 0
    return FlushBench(count, naive_s, batched_s, m.batches, mean_ms, m.max_flush_ms)


async def bench_reconcile(settings: Settings, count: int) -> FlushBench:
    """`count` confirmations flushed into PostgreSQL both ways, same run; the bench's rows are
    deleted again in Redis and PostgreSQL."""
    services.up(settings, log=lambda _line: None)
    settings = dataclasses.replace(settings, hold_retention_s=600)
    async with engine_for(settings) as engine:
        conn = await asyncpg.connect(settings.local_database_url)
        try:
            await migrate(conn)
            events = await _prepare(engine, conn, count)
            naive_s = await _one_per_transaction(conn, events)
            await _unflush(conn)
            batched_s, worker = await _batched(engine, settings)
            flushed = await conn.fetchval(
                "SELECT count(*) FROM orders WHERE sale_id = $1", BENCH_SALE
            )
            if flushed * 2 != len(events):
                raise RuntimeError(f"{flushed} orders for {len(events)} events")
            await _forget(engine, conn)
            return _result(len(events), naive_s, batched_s, worker)
        finally:
            await conn.close()
