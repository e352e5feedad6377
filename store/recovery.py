"""What PostgreSQL remembers of a sale that Redis lost: its stock levels, its orders and its holds
journal, in the shapes `flashsale recover` writes back into Redis."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flashsale.store.db import Connection


@dataclass(frozen=True, slots=True)
class SupplierUnits:
    supplier_id: str
    sold: int
    adjusted: int


@dataclass(frozen=True, slots=True)
class RestoredHold:
    """A hold as PostgreSQL remembers it: from its order (confirmed or compensated) and its row
    in the holds journal, either of which may be missing (an order flushed before the journal
    existed; a hold that was never confirmed)."""

    hold_id: str
    customer_id: str
    lines: str  # sku:supplier:qty,... as lua/_shared.lua writes it
    status: str  # held, confirmed, released, expired, compensated
    created_at_ms: int
    expires_at_ms: int
    extended: bool
    idem_key: str  # '' = none
    fingerprint: str
    confirmed_at_ms: int  # 0 unless confirmed (or compensated)
    ended_at_ms: int  # released, expired, compensated: when; else 0
    payment: str

    @property
    def compensated(self) -> bool:
        return self.status == "compensated"


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

# Every held hold, and the others whose status came after $2 (ms since the epoch).
_JOURNAL = """
SELECT hold_id, customer_id, lines, status, idem_key, fingerprint, extended,
       (extract(epoch FROM status_at) * 1000)::bigint AS status_at_ms,
       (extract(epoch FROM created_at) * 1000)::bigint AS created_at_ms,
       (extract(epoch FROM expires_at) * 1000)::bigint AS expires_at_ms
FROM holds
WHERE sale_id = $1
  AND (status = 'held' OR status_at > 'epoch'::timestamptz + $2 * interval '1 millisecond')
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


async def holds_to_restore(conn: Connection, sale_id: str, since_ms: int) -> list[RestoredHold]:
    """Every order of the sale as a hold (its counters need them all), every held hold of the
    journal, and the journal's released and expired holds whose status came after `since_ms`."""
    journal = {r["hold_id"]: r for r in await conn.fetch(_JOURNAL, sale_id, since_ms)}
    orders = await conn.fetch(_ORDERS, sale_id)
    holds = [_from_order(r, journal.pop(r["order_id"], None)) for r in orders]
    # A confirmed or compensated row always has its order (one transaction writes both).
    ended = ("held", "released", "expired")
    return holds + [_from_journal(r) for r in journal.values() if r["status"] in ended]


def _from_order(order: Mapping[str, Any], row: Mapping[str, Any] | None) -> RestoredHold:
    """Without a journal row, the hold's expiry is not known; all that is known is that it came
    after the confirmation, which is what confirmed_at + 1 says."""
    at = int(order["confirmed_at_ms"] or 0)
    undone = bool(order["undone"])
    known = row or {}
    compensated_at = known.get("status_at_ms") if known.get("status") == "compensated" else None
    return RestoredHold(
        order["order_id"],
        order["customer_id"],
        known.get("lines") or order["lines"],
        "compensated" if undone else "confirmed",
        _or(known.get("created_at_ms"), at),
        _or(known.get("expires_at_ms"), at + 1),
        bool(known.get("extended", False)),
        known.get("idem_key", ""),
        known.get("fingerprint", ""),
        at,
        _or(compensated_at, at) if undone else 0,
        order["payment_ref"],
    )


def _from_journal(row: Mapping[str, Any]) -> RestoredHold:
    """A held, released or expired hold; one whose `reserved` never came is dated by its status."""
    at = int(row["status_at_ms"])
    return RestoredHold(
        row["hold_id"],
        row["customer_id"],
        row["lines"],
        row["status"],
        _or(row["created_at_ms"], at),
        _or(row["expires_at_ms"], at),
        bool(row["extended"]),
        row["idem_key"],
        row["fingerprint"],
        0,
        0 if row["status"] == "held" else at,
        "",
    )


def _or(value: Any, default: int) -> int:
    return default if value is None else int(value)
