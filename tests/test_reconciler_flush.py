"""reconciler.flush against the real PostgreSQL: idempotent batches, ledger = stock levels."""

from __future__ import annotations

from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import pytest

from flashsale.engine.events import AdjustEvent, Event, parse
from flashsale.store.db import Connection
from flashsale.store.flush import FlushRefused, flush
from flashsale.store.sales import save_sale
from tests.reconciler_support import record

STOCK = {"A": [("p", 10), ("q", 10)], "B": [("q", 5)]}
TABLES = ("orders", "stock_movements", "stock_levels")


def hold(sale_id: str, entry: str, kind: str, name: str, lines: str, **extra: str) -> Event:
    fields = {"type": kind, "hold": tag(sale_id, name), "user": "c1", "lines": lines}
    return parse(entry, {**fields, "at_ms": "1000", **extra})


def tag(sale_id: str, name: str) -> str:
    """Hold ids are random, so unique across sales, in production; here the sale's own uuid
    part keeps them apart."""
    return f"{sale_id[-8:]}-{name}"


async def snapshot(conn: Connection, sale_id: str) -> dict[str, list[dict[str, Any]]]:
    out = {
        table: [
            dict(r)
            for r in await conn.fetch(
                f"SELECT * FROM {table} WHERE sale_id = $1 ORDER BY 1, 2, 3", sale_id
            )
        ]
        for table in TABLES
    }
    out["order_lines"] = [
        dict(r)
        for r in await conn.fetch(
            "SELECT l.* FROM order_lines l JOIN orders o USING (order_id) "
            "WHERE o.sale_id = $1 ORDER BY 1, 2, 3",
            sale_id,
        )
    ]
    return out


async def levels(conn: Connection, sale_id: str) -> dict[tuple[str, str], tuple[int, int]]:
    rows = await conn.fetch(
        "SELECT sku, supplier_id, adjusted, sold FROM stock_levels WHERE sale_id = $1", sale_id
    )
    return {(r["sku"], r["supplier_id"]): (r["adjusted"], r["sold"]) for r in rows}


async def ledger_sums(conn: Connection, sale_id: str) -> dict[tuple[str, str], tuple[int, int]]:
    """(sum of adjust rows, sum of confirm + compensate rows) per (sku, supplier)."""
    rows = await conn.fetch(
        "SELECT sku, supplier_id, "
        "coalesce(sum(qty) FILTER (WHERE kind = 'adjust'), 0) AS adjusted, "
        "coalesce(sum(qty) FILTER (WHERE kind IN ('confirm', 'compensate')), 0) AS sold "
        "FROM stock_movements WHERE sale_id = $1 GROUP BY 1, 2",
        sale_id,
    )
    return {(r["sku"], r["supplier_id"]): (r["adjusted"], r["sold"]) for r in rows}


async def test_a_replayed_batch_changes_nothing(conn: Connection, sale_id: str) -> None:
    await save_sale(conn, record(sale_id, STOCK))
    batch = [
        hold(sale_id, "1-0", "confirmed", "h1", "A:p:2,A:q:1", payment="tok-1"),
        hold(sale_id, "2-0", "confirmed", "h2", "B:q:3"),
        hold(sale_id, "3-0", "released", "h3", "A:p:1"),
        hold(sale_id, "4-0", "expired", "h4", "B:q:1"),
        hold(sale_id, "5-0", "compensated", "h2", "B:q:3", reason="declined"),
        AdjustEvent("6-0", "A", "q", 4, 4, 0, "restock", 1000),
        hold(sale_id, "7-0", "confirmed", "h5", "A:q:5"),
    ]
    first = await flush(conn, sale_id, batch)
    assert (first.orders, first.movements, first.orphans) == (3, 8, [])
    after = await snapshot(conn, sale_id)
    again = await flush(conn, sale_id, batch)
    assert (again.orders, again.movements, again.orphans) == (0, 0, [])
    assert await snapshot(conn, sale_id) == after

    assert await levels(conn, sale_id) == {
        ("A", "p"): (0, 2),
        ("A", "q"): (4, 6),
        ("B", "q"): (0, 0),
    }
    assert await ledger_sums(conn, sale_id) == await levels(conn, sale_id)
    orders = {r["order_id"]: r for r in after["orders"]}
    assert orders[tag(sale_id, "h1")]["total_minor"] == 3 * 1000
    assert orders[tag(sale_id, "h1")]["payment_ref"] == "tok-1"
    # A new order waits for its saga; a compensation is the ledger's, the status the saga's.
    assert orders[tag(sale_id, "h5")]["status"] == "PENDING"
    assert orders[tag(sale_id, "h5")]["next_step"] == "payment.authorize"
    undone = {r["ref"] for r in after["stock_movements"] if r["kind"] == "compensate"}
    assert tag(sale_id, "h2") in undone and tag(sale_id, "h5") not in undone
    assert [
        (r["order_id"], r["sku"], r["supplier_id"], r["qty"], r["cost_minor"])
        for r in after["order_lines"]
    ] == [
        (tag(sale_id, "h1"), "A", "p", 2, 400),
        (tag(sale_id, "h1"), "A", "q", 1, 410),
        (tag(sale_id, "h2"), "B", "q", 3, 400),
        (tag(sale_id, "h5"), "A", "q", 5, 410),
    ]


