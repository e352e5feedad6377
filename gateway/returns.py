"""The returns route: an operator records returned units (store/returns.py); restockable ones
of a sale still running go back on sale through the engine's adjust, and the refund follows
(the saga's order.change step pays it back)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from flashsale.engine.errors import EngineUnavailable
from flashsale.engine.keys import ID_PATTERN
from flashsale.engine.results import Code
from flashsale.gateway.admin import require_admin
from flashsale.gateway.http import header
from flashsale.gateway.problems import Problem, invalid, unavailable
from flashsale.gateway.responses import json_response, read_json
from flashsale.gateway.schemas import parse_path_id, parse_return
from flashsale.gateway.state import GatewayState
from flashsale.store import returns
from flashsale.store.db import UNAVAILABLE

RESTOCK_WAIT_S = 5.0

# A refused return's code -> HTTP status and public code.
REFUSED = {
    "NOT_FOUND": (404, "NOT_FOUND"),
    "ORDER_NOT_CAPTURED": (409, "ORDER_NOT_CAPTURED"),
    "RETURN_EXCEEDS_ORDER": (409, "RETURN_EXCEEDS_ORDER"),
    "RETURN_NOT_SHIPPED": (409, "RETURN_NOT_SHIPPED"),
    "LINE_QTY_EXCEEDED": (409, "RETURN_EXCEEDS_ORDER"),  # refunded by line already
    "REFUND_EXCEEDS_CAPTURED": (409, "REFUND_EXCEEDS_CAPTURED"),
    "SAGA_STEP_DEAD": (409, "SAGA_STEP_DEAD"),
    "IDEMPOTENCY_CONFLICT": (422, "IDEMPOTENCY_CONFLICT"),
    "IDEMPOTENCY_KEY_REUSED": (422, "IDEMPOTENCY_CONFLICT"),
    "INVALID_REQUEST": (422, "INVALID_REQUEST"),
}


def _when(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _doc(row: Any, lines: list[Any]) -> dict[str, Any]:
    return {
        "return_id": row["id"],
        "order_id": row["order_id"],
        "sale_id": row["sale_id"],
        "reason": row["reason"],
        "refund": {"change_id": row["refund_change_id"], "amount_minor": row["refund_minor"]},
        "restock": row["restock"],
        "lines": [
            {
                "sku": r["sku"],
                "hold_supplier": r["hold_supplier"],
                "qty": r["qty"],
                "condition": r["condition"],
                "destination": r["destination"],
                "restocked_qty": r["restocked_qty"],
                "refund_minor": r["refund_minor"],
            }
            for r in lines
        ],
        "at": _when(row["at"]),
    }


def _key(request: Request) -> str:
    key = header(request.scope, b"idempotency-key")
    if key is None:
        raise invalid("a return needs an Idempotency-Key header")
    if not ID_PATTERN.fullmatch(key):
        raise invalid("Idempotency-Key must be 1-64 characters of A-Z a-z 0-9 _ -")
    return key


async def post_return(request: Request) -> Response:
    state = require_admin(request)
    order_id = parse_path_id(request.path_params["order"], "order id")
    key = _key(request)
    asked, reason = parse_return(await read_json(request, state.settings.max_body_bytes))
    try:
        async with state.pool.acquire() as conn:
            return_id, replay = await returns.record(conn, order_id, key, asked, reason)
            await _restock(state, conn, return_id, order_id)
            row, lines = await _settled(conn, return_id)
    except returns.ReturnRefused as exc:
        status, code = REFUSED.get(exc.code, (409, exc.code))
        again = {"Retry-After": "1"} if code == "ORDER_BUSY" else None
        raise Problem(status, code, exc.detail, again) from None
    except UNAVAILABLE as exc:
        raise unavailable() from exc
    headers = {"Idempotent-Replayed": "true"} if replay else {}
    return json_response(_doc(row, lines), 201, headers)


async def _settled(conn: Any, return_id: int) -> tuple[Any, list[Any]]:
    """The return once a restock another request is making is done (a replay that raced its
    first request answers what the first answers), or as it is after RESTOCK_WAIT_S."""
    deadline = time.monotonic() + RESTOCK_WAIT_S
    row, lines = await returns.load(conn, return_id)
    while row["restock"] == "restocking" and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        row, lines = await returns.load(conn, return_id)
    return row, lines


async def _restock(state: GatewayState, conn: Any, return_id: int, order_id: str) -> None:
    """Adds the return's restockable units back to the sale (each an adjust: a ledger row
    naming the return, made once for the line's key however often it is asked), if this caller
    claims the restock; a sale Redis no longer has keeps them in the return's record only. On
    an engine error the lines done are kept and the rest left pending for a replay (503)."""
    todo = await returns.claim_restock(conn, return_id)
    done: list[tuple[returns.Restock, int, str]] = []
    for x in todo:
        reason = f"return {return_id} of order {order_id}: {x.qty} x {x.sku} restocked"
        once = returns.once_key(return_id, x)
        try:
            result = await state.engine.adjust(
                x.sale_id, x.sku, x.hold_supplier, x.qty, reason, once=once
            )
        except EngineUnavailable as exc:
            await returns.restocked(conn, return_id, done, finished=False)
            raise unavailable() from exc
        if result.code is Code.OK:
            done.append((x, result.applied, "sale_stock"))
        else:
            done.append((x, 0, "ledger"))
    if todo:
        await returns.restocked(conn, return_id, done, finished=True)
