"""The public view of a sale: names, status, times, a soft availability level per sku, and where
the queue page sends a shopper after reserving."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from flashsale.engine.errors import EngineUnavailable, InvalidInput
from flashsale.engine.results import SkuStock
from flashsale.engine.sale import SaleRecord
from flashsale.gateway.problems import Problem, invalid, unavailable
from flashsale.gateway.responses import json_response
from flashsale.gateway.schemas import iso
from flashsale.gateway.state import GatewayState
from flashsale.store.feeds import SaleFeedStatus

LOW_STOCK_SHARE = 0.1


def availability(sku: SkuStock) -> str:
    """A soft level, not a count: exact numbers invite bots to time their requests."""
    if sku.available <= 0:
        return "sold_out"
    if sku.available <= max(1, int((sku.loaded + sku.adjusted) * LOW_STOCK_SHARE)):
        return "low"
    return "in_stock"


async def _record(state: GatewayState, sale_id: str) -> SaleRecord | None:
    """The record PostgreSQL keeps (cached per worker): the names shoppers see, the shop's
    return_url, the room's session length. None while PostgreSQL cannot say: ids then stand in
    for names, and the page offers no way on to the shop."""
    try:
        return await state.records.get(sale_id)
    except EngineUnavailable:
        return None


def _shopper_fields(record: SaleRecord | None, sale_id: str) -> dict[str, Any]:
    if record is None:
        return {"name": sale_id, "return_url": None, "waiting_room": None}
    room = record.waiting_room
    return {
        "name": record.name,
        "return_url": record.return_url or None,
        "waiting_room": {"enabled": room.enabled, "token_ttl_s": room.token_ttl_s},
    }


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
    record = await _record(state, sale_id)
    names = {i.sku: i.name for i in record.items if i.name} if record else {}
    doc: dict[str, Any] = {
        "sale_id": sale_id,
        **_shopper_fields(record, sale_id),
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
    add_feed_status(doc, await state.feeds.sale(sale_id))
    return json_response(doc, headers={"Cache-Control": "public, max-age=1"})


def add_feed_status(doc: dict[str, Any], status: SaleFeedStatus | None) -> None:
    """`stock_as_of`: how current the stock of suppliers with a feed is (the oldest of their
    newest levels; null without a feed, before its first level, or while PostgreSQL cannot
    say); `updating`: a supplier of the sale has a stale feed (the "inventory updating"
    badge). Items keep their shape: a level, never a count."""
    at = status.stock_as_of_ms if status else None
    doc["stock_as_of"] = iso(at) if at is not None else None
    doc["updating"] = bool(status and status.updating)
