"""The retailer ledger: what an order line whose margin a reroute or a secondary supplier lowered
is owed at the sale's credit policy, kept in line with the line (credits and reversals) by the
saga's write, in the transaction that writes the line."""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal
from typing import Any

from flashsale.store.db import Connection
from flashsale.store.saga.model import Line, Order


async def credit_policy(conn: Connection, sale_id: str) -> str | None:
    """none, full or a share "0.<digits>"; None for an unknown sale."""
    found = await conn.fetchval("SELECT credit_policy FROM sales WHERE sale_id = $1", sale_id)
    return None if found is None else str(found)


def credit_minor(policy: str, margin_drop_minor: int) -> int:
    """policy x the margin lost, in whole minor units rounded down; never negative."""
    if policy == "none" or margin_drop_minor <= 0:
        return 0
    share = Decimal(1) if policy == "full" else Decimal(policy)
    return int((share * margin_drop_minor).to_integral_value(rounding=ROUND_FLOOR))


# An order in one of these owes no credit: what was credited is reversed.
UNDONE = {"PAYMENT_FAILED": "payment_failed", "CANCELLED": "cancelled", "REFUNDED": "refunded"}


def margin_drop(row: Any) -> int:
    """The margin a line's live units lost to their supplier now against the one they were
    sold from: live units x (unit cost now - unit cost planned), 0 when no loss, when the line
    is not confirmed at its supplier (a lock that may still lapse), or when the supplier it was
    sold from ships it (a cancel lowers margin_minor, never the unit margin)."""
    if row["status"] != "allocated" or not row["confirmed"] or row["cost_minor"] is None:
        return 0
    if row["supplier_id"] in (None, row["hold_supplier"]):
        return 0
    planned_unit_cost = row["price_minor"] - row["planned_margin_minor"] // row["qty"]
    live = row["qty"] - row["cancelled_qty"]
    return max(0, int(live * (row["cost_minor"] - planned_unit_cost)))


def cause(o: Order, line: Line) -> str:
    """reroute: another supplier of the sale ships the line; secondary: one from outside it."""
    of_sale = {supplier for supplier, _ in o.suppliers.get(line.sku, [])}
    return "reroute" if line.supplier_id in of_sale else "secondary"


_STATE = """
SELECT o.status, s.credit_policy,
       EXISTS (SELECT 1 FROM retailer_ledger r WHERE r.order_id = o.order_id) AS credited
FROM orders o JOIN sales s USING (sale_id) WHERE o.order_id = $1
"""
_LINES = """
SELECT a.sku, a.hold_supplier, a.qty, a.cancelled_qty, a.price_minor, a.status, a.confirmed,
       a.supplier_id, a.cost_minor, a.planned_margin_minor,
       coalesce((SELECT sum(CASE r.kind WHEN 'credit' THEN r.amount_minor
                                        ELSE -r.amount_minor END)
                 FROM retailer_ledger r
                 WHERE r.order_id = a.order_id AND r.sku = a.sku
                   AND r.hold_supplier = a.hold_supplier), 0) AS owed
FROM order_allocations a WHERE a.order_id = $1 ORDER BY a.sku, a.hold_supplier
"""
_ENTRY = """
INSERT INTO retailer_ledger (sale_id, order_id, sku, hold_supplier, supplier_id, kind,
                             amount_minor, cause, margin_drop_minor, owed_minor, policy)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
"""


def _reversal_cause(order_status: str, row: Any) -> str:
    if order_status in UNDONE:
        return UNDONE[order_status]
    if row["status"] == "cancelled" or row["cancelled_qty"]:
        return "cancelled"
    return "reallocated"


async def reconcile(conn: Connection, o: Order) -> int:
    """Brings the order's credit entries in line with its lines as they are now written: per
    line, a credit for what it is owed beyond what was credited, a reversal for what it no
    longer is; how many entries were written (0 when a step runs again). Called by the saga's
    write, in its transaction, after the lines, with the order's row locked."""
    state = await conn.fetchrow(_STATE, o.order_id)
    if state is None or (state["credit_policy"] == "none" and not state["credited"]):
        return 0
    policy = str(state["credit_policy"])
    rows = []
    for r in await conn.fetch(_LINES, o.order_id):
        drop = 0 if state["status"] in UNDONE else margin_drop(r)
        owed, before = credit_minor(policy, drop), int(r["owed"])
        if owed == before:
            continue
        line = Line(
            r["sku"],
            r["hold_supplier"],
            r["qty"],
            r["price_minor"],
            r["status"],
            r["supplier_id"],
            r["cost_minor"],
            None,
            r["confirmed"],
            r["planned_margin_minor"],
            None,
            [],
        )
        kind, why = (
            ("credit", cause(o, line))
            if owed > before
            else ("reversal", _reversal_cause(state["status"], r))
        )
        rows.append(
            (
                o.sale_id,
                o.order_id,
                r["sku"],
                r["hold_supplier"],
                r["supplier_id"],
                kind,
                abs(owed - before),
                why,
                drop,
                owed,
                policy,
            )
        )
    if rows:
        await conn.executemany(_ENTRY, rows)
    return len(rows)


_CREDITS = """
SELECT order_id, sku, hold_supplier, supplier_id, kind,
       CASE kind WHEN 'credit' THEN amount_minor ELSE -amount_minor END AS amount_minor,
       cause, margin_drop_minor, owed_minor, policy, at
FROM retailer_ledger WHERE sale_id = $1 ORDER BY id
"""


async def credits(conn: Connection, sale_id: str) -> list[Any]:
    """The sale's ledger entries, oldest first; a reversal's amount_minor is negative."""
    return list(await conn.fetch(_CREDITS, sale_id))
