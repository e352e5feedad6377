"""`flashsale bench feeds`, the script level: the same rows set in Redis with one `adjust` script
call per row (one at a time, then PIPELINED at a time through the engine's batcher) and with
`apply_feed` as the feed core calls it (one call per delivery of `chunk` rows and sale). Redis
alone: no parsing, no PostgreSQL. Each side checks the offers it set; the sales' event streams
are emptied after each, so Redis's memory (and what an AOF rewrite copies) stays small."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from flashsale.engine import Code, Engine, keys
from flashsale.engine.feeds import FeedRef, FeedRow

PIPELINED = 64  # adjust calls in flight on the pipelined side
REASON = "bench feeds: one adjust per row"


@dataclass(frozen=True, slots=True)
class Cell:
    """One row of a stock file as the bench places it: which sale offers the sku."""

    sale_id: str
    sku: str
    supplier_id: str
    n: int  # the supplier's index
    k: int  # the sku's index


@dataclass(frozen=True, slots=True)
class ScriptTimes:
    adjust_s: float  # one call per row, one at a time
    pipelined_s: float  # one call per row, PIPELINED in flight
    apply_feed_s: float  # one call per delivery and sale
    apply_feed_calls: int


def level(cell: Cell, step: int, loaded: int) -> int:
    """The offer a side sets for a cell: each side a different one, so each change is real."""
    return (cell.k * step + cell.n) % loaded


async def _adjust_all(
    engine: Engine, cells: list[Cell], before: int, step: int, loaded: int, in_flight: int
) -> float:
    """Every cell's offer from level(before) to level(step), one adjust call per cell,
    `in_flight` at a time."""

    async def one(cell: Cell) -> None:
        delta = level(cell, step, loaded) - level(cell, before, loaded)
        done = await engine.adjust(cell.sale_id, cell.sku, cell.supplier_id, delta, REASON)
        if done.code is not Code.OK or done.applied != delta:
            raise RuntimeError(f"adjust {cell}: {done}")

    started = time.perf_counter()
    await _bounded(cells, one, in_flight)
    return time.perf_counter() - started


async def _bounded(
    cells: list[Cell], call: Callable[[Cell], Awaitable[None]], in_flight: int
) -> None:
    for start in range(0, len(cells), in_flight):
        await asyncio.gather(*(call(cell) for cell in cells[start : start + in_flight]))


def deliveries(cells: list[Cell], chunk: int) -> list[tuple[str, list[Cell]]]:
    """The cells as the core applies a file: per supplier in chunks of `chunk` rows, each chunk
    one call per sale it touches. (sale, its cells) per call."""
    calls: list[tuple[str, list[Cell]]] = []
    by_supplier: dict[str, list[Cell]] = {}
    for cell in cells:
        by_supplier.setdefault(cell.supplier_id, []).append(cell)
    for rows in by_supplier.values():
        for start in range(0, len(rows), chunk):
            by_sale: dict[str, list[Cell]] = {}
            for cell in rows[start : start + chunk]:
                by_sale.setdefault(cell.sale_id, []).append(cell)
            calls += by_sale.items()
    return calls


async def _apply_feed_all(
    engine: Engine, cells: list[Cell], step: int, loaded: int, chunk: int, as_of_ms: int
) -> tuple[float, int]:
    calls = deliveries(cells, chunk)
    started = time.perf_counter()
    for i, (sale_id, part) in enumerate(calls):
        rows = [FeedRow(c.sku, c.supplier_id, level(c, step, loaded), 0) for c in part]
        changes = await engine.apply_feed(sale_id, rows, FeedRef("file", f"script-{i}", as_of_ms))
        if any(c.code != "OK" for c in changes):
            raise RuntimeError(f"apply_feed {sale_id}: {changes[:3]}")
    return time.perf_counter() - started, len(calls)


async def _check(engine: Engine, cells: list[Cell], step: int, loaded: int) -> None:
    """A few offers are what the side set; then the events it wrote are dropped."""
    for cell in (cells[0], cells[len(cells) // 2], cells[-1]):
        stock = await engine.stock(cell.sale_id)
        if stock is None:
            raise RuntimeError(f"the bench sale {cell.sale_id} is gone")
        offer = {s.supplier: s.available for s in stock.sku(cell.sku).suppliers}
        if offer[cell.supplier_id] != level(cell, step, loaded):
            raise RuntimeError(f"{cell}: offer {offer[cell.supplier_id]}, set {step}")
    for sale_id in sorted({c.sale_id for c in cells}):
        await engine.client.xtrim(keys.events(sale_id), maxlen=0)


async def bench_scripts(
    engine: Engine, cells: list[Cell], start: int, loaded: int, chunk: int, as_of_ms: int
) -> ScriptTimes:
    """The three sides one after another on sales whose offers stand at level(start)."""
    await _check(engine, cells, start, loaded)
    adjust_s = await _adjust_all(engine, cells, start, 3, loaded, 1)
    await _check(engine, cells, 3, loaded)
    pipelined_s = await _adjust_all(engine, cells, 3, 11, loaded, PIPELINED)
    await _check(engine, cells, 11, loaded)
    apply_s, calls = await _apply_feed_all(engine, cells, 5, loaded, chunk, as_of_ms)
    await _check(engine, cells, 5, loaded)
    return ScriptTimes(adjust_s, pipelined_s, apply_s, calls)
