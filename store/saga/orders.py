"""An order as a saga step reads it, and a step's `Decision` written back in one transaction:
one writer per table, each a single statement or one `executemany` for its rows."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

from flashsale.store import retailer_ledger, shipments
from flashsale.store.db import Connection
from flashsale.store.saga import changes
from flashsale.store.saga.claims import LOCK, REARM, TRANSITION, Claim
from flashsale.store.saga.model import (
    FINAL,
    Backorder,
    DateChange,
    Decision,
    Line,
    Notice,
    Order,
)

# --- reading -----------------------------------------------------------------------------------

_ORDER = """
SELECT order_id, sale_id, customer_id, status, total_minor, payment_ref, authorization_id,
       captured_minor, refunded_minor
FROM orders WHERE order_id = $1
"""
_LINES = """
SELECT sku, hold_supplier, qty, price_minor, status, supplier_id, cost_minor, allocation_ref,
       confirmed, planned_margin_minor, margin_minor, refused_by, cancelled_qty, refunded_qty,
       refunded_minor, shipped_qty,
       (SELECT coalesce(sum(r.restocked_qty), 0) FROM return_lines r
        WHERE (r.order_id, r.sku, r.hold_supplier) = (a.order_id, a.sku, a.hold_supplier)
          AND r.destination = 'sale_stock')::int AS restocked_qty,
       (SELECT coalesce(sum(r.qty), 0) FROM return_lines r
        WHERE (r.order_id, r.sku, r.hold_supplier) = (a.order_id, a.sku, a.hold_supplier)
       )::int AS returned_qty
FROM order_allocations a WHERE order_id = $1 ORDER BY sku, hold_supplier
"""
_BACKORDERS = """
SELECT id, sku, hold_supplier, qty, status, decision, promised_date, options
FROM backorders WHERE order_id = $1 ORDER BY id
"""
_CHAINS = """
SELECT sku, supplier_id, cost_minor FROM supplier_skus
WHERE sale_id = $1 ORDER BY sku, priority, position
"""


def _backorder(r: Any) -> Backorder:
    return Backorder(
        r["id"],
        r["sku"],
        r["hold_supplier"],
        r["qty"],
        r["status"],
        json.loads(r["decision"]) if r["decision"] else None,
        r["promised_date"],
        json.loads(r["options"]),
    )


async def load(conn: Connection, c: Claim) -> Order:
    o = await conn.fetchrow(_ORDER, c.order_id)
    chains: dict[str, list[tuple[str, int]]] = {}
    for r in await conn.fetch(_CHAINS, o["sale_id"]):
        chains.setdefault(r["sku"], []).append((r["supplier_id"], r["cost_minor"]))
    lines = [
        Line(**{**dict(r), "refused_by": list(r["refused_by"])})
        for r in await conn.fetch(_LINES, c.order_id)
    ]
    backorders = [_backorder(r) for r in await conn.fetch(_BACKORDERS, c.order_id)]
    pending, paused = await changes.pending(conn, c.order_id)
    return Order(
        **dict(o),
        step=c.step,
        round=c.round,
        lines=lines,
        backorders=backorders,
        suppliers=chains,
        changes=pending,
        paused=paused,
        reporting=await shipments.reporting(conn, [x.supplier_id for x in lines if x.supplier_id]),
    )


# --- writing: one function per table -----------------------------------------------------------

_MONEY_COLUMNS = ("authorization_id", "authorized_minor", "captured_minor", "refunded_minor")


async def _order_row(
    conn: Connection, order_id: str, status: str | None, money: dict[str, Any]
) -> None:
    """The order's status and money columns in one UPDATE (only those the decision sets)."""
    sets: dict[str, Any] = {name: money[name] for name in _MONEY_COLUMNS if name in money}
    unknown = money.keys() - set(_MONEY_COLUMNS)
    if unknown:
        raise ValueError(f"a decision may not set orders columns {sorted(unknown)}")
    if status is not None:
        sets["status"] = status
    if sets:
        assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(sets, start=2))
        await conn.execute(
            f"UPDATE orders SET {assignments} WHERE order_id = $1", order_id, *sets.values()
        )


_WRITE_LINE = """
UPDATE order_allocations SET status = $4, supplier_id = $5, cost_minor = $6, allocation_ref = $7,
    confirmed = $8, margin_minor = $9, refused_by = $10, cancelled_qty = $11, refunded_qty = $12,
    refunded_minor = $13, updated_at = now()
WHERE order_id = $1 AND sku = $2 AND hold_supplier = $3
"""


async def _lines(conn: Connection, order_id: str, lines: Sequence[Line]) -> None:
    rows = [
        (
            order_id,
            x.sku,
            x.hold_supplier,
            x.status,
            x.supplier_id,
            x.cost_minor,
            x.allocation_ref,
            x.confirmed,
            x.margin_minor,
            x.refused_by,
            x.cancelled_qty,
            x.refunded_qty,
            x.refunded_minor,
        )
        for x in lines
    ]
    if rows:
        await conn.executemany(_WRITE_LINE, rows)


# A decision the retailer recorded while a step ran ('decided') is only ever overwritten by the
# step that carries it out (the last parameter: whether this step is backorder.apply).
_OPEN_BACKORDER = """
INSERT INTO backorders (order_id, sku, hold_supplier, qty, status, options)
VALUES ($1, $2, $3, $4, 'open', $5::jsonb)
ON CONFLICT (order_id, sku, hold_supplier) DO UPDATE
SET status = 'open', qty = EXCLUDED.qty, options = EXCLUDED.options, decision = NULL,
    decided_at = NULL, applied = true, promised_date = NULL
WHERE backorders.status <> 'decided' OR $6
"""
# qty follows the line's live units (a cancel of part of a backordered line cuts it).
_WRITE_BACKORDER = """
UPDATE backorders SET status = $2, decision = $3::jsonb, promised_date = $4, applied = true,
    qty = $6
WHERE id = $1 AND (status <> 'decided' OR $5)
"""


