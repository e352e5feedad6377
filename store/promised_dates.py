"""Promised dates of waiting backorders: an operator's change (POST
/v1/admin/backorders/{id}/promised-date), and every date a backorder was given (backorder_dates),
each told to the customer. The saga's own changes (the retailer's "wait", a day that came with
the line still short) are written by store/saga/orders.py from the step's Decision."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flashsale.store.backorders import DecisionRefused
from flashsale.store.db import Connection
from flashsale.store.saga.claims import TRANSITION
from flashsale.store.saga.model import FINAL
from flashsale.store.shipments import notice

# The order row first, as the saga's write() locks it.
_TARGET = """
SELECT o.order_id, o.status, o.next_step, o.claimed_until > now() AS busy, o.sale_id,
       o.customer_id, o.request_id
FROM orders o WHERE o.order_id = (SELECT order_id FROM backorders WHERE id = $1)
FOR UPDATE OF o
"""
_BACKORDER = "SELECT sku, qty, status, promised_date FROM backorders WHERE id = $1 FOR UPDATE"
_SET = "UPDATE backorders SET promised_date = $2 WHERE id = $1"
_HISTORY_ROW = """
INSERT INTO backorder_dates (backorder_id, promised_date, reason, source)
VALUES ($1, $2, $3, $4) RETURNING id
"""
# A step whose lease ran out may still be running in a slow process: a new token drops its
# outcome (store/saga/claims.py), so it cannot put back the date it read.
_FENCE = """
UPDATE orders SET step_token = step_token + 1, claimed_until = NULL
WHERE order_id = $1 AND claimed_until IS NOT NULL
"""
# An order waiting for its promised day comes back on the earliest one its waiting lines have;
# when a pending order.change displaced that step, the date waits in paused_due_at instead.
_RESCHEDULE = """
WITH day AS (
    SELECT min(promised_date)::timestamp AT TIME ZONE 'UTC' AS at FROM backorders
    WHERE order_id = $1 AND status = 'waiting')
UPDATE orders SET
    step_due_at = CASE WHEN next_step = 'supplier.allocate' THEN day.at ELSE step_due_at END,
    paused_due_at = CASE WHEN paused_step = 'supplier.allocate' THEN day.at
                         ELSE paused_due_at END,
    updated_at = now()
FROM day
WHERE order_id = $1
  AND (next_step = 'supplier.allocate' OR paused_step = 'supplier.allocate')
"""


async def change(
    conn: Connection, backorder_id: int, day: dt.date, reason: str, today: dt.date
) -> tuple[str, dt.date | None]:
    """Moves a waiting backorder's promised date; (the order id, the date it had). Refused
    (DecisionRefused): NOT_FOUND, BACKORDER_NOT_WAITING, DATE_IN_PAST, ORDER_BUSY (a step of the
    order is running: its write would put back the date it read; try again). The customer is
    told."""
    if day < today:
        raise DecisionRefused("DATE_IN_PAST", f"{day.isoformat()} is before {today.isoformat()}")
    async with conn.transaction():
        o = await conn.fetchrow(_TARGET, backorder_id)
        b = await conn.fetchrow(_BACKORDER, backorder_id)
        if o is None or b is None:
            raise DecisionRefused("NOT_FOUND", f"no backorder {backorder_id}")
        if b["status"] != "waiting" or o["status"] in FINAL:
            raise DecisionRefused(
                "BACKORDER_NOT_WAITING",
                f"backorder {backorder_id} is {b['status']}, its order {o['status']}",
            )
        order_id, previous = o["order_id"], b["promised_date"]
        if o["busy"]:
            raise DecisionRefused(
                "ORDER_BUSY", f"step {o['next_step']} of order {order_id} is running; try again"
            )
        await conn.execute(_FENCE, order_id)
        await conn.execute(_SET, backorder_id, day)
        row_id = await conn.fetchval(_HISTORY_ROW, backorder_id, day, reason, "operator")
        await conn.execute(_RESCHEDULE, order_id)
        was = previous.isoformat() if previous else "none"
        cause = f"promised date of backorder {backorder_id} ({b['sku']}): {was} -> {day}: {reason}"
        await conn.execute(TRANSITION, order_id, o["status"], o["status"], cause)
        details = date_notice(b["sku"], b["qty"], day, previous, reason)
        dedupe = f"{order_id}:promised-date:{row_id}:customer"
        await notice(
            conn, order_id, o, "customer", "order.promised_date", o["status"], details, dedupe
        )
    return order_id, previous


def date_notice(
    sku: str, qty: int, day: dt.date, previous: dt.date | None, reason: str
) -> dict[str, Any]:
    """What the customer is told of a promised date (one line of order.promised_date)."""
    return {
        "lines": [
            {
                "sku": sku,
                "qty": qty,
                "promised_date": day.isoformat(),
                "previous_date": previous.isoformat() if previous else None,
                "reason": reason,
            }
        ]
    }


_HISTORY = """
SELECT d.backorder_id, b.sku, d.promised_date, d.reason, d.source, d.at
FROM backorder_dates d JOIN backorders b ON b.id = d.backorder_id
WHERE b.order_id = $1 ORDER BY d.id
"""


async def history(conn: Connection, order_id: str) -> list[Any]:
    """Every promised date the order's backorders were given, oldest first."""
    return list(await conn.fetch(_HISTORY, order_id))
