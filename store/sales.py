"""The sale store: SaleRecords in PostgreSQL (sales, skus, suppliers, stock levels, load ledger)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flashsale.engine.errors import FlashsaleError
from flashsale.engine.sale import (
    ItemConfig,
    RateLimitConfig,
    SaleRecord,
    SupplierStockConfig,
    WaitingRoomConfig,
)
from flashsale.engine.validation import check_id, check_status
from flashsale.store.db import Connection, columns

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

Key = tuple[str, str]  # (sku, supplier_id)
Move = tuple[str, str, str, int]  # (sku, supplier_id, kind, qty) of a stock_movements row


class StoreConflict(FlashsaleError):
    """A replace would lose or undercut units already sold; nothing was written."""


@dataclass(frozen=True, slots=True)
class _Level:
    loaded: int
    adjusted: int
    sold: int


# --- conversions -------------------------------------------------------------------------------


def _at(ms: int) -> datetime:
    # timedelta arithmetic is exact; ms / 1000 as a float could land a microsecond off.
    return _EPOCH + ms * _MS


def _ms(at: datetime) -> int:
    return (at - _EPOCH) // _MS


def _config_json(config: WaitingRoomConfig | RateLimitConfig) -> str:
    # asyncpg sends jsonb as text unless the caller's connection has a codec; we do not assume one.
    return json.dumps(dataclasses.asdict(config))


def _known_fields(cls: type[Any], raw: str) -> dict[str, Any]:
    """Keys a newer writer may have added are dropped instead of breaking the constructor."""
    names = {field.name for field in dataclasses.fields(cls)}
    return {key: value for key, value in json.loads(raw).items() if key in names}


def _stock(record: SaleRecord) -> dict[Key, int]:
    return {(i.sku, s.supplier_id): s.stock for i in record.items for s in i.suppliers}


# --- save_sale ---------------------------------------------------------------------------------

_UPSERT_SALE = """
INSERT INTO sales AS s (sale_id, name, starts_at, ends_at, hold_ttl_s, per_user_limit,
                        waiting_room, rate_limit, return_url, credit_policy)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9, $10)
ON CONFLICT (sale_id) DO UPDATE SET
    name = EXCLUDED.name, starts_at = EXCLUDED.starts_at, ends_at = EXCLUDED.ends_at,
    hold_ttl_s = EXCLUDED.hold_ttl_s, per_user_limit = EXCLUDED.per_user_limit,
    waiting_room = EXCLUDED.waiting_room, rate_limit = EXCLUDED.rate_limit,
    return_url = EXCLUDED.return_url, credit_policy = EXCLUDED.credit_policy,
    config_version = s.config_version + 1, updated_at = now()
RETURNING config_version
"""


async def _upsert_sale(conn: Connection, record: SaleRecord) -> int:
    """Create (version 1, status scheduled) or replace (status kept); the new config_version."""
    version = await conn.fetchval(
        _UPSERT_SALE,
        record.sale_id,
        record.name,
        _at(record.starts_at_ms),
        _at(record.ends_at_ms) if record.ends_at_ms else None,
        record.hold_ttl_s,
        record.per_user_limit,
        _config_json(record.waiting_room),
        _config_json(record.rate_limit),
        record.return_url or None,
        record.credit_policy,
    )
    return int(version)


async def _insert_suppliers(conn: Connection, record: SaleRecord) -> None:
    # Sorted: concurrent saves of different sales then take supplier row locks in one order,
    # so two of them never wait on each other in a cycle.
    ids = sorted({s.supplier_id for item in record.items for s in item.suppliers})
    await conn.execute(
        "INSERT INTO suppliers (supplier_id, name) SELECT id, id FROM unnest($1::text[]) AS id "
        "ON CONFLICT (supplier_id) DO NOTHING",
        ids,
    )


async def _current_levels(conn: Connection, sale_id: str) -> dict[Key, _Level]:
    rows = await conn.fetch(
        "SELECT sku, supplier_id, loaded, adjusted, sold FROM stock_levels "
        "WHERE sale_id = $1 FOR UPDATE",
        sale_id,
    )
    return {
        (row["sku"], row["supplier_id"]): _Level(row["loaded"], row["adjusted"], row["sold"])
        for row in rows
    }


def _conflicts(current: dict[Key, _Level], stock: dict[Key, int]) -> list[str]:
    """Why the replace must be refused: sold units it would drop or push above the stock."""
    problems = []
    for (sku, supplier), level in sorted(current.items()):
        if (sku, supplier) not in stock and level.sold:
            problems.append(f"sku {sku} supplier {supplier}: dropped with {level.sold} sold")
        elif (sku, supplier) in stock and level.sold > stock[(sku, supplier)] + level.adjusted:
            problems.append(
                f"sku {sku} supplier {supplier}: stock {stock[(sku, supplier)]} "
                f"+ adjusted {level.adjusted} is below {level.sold} sold"
            )
    return problems


async def _drop_removed(conn: Connection, sale_id: str, removed: Sequence[Key]) -> None:
    """Delete stock rows, then mappings, then skus that the new record no longer has."""
    skus, suppliers = columns(removed, 2)
    pairs = "unnest($2::text[], $3::text[]) AS r(sku, supplier_id)"
    for table in ("stock_levels", "supplier_skus"):
        await conn.execute(
            f"DELETE FROM {table} t USING {pairs} "
            "WHERE t.sale_id = $1 AND t.sku = r.sku AND t.supplier_id = r.supplier_id",
            sale_id,
            skus,
            suppliers,
        )
    await conn.execute(
        "DELETE FROM skus k WHERE k.sale_id = $1 AND NOT EXISTS "
        "(SELECT 1 FROM supplier_skus m WHERE m.sale_id = k.sale_id AND m.sku = k.sku)",
        sale_id,
    )


_UPSERT_SKUS = """
INSERT INTO skus (sale_id, sku, price_minor, position, name)
SELECT $1, * FROM unnest($2::text[], $3::bigint[], $4::integer[], $5::text[])
ON CONFLICT (sale_id, sku) DO UPDATE SET
    price_minor = EXCLUDED.price_minor, position = EXCLUDED.position, name = EXCLUDED.name
