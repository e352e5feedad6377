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
       planned_margin_minor, margin_minor, refused_by
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
