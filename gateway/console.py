"""The operator console: its page and assets under /admin/, and the admin routes only it needed
(the sales to pick from, the dead-lettered saga steps and their retry)."""

from __future__ import annotations

from datetime import datetime
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from flashsale.engine.errors import EngineUnavailable
from flashsale.gateway.admin import require_admin
from flashsale.gateway.http import parse_json_object, require_json
from flashsale.gateway.problems import Problem, invalid, unavailable
from flashsale.gateway.responses import json_response
from flashsale.gateway.schemas import parse_path_id
from flashsale.store import orders, sales
from flashsale.store.db import UNAVAILABLE
from flashsale.store.saga.claims import retry_dead

# No inline script or style anywhere: the page, its script and its stylesheet are files.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
ASSET_TYPES = {"admin.js": "text/javascript", "admin.css": "text/css"}
MAX_LISTED = 1000
MAX_RETRY_BODY_BYTES = 1024  # nothing to say but {}
RETRIED_BY = "an operator over the admin API"


def when(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _static(name: str) -> bytes:
    return resources.files("flashsale.gateway").joinpath(f"static/{name}").read_bytes()


PAGE = _static("admin.html")
ASSETS = {name: _static(name) for name in ASSET_TYPES}


async def console_page(request: Request) -> Response:
    """GET /admin/: the page asks for the admin key itself; serving it needs none."""
    return Response(PAGE, 200, PAGE_HEADERS, media_type="text/html; charset=utf-8")


async def console_asset(request: Request) -> Response:
    name = request.path_params["name"]
    body = ASSETS.get(name)
    if body is None:
        raise Problem(404, "NOT_FOUND", f"no asset {name}")
    return Response(body, 200, PAGE_HEADERS, media_type=f"{ASSET_TYPES[name]}; charset=utf-8")


async def list_sales(request: Request) -> Response:
    """GET /v1/admin/sales: the sales PostgreSQL knows, newest first, each marked with whether
    Redis holds it (only a loaded sale has a live view)."""
    state = require_admin(request)
    if request.query_params:
        raise invalid("this route takes no query parameters")
    try:
        loaded = set(await state.engine.sale_ids())
        async with state.pool.acquire() as conn:
            rows = await sales.recent_sales(conn, MAX_LISTED)
    except EngineUnavailable as exc:
        raise unavailable() from exc
    except UNAVAILABLE as exc:
        raise unavailable() from exc
    listed = [
        {
            "sale_id": r["sale_id"],
            "name": r["name"],
            "status": r["status"],
            "starts_at": when(r["starts_at"]),
            "loaded": r["sale_id"] in loaded,
        }
        for r in rows
    ]
    return json_response({"sales": listed})


def _limit(raw: str | None) -> int:
    if raw is None:
        return 200
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LISTED:
        raise invalid(f"limit must be an integer from 1 to {MAX_LISTED}")
    return int(raw)


def _dead_query(request: Request) -> int:
    """Only the dead letters are listed here (`dead=true`); the limit, if given."""
    params = request.query_params
    unknown = sorted(set(params.keys()) - {"dead", "limit"})
    if unknown:
        raise invalid(f"unknown query parameters: {', '.join(unknown)}")
    if params.get("dead") != "true":
        raise invalid("list orders with dead=true (the dead-lettered saga steps)")
    return _limit(params.get("limit"))


def _dead(r: Any) -> dict[str, Any]:
    return {
        "order_id": r["order_id"],
        "sale_id": r["sale_id"],
        "status": r["status"],
        "step": r["dead_step"],
        "attempts": r["attempts"],
        "last_error": r["last_error"],
        "at": when(r["updated_at"]),
    }


async def list_orders(request: Request) -> Response:
    """GET /v1/admin/orders?dead=true: orders stopped at a dead-lettered step, newest first."""
    state = require_admin(request)
    limit = _dead_query(request)
    try:
        async with state.pool.acquire() as conn:
            rows = await orders.dead_orders(conn, limit)
    except UNAVAILABLE as exc:
        raise unavailable() from exc
    return json_response({"orders": [_dead(r) for r in rows]})


async def retry_order(request: Request) -> Response:
    """POST /v1/admin/orders/{order}/retry: what `flashsale saga retry --order` does; the
    saga runs the step again (a new count of tries). No body, or an empty JSON object."""
    state = require_admin(request)
    order_id = parse_path_id(request.path_params["order"], "order id")
    await _no_fields(request)
    try:
        async with state.pool.acquire() as conn:
            step = await retry_dead(conn, order_id, by=RETRIED_BY)
            exists = step is not None or await orders.order_exists(conn, order_id)
    except UNAVAILABLE as exc:
        raise unavailable() from exc
    if not exists:
        raise Problem(404, "NOT_FOUND", f"no order {order_id}")
    if step is None:
        raise Problem(409, "NOT_DEAD", f"order {order_id} has no dead-lettered step")
    return json_response({"order_id": order_id, "step": step, "status": "due"}, 202)


async def _no_fields(request: Request) -> None:
    """The retry says nothing: no body, or `{}`; malformed JSON or any field is refused."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_RETRY_BODY_BYTES:
            raise Problem(413, "PAYLOAD_TOO_LARGE", "send no body, or {}")
    if not body:
        return
    require_json(request.scope)
    doc = parse_json_object(bytes(body))
    if doc:
        raise invalid(f"body has unknown fields {', '.join(sorted(doc))}; send no body, or {{}}")
