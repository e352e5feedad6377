"""`flashsale bench feeds`, first half: stock files of N rows (N/10 SKUs x 10 suppliers, one CSV
per supplier; the SKUs on sale in N/10,000 sales of at most 1,000 items each), same run, same
sales, against the baseline the issue names: one `adjust` script call per row.

- script level (loadtests/bench/feed_scripts.py): the N rows with one `adjust` call each, one
  at a time and pipelined, and with `apply_feed` as the core calls it (a call per delivery of
  FLASHSALE_FEED_CHUNK_RECORDS rows and sale);
- end to end: one record per delivery through the whole core (a PostgreSQL transaction and an
  apply_feed call per row), and the CSV files the way the drop folder applies them (parse, one
  transaction per delivery, one apply_feed call per delivery and sale)."""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import time
from pathlib import Path

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints

from flashsale import services
from flashsale.engine import Code, Engine, ItemConfig, Settings, SupplierStockConfig
from flashsale.engine.feeds import (
    Delivery,
    FeedConfig,
    FeedRecord,
    SkuMapping,
    Thresholds,
    time_ms,
)
from flashsale.engine.sale import SaleRecord
from flashsale.loadtests.bench.feed_scripts import PIPELINED, Cell, ScriptTimes, bench_scripts
from flashsale.loadtests.simulators.feed_docs import Item, write_file
from flashsale.reconciler.cli import engine_for
from flashsale.reconciler.intake.files import FileRun, load
from flashsale.store.db import Connection
from flashsale.store.feed_intake import receive
from flashsale.store.feeds import save_feed
from flashsale.store.migrate import migrate
from flashsale.store.sales import save_sale, set_status

BENCH_SALE = "bench-feeds"  # + "-<n>": sale n offers skus n*1000 .. n*1000+999
ITEMS_PER_SALE = 1_000  # the most a sale holds
SUPPLIERS = tuple(f"bench-feed-{i}" for i in range(10))
LOADED = 1_000  # units each supplier offers of each sku
T_ROWS, T_FILES = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"  # the file rows are newer
PER_ROW_SHARE = 50  # the per-row side applies rows / PER_ROW_SHARE rows (it is far slower)


