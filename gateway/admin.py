"""Admin routes: create or replace a sale (PostgreSQL, then Redis), change status, read it live."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from flashsale.engine import keys
from flashsale.engine.connection import redis_errors
from flashsale.engine.errors import EngineUnavailable
from flashsale.engine.results import Code, SaleState
from flashsale.gateway import callers
from flashsale.gateway.http import ADMIN_MAX_BYTES
from flashsale.gateway.problems import Problem, from_code, unavailable
from flashsale.gateway.responses import json_response, read_json
from flashsale.gateway.schemas import credit_policy_doc, iso, parse_sale
from flashsale.gateway.state import GatewayState
from flashsale.store import retailer_ledger, sales
from flashsale.store.db import UNAVAILABLE
from flashsale.store.feed_intake import apply_to_sale

STATUS_OF_ACTION = {"open": "open", "pause": "paused", "close": "closed"}


class _Rollback(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem


def require_admin(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    if not callers.is_admin(state, request.scope):
        raise Problem(
            401,
            "UNAUTHORIZED",
            "admin routes need the admin bearer key",
            {"WWW-Authenticate": "Bearer"},
        )
    return state


async def put_sale(request: Request) -> Response:
    state = require_admin(request)
    record = parse_sale(request.path_params["sale"], await read_json(request, ADMIN_MAX_BYTES))
    try:
        async with state.pool.acquire() as conn, conn.transaction():
            existed = await sales.load_sale_record(conn, record.sale_id) is not None
            version = await sales.save_sale(conn, record)
            # Redis inside the transaction: a refusal there rolls PostgreSQL back too.
            result = await state.engine.load_sale(record.to_config(version))
            if result.code not in (Code.OK, Code.ALREADY_LOADED):
                detail = f"{result.code}: sku {result.sku} supplier {result.supplier}".strip()
                raise _Rollback(from_code(result.code, detail))
            # Suppliers with a stock feed: the sale offers what their newest levels allow.
            await apply_to_sale(conn, state.engine, record.sale_id)
    except _Rollback as exc:
        raise exc.problem from None
    except sales.StoreConflict as exc:
        raise Problem(409, "STOCK_COMMITTED", str(exc)) from None
    except (EngineUnavailable, OSError) as exc:
        raise unavailable() from exc
    body = {"sale_id": record.sale_id, "version": version}
    return json_response(body, 200 if existed else 201)


async def change_status(request: Request) -> Response:
    state = require_admin(request)
    sale_id, action = request.path_params["sale"], request.path_params["action"]
    status = STATUS_OF_ACTION.get(action)
    if status is None:
        raise Problem(404, "NOT_FOUND", f"no action {action}; use open, pause or close")
    try:
        async with state.pool.acquire() as conn, conn.transaction():
            if not await sales.set_status(conn, sale_id, status):
                raise _Rollback(Problem(404, "NOT_FOUND", f"no sale {sale_id}"))
            code, previous = await state.engine.set_status(sale_id, status)
            if code is not Code.OK:
                raise _Rollback(from_code(code, f"sale {sale_id} is {previous or 'not loaded'}"))
    except _Rollback as exc:
        raise exc.problem from None
    except (EngineUnavailable, OSError) as exc:
        raise unavailable() from exc
    return json_response({"sale_id": sale_id, "status": status, "previous": previous})


async def get_sale_live(request: Request) -> Response:
    state = require_admin(request)
    sale_id = request.path_params["sale"]
    try:
        live = await state.engine.stock(sale_id)
        lag = await reconciler_lag(state, sale_id) if live else {}
        room = await room_figures(request, sale_id) if live else None
    except EngineUnavailable as exc:
        raise unavailable() from exc
    if live is None:
        raise Problem(404, "NOT_FOUND", f"no sale {sale_id} is loaded")
    policy = await sale_credit_policy(state, sale_id)
    return json_response(
        {**live_state(live), "reconciler": lag, "waiting_room": room, "credit_policy": policy}
    )


async def room_figures(request: Request, sale_id: str) -> dict[str, Any] | None:
    """The waiting room's line and pace as this worker sees them; None without a room."""
    views = request.app.state.queue.views
    room = await views.state(sale_id)
    if room is None or not room.has_room:
        return None
    window = views.windows.get(sale_id)
    return {
        "status": room.status,
        "tickets": room.seq,
        "waiting": room.waiting,
        "serving": room.serving,
        "admitted": room.admitted,
        "active": room.active,
        "admit_rate_per_s": room.rate_per_s,
        "measured_admit_rate_per_s": round(window.admit_rate(), 2) if window else 0.0,
    }


async def sale_credit_policy(state: GatewayState, sale_id: str) -> str | dict[str, float] | None:
    """The retailer's credit policy of the sale (None: PostgreSQL does not know it)."""
    try:
        async with state.pool.acquire() as conn:
            policy = await retailer_ledger.credit_policy(conn, sale_id)
    except UNAVAILABLE as exc:
        raise unavailable() from exc
    return None if policy is None else credit_policy_doc(policy)


def live_state(live: SaleState) -> dict[str, Any]:
    return {
        "sale_id": live.sale_id,
        "status": live.status,
        "version": live.version,
        "starts_at": iso(live.starts_at_ms),
        "ends_at": iso(live.ends_at_ms) if live.ends_at_ms else None,
        "open_holds": live.open_holds,
        "skus": [
            {
                "sku": s.sku,
                "loaded": s.loaded,
                "adjusted": s.adjusted,
                "available": s.available,
                "reserved": s.reserved,
                "sold": s.sold,
                "suppliers": [
                    {
                        "supplier": p.supplier,
                        "loaded": p.loaded,
                        "adjusted": p.adjusted,
                        "available": p.available,
                        "reserved": p.reserved,
                        "sold": p.sold,
                    }
                    for p in s.suppliers
                ],
            }
            for s in live.skus
        ],
    }


async def reconciler_lag(state: GatewayState, sale_id: str) -> dict[str, Any]:
    """Stream entries the reconciler's consumer group has not read yet (all of them before it
    first runs)."""
    client = state.engine.client
    stream = keys.events(sale_id)
    with redis_errors():
        length = int(await client.xlen(stream))
        # XINFO GROUPS errors on a missing stream, so only ask once it exists.
        groups: list[dict[str, Any]] = await client.xinfo_groups(stream) if length else []
    lag = min((int(g.get("lag") or 0) for g in groups), default=length)
    pending = sum(int(g.get("pending") or 0) for g in groups)
    return {"stream_length": length, "unread": lag, "pending": pending}
