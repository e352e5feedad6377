"""Order routes: an order's status and saga progress, and the retailer's backorder decisions.

The gateway only reads and records here; the reconciler's saga carries a decision out (it is
what talks to the payment provider and the suppliers), so a decision answers 202.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
from starlette.requests import Request
from starlette.responses import Response

from flashsale.gateway.admin import require_admin
from flashsale.gateway.problems import Problem, invalid, unavailable
from flashsale.gateway.responses import json_response, read_json
from flashsale.gateway.schemas import parse_decision, parse_path_id
from flashsale.gateway.state import GatewayState
from flashsale.reconciler.steps import FINAL

PG_DOWN = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
BACKORDER_STATUSES = ("open", "decided", "waiting", "cancelled", "secondary", "resolved")

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
_BACKORDERS = """
SELECT id, order_id, sku, hold_supplier, qty, status, options, decision, promised_date,
       created_at, decided_at
FROM backorders WHERE order_id = $1 ORDER BY id
"""


def _when(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _backorder(r: asyncpg.Record, admin: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": r["id"],
        "order_id": r["order_id"],
        "sku": r["sku"],
        "qty": r["qty"],
        "status": r["status"],
        "promised_date": r["promised_date"].isoformat() if r["promised_date"] else None,
    }
    if admin:
        doc["options"] = json.loads(r["options"])
        doc["decision"] = json.loads(r["decision"]) if r["decision"] else None
        doc["created_at"] = _when(r["created_at"])
        doc["decided_at"] = _when(r["decided_at"])
    return doc


async def order_view(state: GatewayState, order_id: str, admin: bool) -> dict[str, Any]:
    try:
        async with state.pool.acquire() as conn:
            o = await conn.fetchrow(_ORDER, order_id)
            if o is None:
                raise Problem(404, "NOT_FOUND", f"no order {order_id}")
            lines = await conn.fetch(_LINES, order_id)
            steps = await conn.fetch(_STEPS, order_id)
            moves = await conn.fetch(_TRANSITIONS, order_id)
            backorders = await conn.fetch(_BACKORDERS, order_id)
    except PG_DOWN as exc:
        raise unavailable() from exc
    doc: dict[str, Any] = {
        "order_id": o["order_id"],
        "sale_id": o["sale_id"],
        "status": o["status"],
        "total_minor": o["total_minor"],
        "created_at": _when(o["created_at"]),
        "updated_at": _when(o["updated_at"]),
        "saga": {
            "next_step": o["next_step"],
            "dead_step": o["dead_step"],
            "steps": [
                {
                    "step": s["step"],
                    "status": s["status"],
                    "attempts": s["attempts"],
                    "round": s["round"],
                    "outcome": s["outcome"],
                    "last_error": s["last_error"],
                    "at": _when(s["updated_at"]),
                }
                for s in steps
            ],
        },
        "transitions": [
            {
                "from": t["from_status"],
                "to": t["to_status"],
                "cause": t["cause"],
                "at": _when(t["at"]),
            }
            for t in moves
        ],
        "lines": [
            {
                "sku": r["sku"],
                "qty": r["qty"],
                "price_minor": r["price_minor"],
                "status": r["status"],
            }
            for r in lines
        ],
        "backorders": [_backorder(r, admin) for r in backorders],
    }
    if admin:
        doc["customer_id"] = o["customer_id"]
        doc["payment"] = {
            "authorization_id": o["authorization_id"],
            "authorized_minor": o["authorized_minor"],
            "captured_minor": o["captured_minor"],
            "refunded_minor": o["refunded_minor"],
        }
        for line, r in zip(doc["lines"], lines, strict=True):
            line.update(
                hold_supplier=r["hold_supplier"],
                supplier_id=r["supplier_id"],
                cost_minor=r["cost_minor"],
                supplier_confirmed=r["confirmed"],
                planned_margin_minor=r["planned_margin_minor"],
                margin_minor=r["margin_minor"],
                rerouted=r["supplier_id"] is not None and r["supplier_id"] != r["hold_supplier"],
                refused_by=list(r["refused_by"]),
            )
    return doc


async def get_order(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    order_id = parse_path_id(request.path_params["order"], "order id")
    return json_response(await order_view(state, order_id, admin=False))


async def get_order_admin(request: Request) -> Response:
    state = require_admin(request)
    order_id = parse_path_id(request.path_params["order"], "order id")
    return json_response(await order_view(state, order_id, admin=True))


async def list_backorders(request: Request) -> Response:
    state = require_admin(request)
    status = request.query_params.get("status", "open")
    if status not in BACKORDER_STATUSES:
        raise invalid(f"status must be one of {', '.join(BACKORDER_STATUSES)}")
    try:
        async with state.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT id, order_id, sku, hold_supplier, qty, status, options, decision, "
                "promised_date, created_at, decided_at FROM backorders WHERE status = $1 "
                "ORDER BY id LIMIT 1000",
                status,
            )
    except PG_DOWN as exc:
        raise unavailable() from exc
    return json_response({"backorders": [_backorder(r, admin=True) for r in rows]})


def _backorder_id(raw: str) -> int:
    if not raw.isdigit() or len(raw) > 18:
        raise invalid("backorder id must be a positive integer")
    return int(raw)


_DECISION_TARGET = """
SELECT o.order_id, o.status, o.dead_step, o.next_step,
       o.next_step IS NULL OR (
           (o.claimed_until IS NULL OR o.claimed_until < now())
           AND coalesce(s.attempts, 0) = 0
       ) AS idle
