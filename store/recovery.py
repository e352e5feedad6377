"""What PostgreSQL remembers of a sale that Redis lost: its stock levels and its orders, in the
shapes `flashsale recover` writes back into Redis."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from flashsale.engine.results import parse_allocations
from flashsale.store.db import Connection


@dataclass(frozen=True, slots=True)
class SupplierUnits:
    supplier_id: str
    sold: int
    adjusted: int


@dataclass(frozen=True, slots=True)
class RestoredHold:
    """A confirmed (or compensated) hold as PostgreSQL remembers its order."""

    hold_id: str
    customer_id: str
    lines: str  # sku:supplier:qty,... as lua/_shared.lua writes it
    confirmed_at_ms: int
    payment: str
    compensated: bool


_LEVELS = """
SELECT sku, supplier_id, sold, adjusted FROM stock_levels WHERE sale_id = $1
"""

# One row per order; `undone` = a compensation gave its units back.
_ORDERS = """
SELECT o.order_id, o.customer_id, o.payment_ref,
       (extract(epoch FROM o.confirmed_at) * 1000)::bigint AS confirmed_at_ms,
       EXISTS (SELECT 1 FROM stock_movements m
               WHERE m.kind = 'compensate' AND m.ref = o.order_id) AS undone,
       string_agg(l.sku || ':' || l.supplier_id || ':' || l.qty, ','
                  ORDER BY l.sku, l.supplier_id) AS lines
FROM orders o JOIN order_lines l USING (order_id)
WHERE o.sale_id = $1
GROUP BY o.order_id
"""


async def stock_units(
    conn: Connection, sale_id: str, skus: list[str]
) -> list[tuple[str, list[SupplierUnits]]]:
    """Per sku (in the given order), each supplier's sold and adjusted units."""
    by_sku: dict[str, list[SupplierUnits]] = {sku: [] for sku in skus}
    for r in await conn.fetch(_LEVELS, sale_id):
        if r["sku"] in by_sku:
            by_sku[r["sku"]].append(SupplierUnits(r["supplier_id"], r["sold"], r["adjusted"]))
    return [(sku, by_sku[sku]) for sku in skus]


async def orders_as_holds(
    conn: Connection, sale_id: str
) -> tuple[list[RestoredHold], dict[str, dict[str, int]]]:
    """Every order as a hold to write back, and per customer the units per sku still bought."""
    holds: list[RestoredHold] = []
    owned: defaultdict[str, dict[str, int]] = defaultdict(dict)
    for r in await conn.fetch(_ORDERS, sale_id):
        holds.append(
            RestoredHold(
                r["order_id"],
                r["customer_id"],
                r["lines"],
                int(r["confirmed_at_ms"] or 0),
                r["payment_ref"],
                bool(r["undone"]),
            )
        )
        if not r["undone"]:
            mine = owned[r["customer_id"]]
            for a in parse_allocations(r["lines"]):
                mine[a.sku] = mine.get(a.sku, 0) + a.qty
    return holds, dict(owned)
