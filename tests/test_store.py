"""reconciler.migrate and reconciler.store against the project's real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import pytest

from flashsale.engine.errors import InvalidInput
from flashsale.engine.sale import (
    ItemConfig,
    RateLimitConfig,
    SaleRecord,
    SupplierStockConfig,
    WaitingRoomConfig,
)
from flashsale.store.db import Connection
from flashsale.store.migrate import migrate, migrate_url, migrations
from flashsale.store.sales import StoreConflict, load_sale_record, sale_ids, save_sale, set_status

Stock = dict[str, list[tuple[str, int]]]  # sku -> [(supplier, units)] in the order given
Key = tuple[str, str]

STOCK: Stock = {"A": [("p", 60), ("q", 40)], "B": [("q", 5), ("p", 7)]}
SALE_TABLES = ("sales", "skus", "supplier_skus", "stock_levels", "stock_movements")


def record(sale_id: str, stock: Stock = STOCK, *, name: str = "Launch") -> SaleRecord:
    """Supplier priorities tie on B, so only the stored order can give the order back."""
    items = tuple(
        ItemConfig(
            sku,
            1000 + n,
            tuple(
                SupplierStockConfig(sup, units, 400 + j, 0 if sku == "B" else 5 - j)
                for j, (sup, units) in enumerate(sups)
            ),
        )
        for n, (sku, sups) in enumerate(stock.items())
    )
    return SaleRecord(
        sale_id=sale_id,
        name=name,
        starts_at_ms=1_700_000_000_123,
        ends_at_ms=1_700_003_600_456,
        hold_ttl_s=300,
        per_user_limit=2,
        items=items,
        waiting_room=WaitingRoomConfig(True, 20, 100, 120),
        rate_limit=RateLimitConfig(5, 10, None),
    )


@pytest.fixture
async def schema(test_url: str) -> AsyncIterator[str]:
    """A fresh empty schema, dropped afterwards, so migrations start from nothing."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(test_url)
    try:
        await admin.execute(f"CREATE SCHEMA {name}")
        yield name
        await admin.execute(f"DROP SCHEMA {name} CASCADE")
    finally:
        await admin.close()


async def connect_to(url: str, schema: str) -> Connection:
    return await asyncpg.connect(url, server_settings={"search_path": schema})


