"""Cancel and refund routes: a customer's cancel before the capture, an operator's cancel of any
order not final, and an operator's refunds. The gateway only records the change
(store/saga/changes.py); the reconciler's order.change step carries it out, so each answers 202
with the change's id. An Idempotency-Key (required for refunds) makes a replay answer the first
record.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from flashsale.engine.keys import ID_PATTERN
from flashsale.gateway import callers
from flashsale.gateway.admin import require_admin
from flashsale.gateway.http import header, parse_json_object, require_json
from flashsale.gateway.problems import Problem, invalid, unavailable
from flashsale.gateway.responses import json_response
from flashsale.gateway.schemas import parse_path_id
from flashsale.gateway.state import GatewayState
from flashsale.store.db import UNAVAILABLE
from flashsale.store.orders import order_changes
from flashsale.store.saga import changes
from flashsale.store.saga.changes import ChangeRefused, Recorded

# A refused change's code -> HTTP status and public code (store/saga/changes.py names them).
REFUSED = {
    "NOT_FOUND": (404, "NOT_FOUND"),
    "ORDER_FINAL": (409, "ORDER_FINAL"),
    "ORDER_CAPTURED": (409, "ORDER_CAPTURED"),
    "LINE_SHIPPED": (409, "LINE_SHIPPED"),
    "UNKNOWN_LINE": (422, "UNKNOWN_LINE"),
    "LINE_QTY_EXCEEDED": (409, "LINE_QTY_EXCEEDED"),
    "NOTHING_TO_CANCEL": (409, "NOTHING_TO_CANCEL"),
    "REFUND_EXCEEDS_CAPTURED": (409, "REFUND_EXCEEDS_CAPTURED"),
    "SAGA_STEP_DEAD": (409, "SAGA_STEP_DEAD"),
    "IDEMPOTENCY_KEY_REUSED": (422, "IDEMPOTENCY_CONFLICT"),
    "INVALID_REQUEST": (422, "INVALID_REQUEST"),
}
MAX_LINES = 100
MAX_REASON = 500
MAX_AMOUNT_MINOR = 10**12


async def _body(request: Request, max_bytes: int) -> dict[str, Any]:
    """The JSON object of the body; no body at all reads as {}."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise Problem(413, "PAYLOAD_TOO_LARGE", f"bodies are limited to {max_bytes} bytes")
    if not body:
        return {}
    require_json(request.scope)
    return parse_json_object(bytes(body))


def _key(request: Request, required: bool) -> str:
    key = header(request.scope, b"idempotency-key")
    if key is None:
        if required:
            raise invalid("a refund needs an Idempotency-Key header")
        return f"auto-{uuid.uuid4().hex}"  # no replay to recognise
    if not ID_PATTERN.fullmatch(key):
        raise invalid("Idempotency-Key must be 1-64 characters of A-Z a-z 0-9 _ -")
    return key


def _fields(doc: dict[str, Any], allowed: set[str]) -> None:
    unknown = doc.keys() - allowed
    if unknown:
        raise invalid(f"body has unknown fields {', '.join(sorted(unknown))}")


def _reason(doc: dict[str, Any], required: bool) -> str:
    reason = doc.get("reason", None if required else "")
    if not isinstance(reason, str) or (required and not reason.strip()):
        raise invalid("reason must be a non-empty string" if required else "reason: a string")
    if len(reason) > MAX_REASON:
        raise invalid(f"reason is limited to {MAX_REASON} characters")
    return reason


def _lines(raw: Any) -> list[tuple[str, int]]:
    """[{"sku": id, "qty": n >= 1}, ...], each sku once."""
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_LINES:
        raise invalid(f"lines must be a list of 1 to {MAX_LINES} {{sku, qty}} objects")
    out: list[tuple[str, int]] = []
    for i, line in enumerate(raw):
        if not isinstance(line, dict) or line.keys() != {"sku", "qty"}:
            raise invalid(f"lines[{i}] must be an object with exactly sku and qty")
        sku, qty = line["sku"], line["qty"]
        if not isinstance(sku, str) or not ID_PATTERN.fullmatch(sku):
            raise invalid(f"lines[{i}].sku must be 1-64 characters of A-Z a-z 0-9 _ -")
        if not isinstance(qty, int) or isinstance(qty, bool) or not 1 <= qty <= 1_000_000:
            raise invalid(f"lines[{i}].qty must be an integer from 1 to 1000000")
        out.append((sku, qty))
    if len({sku for sku, _ in out}) != len(out):
        raise invalid("each sku may appear once in lines")
    return out