"""

_UPSERT_SUPPLIER_SKUS = """
INSERT INTO supplier_skus (sale_id, sku, supplier_id, cost_minor, priority, position)
SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bigint[], $5::integer[], $6::integer[])
ON CONFLICT (sale_id, sku, supplier_id) DO UPDATE SET
    cost_minor = EXCLUDED.cost_minor, priority = EXCLUDED.priority, position = EXCLUDED.position
"""

# adjusted and sold belong to the reconciler's ledger; a replace only restates what was loaded.
_UPSERT_LEVELS = """
INSERT INTO stock_levels (sale_id, sku, supplier_id, loaded)
SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bigint[])
ON CONFLICT (sale_id, sku, supplier_id) DO UPDATE SET
    loaded = EXCLUDED.loaded, updated_at = now()
"""


async def _write_items(conn: Connection, record: SaleRecord) -> None:
    items = [(i.sku, i.price_minor, n, i.name or None) for n, i in enumerate(record.items)]
    mappings = [
        (i.sku, s.supplier_id, s.cost_minor, s.priority, n)
        for i in record.items
        for n, s in enumerate(i.suppliers)
    ]
    levels = [(sku, supplier, stock) for (sku, supplier), stock in _stock(record).items()]
    await conn.execute(_UPSERT_SKUS, record.sale_id, *columns(items, 4))
    await conn.execute(_UPSERT_SUPPLIER_SKUS, record.sale_id, *columns(mappings, 5))
    await conn.execute(_UPSERT_LEVELS, record.sale_id, *columns(levels, 3))


def _movements(current: dict[Key, _Level], stock: dict[Key, int]) -> list[Move]:
    """The ledger rows that bring each stock level's `loaded` to the new stock."""
    rows: list[Move] = []
    for key in sorted(current.keys() | stock.keys()):
        level = current.get(key, _Level(0, 0, 0))
        delta = stock.get(key, 0) - level.loaded
        if delta:
            rows.append((*key, "load", delta))
        if key not in stock and level.adjusted:
            # A dropped row takes its adjustments along; the ledger for it then sums to zero.
            rows.append((*key, "adjust", -level.adjusted))
    return rows


_INSERT_MOVEMENTS = """
INSERT INTO stock_movements (sale_id, sku, supplier_id, kind, qty, ref, reason)
SELECT $1, m.sku, m.supplier_id, m.kind, m.qty, $2, $3
FROM unnest($4::text[], $5::text[], $6::text[], $7::bigint[]) AS m(sku, supplier_id, kind, qty)
ON CONFLICT (kind, ref, sku, supplier_id) DO NOTHING
"""


async def _append_ledger(
    conn: Connection, sale_id: str, version: int, rows: Sequence[Move]
) -> None:
    if rows:
        ref, reason = f"{sale_id}:v{version}", f"sale config v{version}"
        await conn.execute(_INSERT_MOVEMENTS, sale_id, ref, reason, *columns(rows, 4))


