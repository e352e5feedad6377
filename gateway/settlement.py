"""The settlement route: a sale's money and units after the sale (store/settlement.py)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from flashsale.gateway.admin import require_admin
from flashsale.gateway.problems import Problem, unavailable
from flashsale.gateway.responses import json_response
from flashsale.gateway.schemas import parse_path_id
from flashsale.store import settlement
from flashsale.store.db import UNAVAILABLE


async def get_settlement(request: Request) -> Response:
    state = require_admin(request)
    sale_id = parse_path_id(request.path_params["sale"], "sale")
    try:
        async with state.pool.acquire() as conn:
            if not await settlement.exists(conn, sale_id):
                raise Problem(404, "NOT_FOUND", f"no sale {sale_id}")
            doc = await settlement.settlement(conn, sale_id)
    except UNAVAILABLE as exc:
        raise unavailable() from exc
    return json_response(doc)