@dataclasses.dataclass(frozen=True, slots=True)
class FeedApplyBench:
    rows: int
    batched_s: float
    deliveries: int
    chunk: int
    per_row_rows: int
    per_row_s: float
    scripts: ScriptTimes

    ADJUST = "Redis: an adjust call per row, one at a time"
    ADJUST_PIPELINED = f"Redis: an adjust call per row, {PIPELINED} in flight"
    PER_ROW = "end to end: a delivery per row"

    @property
    def apply_feed_name(self) -> str:
        return f"Redis: an apply_feed call per {self.chunk}-row delivery and sale"

    @property
    def batched_name(self) -> str:
        return f"end to end: CSV files, deliveries of {self.chunk} rows"

    def rates(self) -> list[tuple[str, float]]:
        """(path, rows/s), the baseline (one adjust call per row) first."""
        t = self.scripts
        return [
            (self.ADJUST, self.rows / t.adjust_s),
            (self.ADJUST_PIPELINED, self.rows / t.pipelined_s),
            (self.apply_feed_name, self.rows / t.apply_feed_s),
            (self.PER_ROW, self.per_row_rows / self.per_row_s),
            (self.batched_name, self.rows / self.batched_s),
        ]

    def note(self) -> str:
        skus = self.rows // len(SUPPLIERS)
        sales = -(-skus // ITEMS_PER_SALE)
        t = self.scripts
        return (
            f"{self.rows} rows = {skus} skus x {len(SUPPLIERS)} suppliers (one CSV each, the "
            f"skus on {sales} sales); adjust per row {t.adjust_s:.1f} s, pipelined "
            f"{t.pipelined_s:.1f} s; apply_feed {t.apply_feed_calls} calls, "
            f"{t.apply_feed_s:.1f} s; end to end: {self.deliveries} deliveries, "
            f"{self.batched_s:.1f} s; a delivery per row: {self.per_row_rows} rows, "
            f"{self.per_row_s:.1f} s"
        )


def _skus(count: int) -> list[str]:
    return [f"F{n:06d}" for n in range(count)]


def sales_of(skus: list[str]) -> dict[str, list[str]]:
    """Sale id -> its skus, ITEMS_PER_SALE each."""
    return {
        f"{BENCH_SALE}-{n}": skus[start : start + ITEMS_PER_SALE]
        for n, start in enumerate(range(0, len(skus), ITEMS_PER_SALE))
    }


def cells_of(skus: list[str]) -> list[Cell]:
    """Every (supplier, sku) row of the files, supplier by supplier as the files hold them."""
    sale_of = {sku: sale for sale, its in sales_of(skus).items() for sku in its}
    return [
        Cell(sale_of[sku], sku, sup, n, k)
        for n, sup in enumerate(SUPPLIERS)
        for k, sku in enumerate(skus)
    ]


def _record(sale_id: str, skus: list[str]) -> SaleRecord:
    sups = tuple(SupplierStockConfig(s, LOADED, 500, i) for i, s in enumerate(SUPPLIERS))
    items = tuple(ItemConfig(sku, 1000, sups) for sku in skus)
    return SaleRecord(sale_id, "bench feeds", 0, 0, 3600, 0, items)


async def forget(
    engine: Engine, conn: Connection, sale_ids: list[str], suppliers: tuple[str, ...]
) -> None:
    """Nothing of an earlier run left, in Redis or PostgreSQL: the sales, and the feeds' levels,
    deliveries and config (a level left behind would be applied to the next run's sales)."""
    for sale_id in sale_ids:
        await engine.forget_sale(sale_id)
    sups = list(suppliers)
    tables = ("feed_quarantine", "feed_levels", "feed_deliveries", "supplier_sku_map")
    for table in (*tables, "feed_poll_leases", "supplier_feeds"):
        await conn.execute(f"DELETE FROM {table} WHERE supplier_id = ANY($1::text[])", sups)
    for table in ("stock_movements", "holds", "stock_levels", "supplier_skus", "skus", "sales"):
        await conn.execute(f"DELETE FROM {table} WHERE sale_id = ANY($1::text[])", sale_ids)


async def _earlier_sales(conn: Connection) -> list[str]:
    rows = await conn.fetch("SELECT sale_id FROM sales WHERE sale_id LIKE $1", BENCH_SALE + "-%")
    return [str(r["sale_id"]) for r in rows]


async def _prepare(engine: Engine, conn: Connection, skus: list[str]) -> None:
    await forget(engine, conn, await _earlier_sales(conn), SUPPLIERS)
    for sale_id, its_skus in sales_of(skus).items():
        record = _record(sale_id, its_skus)
        version = await save_sale(conn, record)
        loaded = await engine.load_sale(record.to_config(version))
        if loaded.code is not Code.OK:
            raise RuntimeError(f"bench sale did not load: {loaded}")
        await set_status(conn, sale_id, "open")
        await engine.set_status(sale_id, "open")
    loose = Thresholds(max_units=10**9, max_drop_pct=100, max_spike_pct=0)
    for sup in SUPPLIERS:
        mapping = {f"{sup}:{sku}": SkuMapping(sku) for sku in skus}
        await save_feed(conn, sup, sup, FeedConfig("file", "", 0, "csv", mapping, loose), None)
    # A real feed meets sales and maps configured long before, their statistics long since
    # gathered; right after this bulk load the planner would still believe the tables empty
    # and scan them until autovacuum gets round to them (~1 s deliveries instead of ~150 ms).
    await conn.execute("ANALYZE")


FILE_STEP = 7  # the files set sku k of supplier n to (k * FILE_STEP + n) % LOADED


def _write_files(folder: Path, skus: list[str]) -> list[Path]:
    def items(sup: str, n: int) -> list[Item]:
        return [{"supplier_sku": f"{sup}:{sku}", "on_hand": (k * FILE_STEP + n) % LOADED}
                for k, sku in enumerate(skus)]  # fmt: skip

    return [
        write_file(folder / f"{sup}.csv", "csv", items(sup, n)) for n, sup in enumerate(SUPPLIERS)
    ]


async def _per_row(engine: Engine, conn: Connection, skus: list[str], rows: int) -> float:
    """`rows` records of the first supplier, each its own delivery."""
    sup = SUPPLIERS[0]
    started = time.perf_counter()
    for k, sku in enumerate(skus[:rows]):
        record = FeedRecord(f"{sup}:{sku}", LOADED - 1, None, k)
        receipt = await receive(conn, engine, Delivery(sup, f"row-{k}", "file", T_ROWS, [record]))
        if receipt.applied != 1:
            raise RuntimeError(f"row {k} not applied: {receipt}")
    return time.perf_counter() - started


async def _batched(engine: Engine, conn: Connection, files: list[Path], chunk: int) -> FileRun:
    total = FileRun("", "csv")
    for sup, path in zip(SUPPLIERS, files, strict=True):
        run = await load(
            conn, engine, path, FileRun(sup, "csv", as_of=T_FILES), chunk_records=chunk
        )
        if run.counts["applied"] != run.records or run.malformed:
            raise RuntimeError(f"{path.name}: {run.report()}")
        total.records += run.records
        total.deliveries += run.deliveries
    return total


async def _check(engine: Engine, skus: list[str]) -> None:
    """The offers are what the files said (a few skus looked at)."""
    for k in (0, len(skus) // 2, len(skus) - 1):
        stock = await engine.stock(f"{BENCH_SALE}-{k // ITEMS_PER_SALE}")
        if stock is None:
            raise RuntimeError(f"the bench sale of sku {skus[k]} is gone")
        offers = {s.supplier: s.available for s in stock.sku(skus[k]).suppliers}
        want = {sup: (k * FILE_STEP + n) % LOADED for n, sup in enumerate(SUPPLIERS)}
        if offers != want:
            raise RuntimeError(f"sku {skus[k]}: offers {offers}, the files said {want}")


async def bench_feed_apply(settings: Settings, rows: int) -> FeedApplyBench:
    services.up(settings, log=lambda _line: None)
    skus = _skus(max(1, rows // len(SUPPLIERS)))
    per_row = max(1, min(len(skus), rows // PER_ROW_SHARE))
    chunk = settings.feed_chunk_records
    async with engine_for(settings) as engine:
        conn = await asyncpg.connect(settings.local_database_url, command_timeout=600)
        try:
            await migrate(conn)
            await _prepare(engine, conn, skus)
            with tempfile.TemporaryDirectory(prefix="flashsale-bench-feeds-") as tmp:
                files = await asyncio.to_thread(_write_files, Path(tmp), skus)
                per_row_s = await _per_row(engine, conn, skus, per_row)
                started = time.perf_counter()
                total = await _batched(engine, conn, files, chunk)
                batched_s = time.perf_counter() - started
            await _check(engine, skus)
            # After the end-to-end sides (as they ran before these were added): the script
            # sides write 3 x rows events, which would weigh on what runs after them.
            as_of_ms = time_ms(T_ROWS, "as_of")
            cells = cells_of(skus)
            scripts = await bench_scripts(engine, cells, FILE_STEP, LOADED, chunk, as_of_ms)
            await forget(engine, conn, list(sales_of(skus)), SUPPLIERS)
        finally:
            await conn.close()
    return FeedApplyBench(
        total.records, batched_s, total.deliveries, chunk, per_row, per_row_s, scripts
    )
