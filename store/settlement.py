"""A sale's settlement: what its orders brought in, paid back and cost, the credits owed to the
retailer, and the net, from PostgreSQL alone (docs/saga.md#returns-credit-and-settlement)."""

from __future__ import annotations

from typing import Any

from flashsale.store import retailer_ledger
from flashsale.store.db import Connection

# Orders whose units never left: their lines count as cancelled, not sold.
UNDONE = ("PAYMENT_FAILED", "CANCELLED")

_ORDERS = """
SELECT status, count(*) AS orders, coalesce(sum(captured_minor), 0) AS captured,
       coalesce(sum(refunded_minor), 0) AS refunded
FROM orders WHERE sale_id = $1 GROUP BY status ORDER BY status
"""
# A line's units are sold unless cancelled (some of them, the line, or its whole order undone);
# the sold ones cost the retailer their supplier's price once the supplier's lock was firm.
_LINES = """
SELECT CASE WHEN a.status = 'cancelled' OR o.status = ANY($2::text[]) THEN a.qty
            ELSE a.cancelled_qty END AS cancelled,
       a.qty, a.confirmed, a.supplier_id, a.cost_minor, a.planned_margin_minor, a.margin_minor
FROM order_allocations a JOIN orders o USING (order_id)
WHERE o.sale_id = $1
"""
_RETURNED = """
SELECT coalesce(sum(l.qty), 0) AS returned, coalesce(sum(l.restocked_qty), 0) AS restocked
FROM return_lines l JOIN returns r ON r.id = l.return_id WHERE r.sale_id = $1
"""


async def exists(conn: Connection, sale_id: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM sales WHERE sale_id = $1", sale_id))


def _sold(r: Any) -> int:
    return int(r["qty"] - r["cancelled"])


def _costed(lines: list[Any]) -> list[Any]:
    """Lines a supplier ships for the retailer's money: confirmed there, units not cancelled."""
    return [r for r in lines if r["confirmed"] and _sold(r) and r["supplier_id"]]


def _by_supplier(costed: list[Any]) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in costed:
        row = out.setdefault(
            r["supplier_id"],
            {"supplier_id": r["supplier_id"], "lines": 0, "units": 0, "cost_minor": 0},
        )
        row["lines"] += 1
        row["units"] += _sold(r)
        row["cost_minor"] += _sold(r) * r["cost_minor"]
    return [out[k] for k in sorted(out)]


def _planned(r: Any) -> int:
    """The margin planned for the line's units still sold (as margin_minor counts them)."""
    return int(r["planned_margin_minor"] // r["qty"] * _sold(r))


def _credit(r: Any) -> dict[str, Any]:
    at = r["at"].isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "order_id": r["order_id"],
        "sku": r["sku"],
        "supplier_id": r["supplier_id"],
        "kind": r["kind"],
        "amount_minor": r["amount_minor"],
        "margin_drop_minor": r["margin_drop_minor"],
        "cause": r["cause"],
        "at": at,
    }


async def settlement(conn: Connection, sale_id: str) -> dict[str, Any]:
    """The settlement document (the figures are defined in docs/saga.md), read in one
    repeatable-read snapshot so its sums agree with each other."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        orders = await conn.fetch(_ORDERS, sale_id)
        lines = await conn.fetch(_LINES, sale_id, list(UNDONE))
        returned = await conn.fetchrow(_RETURNED, sale_id)
        credits = await retailer_ledger.credits(conn, sale_id)
    costed = _costed(lines)
    captured = sum(int(r["captured"]) for r in orders)
    refunded = sum(int(r["refunded"]) for r in orders)
    cost = sum(_sold(r) * r["cost_minor"] for r in costed)
    credited = sum(int(r["amount_minor"]) for r in credits)
    return {
        "sale_id": sale_id,
        "orders": {
            "total": sum(int(r["orders"]) for r in orders),
            "by_status": {r["status"]: int(r["orders"]) for r in orders},
        },
        "units": {
            "sold": sum(_sold(r) for r in lines),
            "cancelled": sum(int(r["cancelled"]) for r in lines),
            "returned": int(returned["returned"]),
            "restocked": int(returned["restocked"]),
        },
        "captured_minor": captured,
        "refunded_minor": refunded,
        "supplier_cost_minor": cost,
        "planned_margin_minor": sum(_planned(r) for r in costed),
        "margin_minor": sum(r["margin_minor"] or 0 for r in costed),
        "credits_minor": credited,
        "net_minor": captured - refunded - cost - credited,
        "by_supplier": _by_supplier(costed),
        "credits": [_credit(r) for r in credits],
    }