FROM orders o LEFT JOIN saga_steps s ON s.order_id = o.order_id AND s.step = o.next_step
WHERE o.order_id = (SELECT order_id FROM backorders WHERE id = $1)
FOR UPDATE OF o
"""


def _offered(decision: dict[str, Any], options: list[dict[str, Any]]) -> dict[str, Any]:
    """A secondary supplier must be one the backorder offered; its quoted cost is the default."""
    if decision["decision"] != "secondary":
        return decision
    offer = next(
        (
            o
            for o in options
            if o.get("decision") == "secondary" and o.get("supplier_id") == decision["supplier_id"]
        ),
        None,
    )
    if offer is None:
        offered = [o["supplier_id"] for o in options if o.get("decision") == "secondary"]
        raise invalid(
            f"supplier {decision['supplier_id']} was not offered for this backorder "
            f"(offered: {', '.join(offered) or 'none'})"
        )
    if decision.get("cost_minor") is None:
        decision = {**decision, "cost_minor": offer["cost_minor"]}
    return decision


async def decide_backorder(request: Request) -> Response:
    """Records the decision. An order parked for the retailer (or waiting for a promised day)
    runs `backorder.apply` next, due now; one whose step is running or being retried keeps it,
    and the saga applies the decision right after that step's outcome is written."""
    state = require_admin(request)
    backorder_id = _backorder_id(request.path_params["backorder"])
    decision = parse_decision(await read_json(request, state.settings.max_body_bytes))
    try:
        async with state.pool.acquire() as conn, conn.transaction():
            # The order row first, as the saga's write() locks it: no lock-order deadlock.
            order = await conn.fetchrow(_DECISION_TARGET, backorder_id)
            found = await conn.fetchrow(
                "SELECT status, options FROM backorders WHERE id = $1 FOR UPDATE", backorder_id
            )
            if order is None or found is None:
                raise Problem(404, "NOT_FOUND", f"no backorder {backorder_id}")
            if found["status"] not in ("open", "waiting") or order["status"] in FINAL:
                raise Problem(
                    409,
                    "BACKORDER_CLOSED",
                    f"backorder {backorder_id} is {found['status']}, its order {order['status']}",
                )
            if order["dead_step"] is not None:
                raise Problem(
                    409,
                    "SAGA_STEP_DEAD",
                    f"order {order['order_id']}: step {order['dead_step']} is dead-lettered; "
                    f"run `flashsale saga retry --order {order['order_id']}` first",
                )
            decision = _offered(decision, json.loads(found["options"]))
            await conn.execute(
                "UPDATE backorders SET status = 'decided', decision = $2::jsonb, "
                "decided_at = now(), applied = false WHERE id = $1",
                backorder_id,
                json.dumps(decision),
            )
            if order["idle"]:
                await conn.execute(
                    "UPDATE orders SET next_step = 'backorder.apply', step_due_at = now(), "
                    "step_token = step_token + 1, updated_at = now() WHERE order_id = $1",
                    order["order_id"],
                )
                # A decision is a new round of the step: new idempotency keys at the parties.
                await conn.execute(
                    "UPDATE saga_steps SET status = 'pending', attempts = 0, round = round + 1 "
                    "WHERE order_id = $1 AND step = 'backorder.apply' AND status <> 'pending'",
                    order["order_id"],
                )
            await conn.execute(
                "INSERT INTO order_transitions (order_id, from_status, to_status, cause) "
                "VALUES ($1, $2, $2, $3)",
                order["order_id"],
                order["status"],
                f"retailer decided backorder {backorder_id}: {json.dumps(decision)}",
            )
    except PG_DOWN as exc:
        raise unavailable() from exc
    body = {
        "backorder_id": backorder_id,
        "order_id": order["order_id"],
        "status": "decided",
        "decision": decision,
    }
    return json_response(body, 202)