async def rows(conn: Connection, sale_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of the sale in every table save_sale writes, for 'nothing changed' checks."""
    out = {}
    for table in SALE_TABLES:
        found = await conn.fetch(
            f"SELECT * FROM {table} WHERE sale_id = $1 ORDER BY 1, 2, 3", sale_id
        )
        out[table] = [dict(row) for row in found]
    return out


async def levels(conn: Connection, sale_id: str) -> dict[Key, tuple[int, int, int]]:
    found = await conn.fetch(
        "SELECT sku, supplier_id, loaded, adjusted, sold FROM stock_levels WHERE sale_id = $1",
        sale_id,
    )
    return {(r["sku"], r["supplier_id"]): (r["loaded"], r["adjusted"], r["sold"]) for r in found}


async def ledger(conn: Connection, sale_id: str, kind: str, ref: str = "%") -> dict[Key, int]:
    """Per (sku, supplier): the sum of the movements of one kind, optionally of one ref."""
    found = await conn.fetch(
        "SELECT sku, supplier_id, sum(qty) AS qty FROM stock_movements "
        "WHERE sale_id = $1 AND kind = $2 AND ref LIKE $3 GROUP BY 1, 2",
        sale_id,
        kind,
        ref,
    )
    return {(r["sku"], r["supplier_id"]): r["qty"] for r in found}


async def sell(conn: Connection, sale_id: str, sku: str, supplier: str, units: int) -> None:
    """What the reconciler's flush does to a stock level, minus the order rows."""
    await conn.execute(
        "UPDATE stock_levels SET sold = sold + $4 "
        "WHERE sale_id = $1 AND sku = $2 AND supplier_id = $3",
        sale_id,
        sku,
        supplier,
        units,
    )


# --- migrate -----------------------------------------------------------------------------------


async def test_migrations_are_packaged_in_version_order() -> None:
    versions = [m.version for m in migrations()]
    assert versions[0] == 1
    assert versions == sorted(set(versions))


async def test_migrate_twice_applies_once(test_url: str, schema: str) -> None:
    conn = await connect_to(test_url, schema)
    try:
        assert await migrate(conn) == [m.version for m in migrations()]
        assert await migrate(conn) == []
        recorded = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY 1")
        assert [(r["version"], r["name"]) for r in recorded] == [
            (m.version, m.name) for m in migrations()
        ]
        assert await conn.fetchval("SELECT count(*) FROM sales") == 0
    finally:
        await conn.close()


async def test_concurrent_migrations_apply_exactly_once(test_url: str, schema: str) -> None:
    conns = [await connect_to(test_url, schema) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        assert sorted(results) == [[], [], [], [m.version for m in migrations()]]
        assert await conns[0].fetchval("SELECT count(*) FROM schema_migrations") == len(
            migrations()
        )
    finally:
        await asyncio.gather(*(c.close() for c in conns))


async def test_migrate_url_is_a_no_op_when_up_to_date(conn: Connection, test_url: str) -> None:
    assert await migrate_url(test_url) == []


# --- save and load -----------------------------------------------------------------------------


async def test_save_then_load_gives_the_record_back(conn: Connection, sale_id: str) -> None:
    sale = record(sale_id)
    assert await save_sale(conn, sale) == 1
    assert await load_sale_record(conn, sale_id) == (sale, 1, "scheduled")
    expected = {("A", "p"): 60, ("A", "q"): 40, ("B", "q"): 5, ("B", "p"): 7}
    assert await levels(conn, sale_id) == {key: (n, 0, 0) for key, n in expected.items()}
    assert await ledger(conn, sale_id, "load", f"{sale_id}:v1") == expected


async def test_a_sale_without_end_reads_back_without_end(conn: Connection, sale_id: str) -> None:
    sale = SaleRecord(sale_id, "Open-ended", 0, 0, 60, 0, record(sale_id).items)
    await save_sale(conn, sale)
    assert await load_sale_record(conn, sale_id) == (sale, 1, "scheduled")


async def test_unknown_sale_loads_as_none(conn: Connection, sale_id: str) -> None:
    assert await load_sale_record(conn, sale_id) is None


async def test_replace_restates_loaded_and_keeps_sold(conn: Connection, sale_id: str) -> None:
    await save_sale(conn, record(sale_id))
    await set_status(conn, sale_id, "open")
    await sell(conn, sale_id, "A", "p", 3)
    changed = {"A": [("p", 70), ("q", 40)], "B": [("q", 20), ("p", 1)]}
    assert await save_sale(conn, record(sale_id, changed, name="Relaunch")) == 2
    assert await load_sale_record(conn, sale_id) == (
        record(sale_id, changed, name="Relaunch"),
        2,
        "open",
    )
    assert await levels(conn, sale_id) == {
        ("A", "p"): (70, 0, 3),
        ("A", "q"): (40, 0, 0),
        ("B", "q"): (20, 0, 0),
        ("B", "p"): (1, 0, 0),
    }
    v2 = {("A", "p"): 10, ("B", "q"): 15, ("B", "p"): -6}
    assert await ledger(conn, sale_id, "load", f"{sale_id}:v2") == v2
    loaded = {key: level[0] for key, level in (await levels(conn, sale_id)).items()}
    assert await ledger(conn, sale_id, "load") == loaded


async def test_dropping_unsold_rows_zeroes_their_ledger(conn: Connection, sale_id: str) -> None:
    await save_sale(conn, record(sale_id))
    # An earlier supplier-feed adjustment on the row about to go, as the reconciler records it.
    await conn.execute(
        "UPDATE stock_levels SET adjusted = -2 "
        "WHERE sale_id = $1 AND sku = 'A' AND supplier_id = 'q'",
        sale_id,
    )
    await conn.execute(
        "INSERT INTO stock_movements (sale_id, sku, supplier_id, kind, qty, ref) "
        "VALUES ($1, 'A', 'q', 'adjust', -2, $2)",
        sale_id,
        f"feed-{sale_id}",
    )
    smaller = record(sale_id, {"A": [("p", 60)]})
    assert await save_sale(conn, smaller) == 2
    assert await load_sale_record(conn, sale_id) == (smaller, 2, "scheduled")
    assert await levels(conn, sale_id) == {("A", "p"): (60, 0, 0)}
    loads = await ledger(conn, sale_id, "load")
    assert loads == {("A", "p"): 60, ("A", "q"): 0, ("B", "q"): 0, ("B", "p"): 0}
    assert await ledger(conn, sale_id, "adjust") == {("A", "q"): 0}


async def test_dropping_a_sold_supplier_conflicts_and_changes_nothing(
    conn: Connection, sale_id: str
) -> None:
    await save_sale(conn, record(sale_id))
    await sell(conn, sale_id, "A", "q", 3)
    before = await rows(conn, sale_id)
    with pytest.raises(StoreConflict, match="sku A supplier q: dropped with 3 sold"):
        await save_sale(conn, record(sale_id, {"A": [("p", 60)], "B": [("q", 5), ("p", 7)]}))
    assert await rows(conn, sale_id) == before


async def test_a_conflict_leaves_the_callers_transaction_usable(
    conn: Connection, sale_id: str
) -> None:
    await save_sale(conn, record(sale_id))
    await sell(conn, sale_id, "B", "p", 7)
    before = await rows(conn, sale_id)
    transaction = conn.transaction()
    await transaction.start()
    try:
        await set_status(conn, sale_id, "paused")
        with pytest.raises(StoreConflict, match="sku B supplier p"):
            await save_sale(conn, record(sale_id, {"A": [("p", 60), ("q", 40)]}))
        # Only save_sale's savepoint was undone: the caller's earlier write is still there.
        assert (await load_sale_record(conn, sale_id) or (None, 0, ""))[1:] == (1, "paused")
    finally:
        await transaction.rollback()
    assert await rows(conn, sale_id) == before


async def test_stock_below_sold_conflicts(conn: Connection, sale_id: str) -> None:
    await save_sale(conn, record(sale_id))
    await sell(conn, sale_id, "A", "p", 30)
    before = await rows(conn, sale_id)
    lower = {"A": [("p", 29), ("q", 40)], "B": [("q", 5), ("p", 7)]}
    with pytest.raises(StoreConflict, match="sku A supplier p: stock 29"):
        await save_sale(conn, record(sale_id, lower))
    assert await rows(conn, sale_id) == before


async def test_concurrent_saves_get_one_version_each(
    test_url: str, conn: Connection, sale_id: str
) -> None:
    conns = [await asyncpg.connect(test_url) for _ in range(8)]
    try:
        stocks = [{"A": [("p", 10 * n), ("q", n)]} for n in range(1, 9)]
        versions = await asyncio.gather(
            *(save_sale(c, record(sale_id, s)) for c, s in zip(conns, stocks, strict=True))
        )
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    assert sorted(versions) == list(range(1, 9))
    last = stocks[versions.index(8)]
    assert await load_sale_record(conn, sale_id) == (record(sale_id, last), 8, "scheduled")
    loaded = {key: level[0] for key, level in (await levels(conn, sale_id)).items()}
    assert await ledger(conn, sale_id, "load") == loaded


async def test_an_invalid_record_is_refused_before_any_write(
    conn: Connection, sale_id: str
) -> None:
    with pytest.raises(InvalidInput):
        await save_sale(conn, record(sale_id, {"A": [("p", -1)]}))
    assert await load_sale_record(conn, sale_id) is None


# --- status and listing ------------------------------------------------------------------------


async def test_set_status(conn: Connection, sale_id: str) -> None:
    await save_sale(conn, record(sale_id))
    assert await set_status(conn, sale_id, "open") is True
    assert (await load_sale_record(conn, sale_id) or (None, 0, ""))[2] == "open"
    assert await set_status(conn, sale_id, "closed") is True
    assert (await load_sale_record(conn, sale_id) or (None, 0, ""))[1:] == (1, "closed")
    assert await set_status(conn, f"missing-{sale_id}"[:64], "open") is False
    with pytest.raises(InvalidInput):
        await set_status(conn, sale_id, "running")


async def test_sale_ids_lists_saved_sales(conn: Connection, sale_id: str) -> None:
    await save_sale(conn, record(f"{sale_id}-1"))
    await save_sale(conn, record(f"{sale_id}-2"))
    found = await sale_ids(conn)
    assert [s for s in found if s.startswith(sale_id)] == [f"{sale_id}-1", f"{sale_id}-2"]
    assert found == sorted(found)
