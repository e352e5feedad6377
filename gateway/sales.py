"""The public view of a sale: status, times and a soft availability level per sku."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from flashsale.engine.errors import EngineUnavailable, InvalidInput
from flashsale.engine.results import SkuStock
from flashsale.gateway.problems import Problem, invalid, unavailable
from flashsale.gateway.responses import json_response
from flashsale.gateway.schemas import iso
from flashsale.gateway.state import GatewayState

LOW_STOCK_SHARE = 0.1


def availability(sku: SkuStock) -> str:
    """A soft level, not a count: exact numbers invite bots to time their requests."""
    if sku.available <= 0:
        return "sold_out"
    if sku.available <= max(1, int((sku.loaded + sku.adjusted) * LOW_STOCK_SHARE)):
        return "low"
    return "in_stock"


async def _names(state: GatewayState, sale_id: str) -> dict[str, str]:
    """The sale's name (key '') and its items' names, from the record PostgreSQL keeps (cached
    per worker); while PostgreSQL cannot say, ids stand in for names."""
    try:
        record = await state.records.get(sale_id)
    except EngineUnavailable:
        return {}
    if record is None:
        return {}
    return {"": record.name} | {i.sku: i.name for i in record.items if i.name}


async def get_sale(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    sale_id = request.path_params["sale"]
    try:
        live = await state.cached_stock(sale_id)
    except InvalidInput as exc:
        raise invalid(str(exc)) from None
    except EngineUnavailable as exc:
        raise unavailable() from exc
    if live is None:
        raise Problem(404, "NOT_FOUND", f"no sale {sale_id}")
    names = await _names(state, sale_id)
    doc: dict[str, Any] = {
        "sale_id": sale_id,
        "name": names.get("", sale_id),
        "status": live.status,
        "starts_at": iso(live.starts_at_ms),
        "ends_at": iso(live.ends_at_ms) if live.ends_at_ms else None,
        "hold_ttl_s": live.hold_ttl_ms // 1000,
        "per_user_limit": live.per_user_limit,
        "items": [
            {"sku": s.sku, "name": names.get(s.sku, s.sku), "availability": availability(s)}
            for s in live.skus
        ],
    }
    return json_response(doc, headers={"Cache-Control": "public, max-age=1"})