async def save_sale(conn: Connection, record: SaleRecord) -> int:
    """Create or replace the sale with its items and stock; its new config_version.

    Runs in a savepoint of the caller's transaction (or its own when there is none), so a
    StoreConflict leaves the database as it was and the caller's transaction usable.
    """
    record.validate()
    stock = _stock(record)
    async with conn.transaction():
        # The sale row is locked first: concurrent saves of one sale run one after the other.
        version = await _upsert_sale(conn, record)
        current = await _current_levels(conn, record.sale_id)
        problems = _conflicts(current, stock)
        if problems:
            raise StoreConflict(f"sale {record.sale_id}: " + "; ".join(problems))
        await _insert_suppliers(conn, record)
        removed = sorted(current.keys() - stock.keys())
        if removed:
            await _drop_removed(conn, record.sale_id, removed)
        await _write_items(conn, record)
        await _append_ledger(conn, record.sale_id, version, _movements(current, stock))
    return version


# --- reading and status ------------------------------------------------------------------------

_SUPPLIERS = """
SELECT m.sku, m.supplier_id, l.loaded, m.cost_minor, m.priority
FROM supplier_skus m
JOIN stock_levels l USING (sale_id, sku, supplier_id)
WHERE m.sale_id = $1
ORDER BY m.sku, m.position
"""


async def _load_items(conn: Connection, sale_id: str) -> tuple[ItemConfig, ...]:
    skus = await conn.fetch(
        "SELECT sku, price_minor, name FROM skus WHERE sale_id = $1 ORDER BY position, sku",
        sale_id,
    )
    by_sku: dict[str, list[SupplierStockConfig]] = {row["sku"]: [] for row in skus}
    for row in await conn.fetch(_SUPPLIERS, sale_id):
        by_sku[row["sku"]].append(
            SupplierStockConfig(
                row["supplier_id"], row["loaded"], row["cost_minor"], row["priority"]
            )
        )
    return tuple(
        ItemConfig(row["sku"], row["price_minor"], tuple(by_sku[row["sku"]]), row["name"] or "")
        for row in skus
    )


def _record(row: Any, items: tuple[ItemConfig, ...]) -> SaleRecord:
    return SaleRecord(
        sale_id=row["sale_id"],
        name=row["name"],
        starts_at_ms=_ms(row["starts_at"]),
        ends_at_ms=_ms(row["ends_at"]) if row["ends_at"] is not None else 0,
        hold_ttl_s=row["hold_ttl_s"],
        per_user_limit=row["per_user_limit"],
        items=items,
        waiting_room=WaitingRoomConfig(**_known_fields(WaitingRoomConfig, row["waiting_room"])),
        rate_limit=RateLimitConfig(**_known_fields(RateLimitConfig, row["rate_limit"])),
        return_url=row["return_url"] or "",
        credit_policy=row["credit_policy"],
    )


async def load_sale_record(conn: Connection, sale_id: str) -> tuple[SaleRecord, int, str] | None:
    """The stored record, its config_version and its status; None when there is no such sale."""
    async with conn.transaction():
        # FOR SHARE waits out a save in flight and holds off the next one (it must lock this
        # row first), so the items read below belong to the version read here.
        row = await conn.fetchrow("SELECT * FROM sales WHERE sale_id = $1 FOR SHARE", sale_id)
        if row is None:
            return None
        items = await _load_items(conn, sale_id)
    return _record(row, items), int(row["config_version"]), str(row["status"])


async def set_status(conn: Connection, sale_id: str, status: str) -> bool:
    """Change the sale's status; False when there is no such sale."""
    check_id("sale_id", sale_id)
    check_status(status)
    done = await conn.execute(
        "UPDATE sales SET status = $2, updated_at = now() WHERE sale_id = $1", sale_id, status
    )
    return str(done) == "UPDATE 1"


async def sale_ids(conn: Connection) -> list[str]:
    rows = await conn.fetch("SELECT sale_id FROM sales ORDER BY sale_id")
    return [str(row["sale_id"]) for row in rows]


async def recent_sales(conn: Connection, limit: int) -> list[Any]:
    """The newest sales first (the operator console's list): id, name, status, start."""
    return list(
        await conn.fetch(
            "SELECT sale_id, name, status, starts_at FROM sales "
            "ORDER BY created_at DESC, sale_id LIMIT $1",
            limit,
        )
    )


_ROOM_SALES = """
SELECT sale_id FROM sales
WHERE status <> 'closed' AND (ends_at IS NULL OR ends_at > now())
  AND (waiting_room->>'enabled')::boolean
ORDER BY sale_id
"""


async def room_sale_ids(conn: Connection) -> list[str]:
    """Sales with a waiting room that are not closed or over: the rooms to run."""
    return [str(row["sale_id"]) for row in await conn.fetch(_ROOM_SALES)]
