"""The PostgreSQL side of `flashsale audit`: stock levels, ledger sums and order units of a sale."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from flashsale.store.db import Connection
from flashsale.store.feed_intake import SETTLED

Key = tuple[str, str]  # (sku, supplier_id)


@dataclass(frozen=True, slots=True)
class PgStock:
    loaded: int = 0
    adjusted: int = 0
    sold: int = 0


@dataclass(slots=True)
class Ledger:
    """Per (sku, supplier): sums of stock_movements by the sign convention of store/flush.py."""

    load: int = 0
    adjust: int = 0
    sold: int = 0  # confirm + compensate


_UNDONE = "EXISTS (SELECT 1 FROM stock_movements m WHERE m.kind = 'compensate' AND m.ref = {})"

_ORDER_UNITS = f"""
SELECT l.sku, l.supplier_id, sum(l.qty) AS qty
FROM order_lines l JOIN orders o USING (order_id)
WHERE o.sale_id = $1 AND NOT {_UNDONE.format("o.order_id")}
GROUP BY 1, 2
"""

_ORDERS = f"SELECT order_id, {_UNDONE.format('order_id')} AS undone FROM orders WHERE sale_id = $1"


async def stock_levels(conn: Connection, sale_id: str) -> dict[Key, PgStock]:
    rows = await conn.fetch(
        "SELECT sku, supplier_id, loaded, adjusted, sold FROM stock_levels WHERE sale_id = $1",
        sale_id,
    )
    return {
        (r["sku"], r["supplier_id"]): PgStock(r["loaded"], r["adjusted"], r["sold"]) for r in rows
    }


async def ledger_sums(conn: Connection, sale_id: str) -> dict[Key, Ledger]:
    rows = await conn.fetch(
        "SELECT sku, supplier_id, kind, sum(qty) AS qty FROM stock_movements "
        "WHERE sale_id = $1 GROUP BY 1, 2, 3",
        sale_id,
    )
    out: dict[Key, Ledger] = defaultdict(Ledger)
    for r in rows:
        sums = out[(r["sku"], r["supplier_id"])]
        if r["kind"] == "load":
            sums.load += r["qty"]
        elif r["kind"] == "adjust":
            sums.adjust += r["qty"]
        elif r["kind"] in ("confirm", "compensate"):
            sums.sold += r["qty"]
    return dict(out)


async def order_units(conn: Connection, sale_id: str) -> dict[Key, int]:
    """Units per (sku, supplier) in orders that no compensation undid."""
    rows = await conn.fetch(_ORDER_UNITS, sale_id)
    return {(r["sku"], r["supplier_id"]): int(r["qty"]) for r in rows}


async def orders_undone(conn: Connection, sale_id: str) -> dict[str, bool]:
    """Every order of the sale -> whether a compensation gave its units back."""
    return {str(r["order_id"]): bool(r["undone"]) for r in await conn.fetch(_ORDERS, sale_id)}


@dataclass(frozen=True, slots=True)
class FedLevel:
    """The newest stock feed level of one (sku, supplier) of a sale, and what the sale owes it."""

    on_hand: int
    allocated_since: int
    as_of_ms: int
    settled: int  # units sold from it that no longer wait for it (feed_intake.SETTLED)


_FED = """
SELECT l.sku, l.supplier_id, l.on_hand, l.allocated_since,
       (extract(epoch FROM l.as_of) * 1000)::bigint AS as_of_ms,
       coalesce((SELECT sum(a.qty) FROM order_allocations a JOIN orders o USING (order_id)
                 WHERE o.sale_id = m.sale_id AND a.sku = m.sku AND a.hold_supplier = m.supplier_id
                   AND a.status = ANY($2::text[])), 0)::bigint AS settled
FROM supplier_skus m JOIN feed_levels l USING (supplier_id, sku)
WHERE m.sale_id = $1
"""


async def fed_levels(conn: Connection, sale_id: str) -> dict[Key, FedLevel]:
    """(sku, supplier) -> its feed level, for the sale's suppliers that have one."""
    rows = await conn.fetch(_FED, sale_id, list(SETTLED))
    return {
        (r["sku"], r["supplier_id"]): FedLevel(
            r["on_hand"], r["allocated_since"], r["as_of_ms"], r["settled"]
        )
        for r in rows
    }
