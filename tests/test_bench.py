"""The benchmarks' baselines do real work: the PostgreSQL row lock sells each unit exactly once,
and the combined table reports figures only for benchmarks whose requests all succeeded."""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import pytest

from flashsale.engine import Settings
from flashsale.loadtests.bench import pg as bench_pg
from flashsale.loadtests.bench import suite as bench_suite
from flashsale.loadtests.bench.pg import SALE, SKU, RowLockShop, scratch_shop

UNITS, ATTEMPTS, POOL = 50, 200, 20


def _schema() -> str:
    return f"bench_pg_test_{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def shop(service_urls: dict[str, str]) -> AsyncIterator[RowLockShop]:
    async with scratch_shop(service_urls["FLASHSALE_DATABASE_URL"], POOL, UNITS, _schema()) as s:
        yield s


async def _schema_exists(url: str, schema: str) -> bool:
    conn = await asyncpg.connect(url)
    try:
        found = await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema)
    finally:
        await conn.close()
    return found is not None


@pytest.mark.parametrize("way", ["reserve", "reserve_one_statement"])
async def test_row_lock_sells_each_unit_exactly_once(shop: RowLockShop, way: str) -> None:
    reserve = getattr(shop, way)
    results = await asyncio.gather(*(reserve(SALE, SKU, 1, f"c{i}") for i in range(ATTEMPTS)))
    held = [r for r in results if r is not None]
    assert len(held) == UNITS
    assert len(set(held)) == UNITS
    stock = await shop.stock(SALE, SKU)
    assert (stock.available, stock.reserved, stock.holds, stock.held_units) == (0, 50, 50, 50)


async def test_sold_out_writes_nothing(shop: RowLockShop) -> None:
    assert await shop.reserve(SALE, SKU, UNITS + 1, "greedy") is None
    stock = await shop.stock(SALE, SKU)
    assert (stock.available, stock.reserved, stock.holds) == (UNITS, 0, 0)


async def test_pg_side_takes_one_unit_per_request(shop: RowLockShop) -> None:
    row = await bench_pg.pg_side(shop, shop.reserve, "row lock", 30, 8)
    stock = await shop.stock(SALE, SKU)
    assert (stock.available, stock.reserved, stock.holds) == (UNITS - 30, 30, 30)
    assert row.requests_per_s > 0 and row.p50_ms is not None and row.p99_ms is not None


async def test_pg_side_refuses_figures_when_requests_fail(shop: RowLockShop) -> None:
    with pytest.raises(RuntimeError, match="found no stock"):
        await bench_pg.pg_side(shop, shop.reserve, "row lock", UNITS + 10, 8)


async def test_bench_pg_reserves_on_both_sides_and_cleans_up(
    settings: Settings, service_urls: dict[str, str]
) -> None:
    schema = _schema()
    rows = await bench_pg.bench_pg(settings, 300, 60, 8, schema=schema)
    assert [r.name for r in rows] == [bench_pg.PG_ROW, bench_pg.PG_CTE_ROW, bench_pg.ENGINE_ROW]
    assert all(r.requests_per_s > 0 for r in rows)
    assert not await _schema_exists(service_urls["FLASHSALE_DATABASE_URL"], schema)


def _args(target: str) -> argparse.Namespace:
    return argparse.Namespace(
        target=target,
        requests=200,
        concurrency=8,
        seconds=1,
        connections=8,
        workers=1,
        events=50,
        feed_rows=500,
        feed_rate=500,
    )


async def test_suite_prints_one_table_with_machine_line(
    settings: Settings, service_urls: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert await bench_suite.run(settings, _args("pg")) == 0
    out = capsys.readouterr().out
    machine = next(line for line in out.splitlines() if line.startswith("machine: "))
    for part in ("cores", "Python", "Redis", "PostgreSQL", "UTC"):
        assert part in machine
    rows = [line for line in out.splitlines() if line.startswith("| Redis path vs postgres")]
    assert len(rows) == 3
    assert rows[0].endswith("| 1.00 (baseline) |")


async def test_suite_shows_no_figures_for_a_failed_bench(
    settings: Settings,
    service_urls: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def failing(*_args: Any, **_kwargs: Any) -> list[Any]:
        raise RuntimeError("3 requests failed")

    monkeypatch.setattr(bench_pg, "bench_pg", failing)
    assert await bench_suite.run(settings, _args("pg")) == 1
    out = capsys.readouterr().out
    assert "| Redis path vs postgres row lock | FAILED, no figures: RuntimeError: 3 requests" in out


async def test_feeds_bench_applies_both_ways_and_times_webhooks(
    settings: Settings, service_urls: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Small: 500 rows (50 skus x 10 suppliers), 500 webhook records in a second. The bench
    checks the offers itself and refuses figures when a row or a delivery went wrong."""
    assert await bench_suite.run(settings, _args("feeds")) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| supplier feed")]
    assert len(rows) == 6, out
    assert rows[0].endswith("| 1.00 (baseline) |") and "an adjust call per row, one at" in rows[0]
    assert "64 in flight" in rows[1]
    assert "an apply_feed call per 1000-row delivery and sale" in rows[2]
    assert "end to end: a delivery per row" in rows[3]
    assert "end to end: CSV files, deliveries of 1000 rows" in rows[4]
    cells = [c.strip() for c in rows[5].split("|")]
    assert cells[2].startswith("webhook -> visible in Redis") and cells[-2] == "-"
    assert float(cells[4]) > 0 and float(cells[5]) >= float(cells[4])  # p50, p99 in ms
    assert "500 rows = 50 skus x 10 suppliers" in out
    assert "apply_feed 10 calls" in out  # 10 suppliers x one 50-row delivery in one sale
