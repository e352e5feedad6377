"""The retailer's backorder decisions: listing open ones, and recording a decision so that the
saga carries it out (the reconciler's backorder.apply step does; this only schedules it)."""

from __future__ import annotations

import json
from typing import Any

from flashsale.store.db import Connection
from flashsale.store.orders import BACKORDER_COLUMNS, Row
from flashsale.store.refused import Refused
from flashsale.store.saga.claims import REARM
from flashsale.store.saga.model import FINAL


class DecisionRefused(Refused):
    """A decision that cannot be recorded; `code` says why (NOT_FOUND, BACKORDER_CLOSED,
    SAGA_STEP_DEAD, NOT_OFFERED). Nothing was written."""


async def in_status(conn: Connection, status: str, limit: int = 1000) -> list[Row]:
    return list(
        await conn.fetch(
            f"SELECT {BACKORDER_COLUMNS} FROM backorders WHERE status = $1 ORDER BY id LIMIT $2",
            status,
            limit,
        )
    )


# The order row first, as the saga's write() locks it: no lock-order deadlock.
_TARGET = """
SELECT o.order_id, o.status, o.dead_step, o.next_step,
       o.next_step IS NULL OR (
           (o.claimed_until IS NULL OR o.claimed_until < now())
           AND coalesce(s.attempts, 0) = 0
       ) AS idle
FROM orders o LEFT JOIN saga_steps s ON s.order_id = o.order_id AND s.step = o.next_step
WHERE o.order_id = (SELECT order_id FROM backorders WHERE id = $1)
FOR UPDATE OF o
"""
_BACKORDER = "SELECT status, options FROM backorders WHERE id = $1 FOR UPDATE"
_DECIDE = """
UPDATE backorders SET status = 'decided', decision = $2::jsonb, decided_at = now(),
    applied = false
WHERE id = $1
"""
# An idle order (parked for the retailer, or waiting for a promised day) runs backorder.apply
# next, due now, as a new round of that step: new idempotency keys at the parties.
_SCHEDULE = """
UPDATE orders SET next_step = 'backorder.apply', step_due_at = now(),
    step_token = step_token + 1, updated_at = now()
WHERE order_id = $1
"""
_NOTE = """
INSERT INTO order_transitions (order_id, from_status, to_status, cause) VALUES ($1, $2, $2, $3)
"""


def offered(decision: dict[str, Any], options: list[dict[str, Any]]) -> dict[str, Any]:
    """A secondary supplier must be one the backorder offered; its quoted cost is the default."""
    if decision["decision"] != "secondary":
        return decision
    secondaries = [o for o in options if o.get("decision") == "secondary"]
    offer = next((o for o in secondaries if o.get("supplier_id") == decision["supplier_id"]), None)
    if offer is None:
        names = ", ".join(o["supplier_id"] for o in secondaries) or "none"
        raise DecisionRefused(
            "NOT_OFFERED",
            f"supplier {decision['supplier_id']} was not offered for this backorder "
            f"(offered: {names})",
        )
    if decision.get("cost_minor") is None:
        decision = {**decision, "cost_minor": offer["cost_minor"]}
    return decision


async def decide(
    conn: Connection, backorder_id: int, decision: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """Records the decision; (the order id, the decision as recorded). An order whose step is
    running or being retried keeps it, and the saga applies the decision right after that
    step's outcome is written."""
    async with conn.transaction():
        order = await conn.fetchrow(_TARGET, backorder_id)
        found = await conn.fetchrow(_BACKORDER, backorder_id)
        if order is None or found is None:
            raise DecisionRefused("NOT_FOUND", f"no backorder {backorder_id}")
        order_id = order["order_id"]
        if found["status"] not in ("open", "waiting") or order["status"] in FINAL:
            raise DecisionRefused(
                "BACKORDER_CLOSED",
                f"backorder {backorder_id} is {found['status']}, its order {order['status']}",
            )
        if order["dead_step"] is not None:
            raise DecisionRefused(
                "SAGA_STEP_DEAD",
                f"order {order_id}: step {order['dead_step']} is dead-lettered; "
                f"run `flashsale saga retry --order {order_id}` first",
            )
        decision = offered(decision, json.loads(found["options"]))
        await conn.execute(_DECIDE, backorder_id, json.dumps(decision))
        if order["idle"]:
            await conn.execute(_SCHEDULE, order_id)
            await conn.execute(REARM, order_id, "backorder.apply")
        cause = f"retailer decided backorder {backorder_id}: {json.dumps(decision)}"
        await conn.execute(_NOTE, order_id, order["status"], cause)
    return order_id, decision
