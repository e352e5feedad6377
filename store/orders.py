"""Reading an order for the HTTP views: the order row, its lines, the saga's steps and
transitions, and its backorders (the gateway decides what each caller may see)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flashsale.store.db import Connection

Row = Any  # an asyncpg Record: read by column name

_ORDER = """
SELECT order_id, sale_id, customer_id, status, total_minor, created_at, updated_at,
       next_step, dead_step, authorization_id, authorized_minor, captured_minor, refunded_minor
FROM orders WHERE order_id = $1
"""
_LINES = """
SELECT sku, hold_supplier, qty, price_minor, status, supplier_id, cost_minor, confirmed,
       planned_margin_minor, margin_minor, refused_by, cancelled_qty, refunded_qty
FROM order_allocations WHERE order_id = $1 ORDER BY sku, hold_supplier
"""
_STEPS = """
SELECT step, status, attempts, round, outcome, last_error, updated_at
FROM saga_steps WHERE order_id = $1 ORDER BY updated_at, step
"""
_TRANSITIONS = """
SELECT from_status, to_status, cause, at FROM order_transitions WHERE order_id = $1 ORDER BY id
"""
_NOTICES = """
SELECT topic, recipient, created_at, delivered_at FROM outbox WHERE order_id = $1 ORDER BY id
"""
BACKORDER_COLUMNS = """
id, order_id, sku, hold_supplier, qty, status, options, decision, promised_date, created_at,
decided_at
"""
_BACKORDERS = f"SELECT {BACKORDER_COLUMNS} FROM backorders WHERE order_id = $1 ORDER BY id"


@dataclass(frozen=True, slots=True)
class OrderRecord:
    order: Row
    lines: list[Row]
    steps: list[Row]
    transitions: list[Row]
    backorders: list[Row]
    notices: list[Row]  # topic, recipient, created_at, delivered_at


async def order_record(conn: Connection, order_id: str) -> OrderRecord | None:
    """Everything PostgreSQL knows of an order; None when there is no such order."""
    order = await conn.fetchrow(_ORDER, order_id)
    if order is None:
        return None
    return OrderRecord(
        order,
        await conn.fetch(_LINES, order_id),
        await conn.fetch(_STEPS, order_id),
        await conn.fetch(_TRANSITIONS, order_id),
        await conn.fetch(_BACKORDERS, order_id),
        await conn.fetch(_NOTICES, order_id),
    )


_DEAD = """
SELECT o.order_id, o.sale_id, o.status, o.dead_step, s.attempts, s.last_error, s.updated_at
FROM orders o LEFT JOIN saga_steps s ON s.order_id = o.order_id AND s.step = o.dead_step
WHERE o.dead_step IS NOT NULL
ORDER BY s.updated_at DESC NULLS LAST, o.order_id
LIMIT $1
"""


async def dead_orders(conn: Connection, limit: int = 200) -> list[Row]:
    """Orders whose saga stopped at a dead-lettered step, newest first: order, sale, status,
    the step, its tries and last error, and when it gave up."""
    return list(await conn.fetch(_DEAD, limit))


async def order_exists(conn: Connection, order_id: str) -> bool:
    return bool(await conn.fetchval("SELECT true FROM orders WHERE order_id = $1", order_id))


_CHANGES = """
SELECT id, kind, whole, lines, amount_minor, reason, source, status, outcome, created_at,
       applied_at
FROM order_changes WHERE order_id = $1 ORDER BY id
"""


async def order_changes(conn: Connection, order_id: str) -> list[Row] | None:
    """The cancels and refunds asked of the order, oldest first (None: no such order)."""
    if await conn.fetchval("SELECT 1 FROM orders WHERE order_id = $1", order_id) is None:
        return None
    return list(await conn.fetch(_CHANGES, order_id))