async def _backorders(
    conn: Connection, order_id: str, backorders: Sequence[Backorder], applies: bool
) -> None:
    opened = [
        (order_id, b.sku, b.hold_supplier, b.qty, json.dumps(b.options), applies)
        for b in backorders
        if b.status == "open"
    ]
    changed = [
        (
            b.id,
            b.status,
            None if b.decision is None else json.dumps(b.decision),
            b.promised_date,
            applies,
            b.qty,
        )
        for b in backorders
        if b.status != "open"
    ]
    if opened:
        await conn.executemany(_OPEN_BACKORDER, opened)
    if changed:
        await conn.executemany(_WRITE_BACKORDER, changed)


_NOTICE = """
INSERT INTO outbox (topic, recipient, payload, dedupe_key, order_id, request_id)
VALUES ($1, $2, $3::jsonb, $4, $5, $6)
ON CONFLICT (dedupe_key) DO NOTHING
"""


async def _outbox(
    conn: Connection, c: Claim, o: Order, status: str, notices: Sequence[Notice]
) -> None:
    """One notification per notice, keyed by order, step, round, topic and recipient, so a step
    that runs again queues nothing twice."""
    rows = []
    for n in notices:
        payload = {
            "topic": n.topic,
            "order_id": o.order_id,
            "sale_id": o.sale_id,
            "customer_id": o.customer_id,
            "status": status,
            **n.details,
        }
        dedupe = f"{o.order_id}:{c.step}:{c.round}:{n.topic}:{n.recipient}"
        rows.append((n.topic, n.recipient, json.dumps(payload), dedupe, o.order_id, c.request_id))
    if rows:
        await conn.executemany(_NOTICE, rows)


_DATE = """
INSERT INTO backorder_dates (backorder_id, promised_date, reason, source) VALUES ($1, $2, $3, $4)
"""


async def _dates(conn: Connection, dates: Sequence[DateChange]) -> None:
    """The promised dates the step gave (the history the order views show)."""
    rows = [(x.backorder_id, x.promised_date, x.reason, x.source) for x in dates]
    if rows:
        await conn.executemany(_DATE, rows)


_STEP_DONE = """
INSERT INTO saga_steps (order_id, step, status, attempts, outcome, round, request_id)
VALUES ($1, $2, 'done', 1, $3, $4, $5)
ON CONFLICT (order_id, step) DO UPDATE
SET status = EXCLUDED.status, outcome = EXCLUDED.outcome, last_error = NULL, updated_at = now()
"""


async def _steps(conn: Connection, c: Claim, d: Decision) -> None:
    """The step's own row, and the compensations it ran on the way (its history)."""
    done = [(c.order_id, c.step, d.outcome, c.round, c.request_id)]
    done += [(c.order_id, step, outcome, c.round, c.request_id) for step, outcome in d.history]
    await conn.executemany(_STEP_DONE, done)


_DECIDED = "SELECT count(*) FROM backorders WHERE order_id = $1 AND status = 'decided'"
_CLOSE_BACKORDERS = """
UPDATE backorders SET status = 'cancelled', applied = true
WHERE order_id = $1 AND status IN ('open', 'decided', 'waiting')
"""
_NEXT = """
UPDATE orders SET next_step = $2, step_due_at = $3, step_token = step_token + 1,
    claimed_until = NULL, dead_step = NULL, updated_at = now()
WHERE order_id = $1
"""


async def _cursor(conn: Connection, c: Claim, d: Decision, status: str) -> None:
    """Moves the saga on: a final order closes its backorders; a decision the retailer made
    while this step ran is carried out next; a step due again starts a new round."""
    next_step, next_at = d.next_step, d.next_at
    if status in FINAL:
        await conn.execute(_CLOSE_BACKORDERS, c.order_id)  # nothing left to decide
    elif await conn.fetchval(_DECIDED, c.order_id):
        next_step, next_at = "backorder.apply", None
    if next_step != "backorder.apply":  # a cancel or refund asked while the step ran
        next_step, next_at = await changes.divert(conn, c.order_id, next_step, next_at)
    if next_step is not None:
        await conn.execute(REARM, c.order_id, next_step)
    await conn.execute(_NEXT, c.order_id, next_step, next_at or dt.datetime.now(dt.UTC))


async def write(conn: Connection, c: Claim, o: Order, d: Decision) -> bool:
    """The decision in one transaction, if the claim is still ours; whether it was written."""
    async with conn.transaction():
        row = await conn.fetchrow(LOCK, c.order_id)
        if row is None or row["step_token"] != c.token:
            return False
        status = d.status or row["status"]
        moved = bool(d.status) and d.status != row["status"]
        await _order_row(conn, c.order_id, d.status if moved else None, d.order)
        if moved or d.cause:
            await conn.execute(TRANSITION, c.order_id, row["status"], status, d.cause)
        await _lines(conn, c.order_id, d.lines)
        await retailer_ledger.reconcile(conn, o)  # the retailer's credit follows the lines
        await _backorders(conn, c.order_id, d.backorders, c.step == "backorder.apply")
        await _outbox(conn, c, o, status, d.notices)
        await _steps(conn, c, d)
        await changes.write_outcomes(conn, d.changes)
        await _dates(conn, d.dates)
        await _cursor(conn, c, d, status)
        if c.step in ("notify", "order.change"):
            # Shipments that came after the step read the lines, or a cancel of the units
            # still to ship, can leave an order parked for shipments with nothing left to wait.
            await shipments.settle(conn, c.order_id, "every live unit shipped")
    return True