def parse_cancel(doc: dict[str, Any]) -> tuple[list[tuple[str, int]] | None, str]:
    """{} (the whole order) or {"lines": [...]}, with an optional reason."""
    _fields(doc, {"lines", "reason"})
    return (_lines(doc["lines"]) if "lines" in doc else None), _reason(doc, required=False)


def parse_refund(doc: dict[str, Any]) -> tuple[int, list[tuple[str, int]] | None, str]:
    """{"amount_minor": n, "reason"} or {"lines": [...], "reason"} (qty x the line's price)."""
    _fields(doc, {"amount_minor", "lines", "reason"})
    if ("amount_minor" in doc) == ("lines" in doc):
        raise invalid("a refund names either amount_minor or lines")
    reason = _reason(doc, required=True)
    if "lines" in doc:
        return 0, _lines(doc["lines"]), reason
    amount = doc["amount_minor"]
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise invalid("amount_minor must be an integer")
    if not 1 <= amount <= MAX_AMOUNT_MINOR:
        raise invalid(f"amount_minor must be from 1 to {MAX_AMOUNT_MINOR}")
    return amount, None, reason


def _answer(r: Recorded) -> Response:
    body = {
        "change_id": r.id,
        "order_id": r.order_id,
        "kind": r.kind,
        "status": r.status,
        "amount_minor": r.amount_minor,
        "lines": [{"sku": s, "hold_supplier": h, "qty": q} for s, h, q in r.lines],
        "outcome": r.outcome,
    }
    return json_response(body, 202, {"Idempotent-Replayed": "true"} if r.replay else {})


async def _record(state: GatewayState, work: Any) -> Response:
    """Runs `work(conn)` in one transaction; a refusal is its problem answer."""
    try:
        async with state.pool.acquire() as conn, conn.transaction():
            recorded = await work(conn)
    except ChangeRefused as exc:
        status, code = REFUSED.get(exc.code, (409, exc.code))
        raise Problem(status, code, exc.detail) from None
    except UNAVAILABLE as exc:
        raise unavailable() from exc
    return _answer(recorded)


async def customer_cancel(request: Request) -> Response:
    """The owner's cancel, before the capture; another's order answers 404 as a missing one."""
    state: GatewayState = request.app.state.gateway
    owner = callers.owner(state, request.scope)
    state.limits.take_order(request.scope, owner)
    order_id = parse_path_id(request.path_params["order"], "order id")
    key = _key(request, required=False)
    lines, reason = parse_cancel(await _body(request, state.settings.max_body_bytes))
    customer = owner if owner != callers.ANYONE else None
    return await _record(
        state,
        lambda conn: changes.request_cancel(
            conn,
            order_id,
            lines=lines,
            reason=reason,
            key=key,
            source="customer",
            customer_id=customer,
        ),
    )


async def operator_cancel(request: Request) -> Response:
    state = require_admin(request)
    order_id = parse_path_id(request.path_params["order"], "order id")
    key = _key(request, required=False)
    lines, reason = parse_cancel(await _body(request, state.settings.max_body_bytes))
    return await _record(
        state,
        lambda conn: changes.request_cancel(
            conn, order_id, lines=lines, reason=reason, key=key, source="operator"
        ),
    )


async def operator_refund(request: Request) -> Response:
    state = require_admin(request)
    order_id = parse_path_id(request.path_params["order"], "order id")
    key = _key(request, required=True)
    amount, lines, reason = parse_refund(await _body(request, state.settings.max_body_bytes))
    return await _record(
        state,
        lambda conn: changes.request_refund(
            conn,
            order_id,
            amount_minor=amount,
            lines=lines,
            reason=reason,
            key=key,
            source="operator",
        ),
    )


def _when(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _change_doc(r: Any) -> dict[str, Any]:
    return {
        "change_id": r["id"],
        "kind": r["kind"],
        "whole": r["whole"],
        "lines": [{"sku": s, "hold_supplier": h, "qty": q} for s, h, q in json.loads(r["lines"])],
        "amount_minor": r["amount_minor"],
        "reason": r["reason"],
        "source": r["source"],
        "status": r["status"],
        "outcome": r["outcome"],
        "created_at": _when(r["created_at"]),
        "applied_at": _when(r["applied_at"]),
    }


async def list_changes(request: Request) -> Response:
    """Every change asked of the order, oldest first, with its status and outcome."""
    state = require_admin(request)
    order_id = parse_path_id(request.path_params["order"], "order id")
    if request.query_params:
        raise invalid("this route takes no query parameters")
    try:
        async with state.pool.acquire() as conn:
            rows = await order_changes(conn, order_id)
    except UNAVAILABLE as exc:
        raise unavailable() from exc
    if rows is None:
        raise Problem(404, "NOT_FOUND", f"no order {order_id}")
    return json_response({"order_id": order_id, "changes": [_change_doc(r) for r in rows]})