async def test_a_batch_split_anywhere_ends_the_same(conn: Connection, sale_id: str) -> None:
    """Crash-and-replay of overlapping batches: every prefix applied twice, then the rest."""
    await save_sale(conn, record(sale_id, STOCK))
    batch = [hold(sale_id, f"{i}-0", "confirmed", f"h{i}", f"A:{'pq'[i % 2]}:1") for i in range(8)]
    batch.append(hold(sale_id, "9-0", "compensated", "h3", "A:q:1"))
    for end in range(1, len(batch) + 1):
        await flush(conn, sale_id, batch[: end // 2])
        await flush(conn, sale_id, batch[:end])
    assert await levels(conn, sale_id) == {
        ("A", "p"): (0, 4),
        ("A", "q"): (0, 3),
        ("B", "q"): (0, 0),
    }
    assert await conn.fetchval("SELECT count(*) FROM orders WHERE sale_id = $1", sale_id) == 8


async def test_a_compensation_without_its_order_is_an_orphan(
    conn: Connection, sale_id: str
) -> None:
    await save_sale(conn, record(sale_id, STOCK))
    result = await flush(conn, sale_id, [hold(sale_id, "1-0", "compensated", "ghost", "A:p:1")])
    assert result.orphans == [
        ("1-0", f"compensation of hold {tag(sale_id, 'ghost')}, which has no order")
    ]
    assert result.movements == 0
    assert await levels(conn, sale_id) == {
        ("A", "p"): (0, 0),
        ("A", "q"): (0, 0),
        ("B", "q"): (0, 0),
    }


async def test_unknown_stock_is_refused_and_nothing_is_written(
    conn: Connection, sale_id: str
) -> None:
    await save_sale(conn, record(sale_id, STOCK))
    before = await snapshot(conn, sale_id)
    with pytest.raises(FlushRefused, match="no sku B at supplier p"):
        await flush(
            conn,
            sale_id,
            [
                hold(sale_id, "1-0", "confirmed", "ok", "A:p:1"),
                hold(sale_id, "2-0", "confirmed", "bad", "B:p:1"),
            ],
        )
    with pytest.raises(FlushRefused, match="stock level"):
        await flush(conn, sale_id, [AdjustEvent("3-0", "Z", "p", 1, 1, 0, "", 1)])
    assert await snapshot(conn, sale_id) == before


async def test_an_order_id_of_another_sale_is_refused(conn: Connection, sale_id: str) -> None:
    await save_sale(conn, record(sale_id, STOCK))
    await save_sale(conn, record(sale_id + "-2", STOCK))
    await flush(conn, sale_id, [hold(sale_id, "1-0", "confirmed", "same", "A:p:1")])
    with pytest.raises(FlushRefused, match="belongs to another sale"):
        await flush(conn, sale_id + "-2", [hold(sale_id, "1-0", "confirmed", "same", "A:p:1")])


async def test_adjustments_of_two_sales_with_the_same_entry_id_both_count(
    conn: Connection, sale_id: str
) -> None:
    """Entry ids are per stream: two sales' adjustments in the same ms share one."""
    await save_sale(conn, record(sale_id, STOCK))
    await save_sale(conn, record(sale_id + "-2", STOCK))
    for sale in (sale_id, sale_id + "-2"):
        await flush(conn, sale, [AdjustEvent("5-0", "A", "p", 2, 2, 0, "", 1)])
        assert (await levels(conn, sale))[("A", "p")] == (2, 0)


async def test_overselling_in_postgresql_is_refused(conn: Connection, sale_id: str) -> None:
    """stock_levels' CHECK (sold <= loaded + adjusted) is a data error: the entry at fault goes
    to the dead letters (worker._flush) instead of blocking the stream."""
    await save_sale(conn, record(sale_id, STOCK))
    with pytest.raises(asyncpg.CheckViolationError):
        await flush(conn, sale_id, [hold(sale_id, "1-0", "confirmed", "big", "B:q:6")])
