"""Order routes: an order's status and saga progress, and the retailer's backorder decisions.

The gateway only reads and records here; the reconciler's saga carries a decision out (it is
what talks to the payment provider and the suppliers), so a decision answers 202.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from flashsale.gateway import callers, shipments
from flashsale.gateway.admin import require_admin
from flashsale.gateway.problems import Problem, invalid, unavailable
from flashsale.gateway.responses import json_response, read_json
from flashsale.gateway.schemas import parse_decision, parse_path_id
from flashsale.gateway.state import GatewayState
from flashsale.store import backorders
from flashsale.store.db import UNAVAILABLE
from flashsale.store.orders import OrderRecord, Row, order_record
from flashsale.store.saga.model import BACKORDER_STATUSES

# What a refused decision answers (store/backorders.py names the reason).
REFUSED = {
    "NOT_FOUND": (404, "NOT_FOUND"),
    "BACKORDER_CLOSED": (409, "BACKORDER_CLOSED"),
    "SAGA_STEP_DEAD": (409, "SAGA_STEP_DEAD"),
    "NOT_OFFERED": (422, "INVALID_REQUEST"),
}


def _when(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _backorder(r: Row, admin: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "sku": r["sku"],
        "qty": r["qty"],
        "status": r["status"],
        "promised_date": r["promised_date"].isoformat() if r["promised_date"] else None,
    }
    if admin:
        doc["id"] = r["id"]
        doc["order_id"] = r["order_id"]
        doc["options"] = json.loads(r["options"])
        doc["decision"] = json.loads(r["decision"]) if r["decision"] else None
        doc["created_at"] = _when(r["created_at"])
        doc["decided_at"] = _when(r["decided_at"])
    return doc


def _saga(found: OrderRecord) -> dict[str, Any]:
    o = found.order
    steps = [
        {
            "step": s["step"],
            "status": s["status"],
            "attempts": s["attempts"],
            "round": s["round"],
            "outcome": s["outcome"],
            "last_error": s["last_error"],
            "at": _when(s["updated_at"]),
        }
        for s in found.steps
    ]
    return {"next_step": o["next_step"], "dead_step": o["dead_step"], "steps": steps}


def _admin_part(found: OrderRecord, lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Who bought it, the payment, and per line who ships it and at what cost and margin."""
    o = found.order
    for line, r in zip(lines, found.lines, strict=True):
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
    payment = {
        "authorization_id": o["authorization_id"],
        "authorized_minor": o["authorized_minor"],
        "captured_minor": o["captured_minor"],
        "refunded_minor": o["refunded_minor"],
    }
    return {"customer_id": o["customer_id"], "payment": payment}


def _notices(found: OrderRecord, admin: bool) -> list[dict[str, Any]]:
    """The customer sees what was sent to them; the admin sees every notification and whether
    it was delivered."""
    out = []
    for n in found.notices:
        if admin:
            delivered = _when(n["delivered_at"])
            out.append(
                {
                    "topic": n["topic"],
                    "recipient": n["recipient"],
                    "at": _when(n["created_at"]),
                    "delivered_at": delivered,
                }
            )
        elif n["recipient"] == "customer":
            out.append({"topic": n["topic"], "at": _when(n["created_at"])})
    return out


def order_doc(found: OrderRecord, admin: bool) -> dict[str, Any]:
    """What a customer may see of their order: status, lines (with the units cancelled and
    refunded), amounts, dates, backorders and the notifications sent to them. The admin view
    adds the saga, the transitions and their causes, the payment's ids, and per line who ships
    it at what cost and margin."""
    o = found.order
    lines = [
        {
            "sku": r["sku"],
            "qty": r["qty"],
            "price_minor": r["price_minor"],
            "status": r["status"],
            "cancelled_qty": r["cancelled_qty"],  # never charged (or paid back)
            "refunded_qty": r["refunded_qty"],  # paid back by line (a return, a line refund)
        }
        for r in found.lines
    ]
    doc: dict[str, Any] = {
        "order_id": o["order_id"],
        "sale_id": o["sale_id"],
        "status": o["status"],
        "total_minor": o["total_minor"],
        "paid_minor": o["captured_minor"],
        "refunded_minor": o["refunded_minor"],
        "created_at": _when(o["created_at"]),
        "updated_at": _when(o["updated_at"]),
        "lines": lines,
        "backorders": [_backorder(r, admin) for r in found.backorders],
        "notifications": _notices(found, admin),
    }
    if admin:
        doc["saga"] = _saga(found)
        doc["transitions"] = [
            {
                "from": t["from_status"],
                "to": t["to_status"],
                "cause": t["cause"],
                "at": _when(t["at"]),
            }
            for t in found.transitions
        ]
        doc.update(_admin_part(found, lines))
    return doc


async def _record(state: GatewayState, order_id: str) -> OrderRecord:
    try:
        async with state.pool.acquire() as conn:
            found = await order_record(conn, order_id)
    except UNAVAILABLE as exc:
        raise unavailable() from exc
    if found is None:
        raise Problem(404, "NOT_FOUND", f"no order {order_id}")
    return found


async def get_order(request: Request) -> Response:
    """The customer's own order; another customer's answers 404, as a missing one does."""
    state: GatewayState = request.app.state.gateway
    owner = callers.owner(state, request.scope)
    state.limits.take_order(request.scope, owner)
    order_id = parse_path_id(request.path_params["order"], "order id")
    found = await _record(state, order_id)
    if owner and found.order["customer_id"] != owner:
        raise Problem(404, "NOT_FOUND", f"no order {order_id}")
    doc = order_doc(found, admin=False)
    doc.update(await shipments.after_sale(state, order_id, admin=False))
    return json_response(doc)


async def get_order_admin(request: Request) -> Response:
    state = require_admin(request)
    order_id = parse_path_id(request.path_params["order"], "order id")
    doc = order_doc(await _record(state, order_id), admin=True)
    doc.update(await shipments.after_sale(state, order_id, admin=True))
    return json_response(doc)


async def list_backorders(request: Request) -> Response:
    state = require_admin(request)
    status = request.query_params.get("status", "open")
    if status not in BACKORDER_STATUSES:
        raise invalid(f"status must be one of {', '.join(BACKORDER_STATUSES)}")
    try:
        async with state.pool.acquire() as conn:
            rows = await backorders.in_status(conn, status)
    except UNAVAILABLE as exc:
        raise unavailable() from exc
    # wait_days: how far the console's "wait" defaults from today when the offered date is past
    return json_response(
        {
            "backorders": [_backorder(r, admin=True) for r in rows],
            "wait_days": state.settings.backorder_wait_days,
        }
    )


def _backorder_id(raw: str) -> int:
    if not raw.isdigit() or len(raw) > 18:
        raise invalid("backorder id must be a positive integer")
    return int(raw)


async def decide_backorder(request: Request) -> Response:
    """Records the decision (store/backorders.py); the saga carries it out."""
    state = require_admin(request)
    backorder_id = _backorder_id(request.path_params["backorder"])
    decision = parse_decision(await read_json(request, state.settings.max_body_bytes))
    try:
        async with state.pool.acquire() as conn:
            order_id, decision = await backorders.decide(conn, backorder_id, decision)
    except backorders.DecisionRefused as exc:
        status, code = REFUSED[exc.code]
        raise Problem(status, code, exc.detail) from None
    except UNAVAILABLE as exc:
        raise unavailable() from exc
    body = {
        "backorder_id": backorder_id,
        "order_id": order_id,
        "status": "decided",
        "decision": decision,
    }
    return json_response(body, 202)
