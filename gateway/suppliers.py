"""Admin routes of suppliers and their stock feeds: PUT and GET /v1/admin/suppliers/{supplier}.
GET never shows the feed secret, only whether one is set."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from flashsale.engine.feeds import FeedConfig
from flashsale.gateway.admin import require_admin
from flashsale.gateway.feed_schemas import parse_supplier
from flashsale.gateway.feeds import PG_ERRORS
from flashsale.gateway.http import ADMIN_MAX_BYTES
from flashsale.gateway.problems import Problem, invalid, unavailable
from flashsale.gateway.responses import json_response, read_json
from flashsale.gateway.schemas import iso, parse_path_id
from flashsale.gateway.state import GatewayState
from flashsale.store import feeds, shipments
from flashsale.store.feed_secrets import key_bytes, seal


async def put_supplier(request: Request) -> Response:
    state = require_admin(request)
    supplier_id = parse_path_id(request.path_params["supplier"], "supplier")
    body = parse_supplier(await read_json(request, ADMIN_MAX_BYTES), dev=state.settings.dev)
    sealed = None
    if body.secret is not None:
        if not state.settings.feed_key:
            raise Problem(503, "FEED_KEY_MISSING", "set FLASHSALE_FEED_KEY to store feed secrets")
        sealed = seal(key_bytes(state.settings.feed_key), supplier_id, body.secret)
    try:
        async with state.pool.acquire() as conn, conn.transaction():
            needs_secret = body.feed.kind == "webhook" and sealed is None
            if needs_secret and not await feeds.has_secret(conn, supplier_id):
                raise invalid("a webhook feed needs feed.secret")
            if (
                body.reports_shipments
                and sealed is None
                and not await feeds.has_secret(conn, supplier_id)
            ):
                raise invalid("reports_shipments needs feed.secret to check shipment signatures")
            created = await feeds.save_feed(conn, supplier_id, body.name, body.feed, sealed)
            if body.reports_shipments is not None:
                await shipments.set_reports_shipments(conn, supplier_id, body.reports_shipments)
            doc = await supplier_view(conn, supplier_id)
    except PG_ERRORS as exc:
        raise unavailable() from exc
    return json_response(doc, 201 if created else 200)


async def get_supplier(request: Request) -> Response:
    state: GatewayState = require_admin(request)
    supplier_id = parse_path_id(request.path_params["supplier"], "supplier")
    try:
        async with state.pool.acquire() as conn:
            doc = await supplier_view(conn, supplier_id)
    except PG_ERRORS as exc:
        raise unavailable() from exc
    return json_response(doc)


async def supplier_view(conn: Any, supplier_id: str) -> dict[str, Any]:
    """The supplier, its feed config (no secret) and health, and the records held for review."""
    name = await feeds.supplier_name(conn, supplier_id)
    if name is None:
        raise Problem(404, "NOT_FOUND", f"no supplier {supplier_id}")
    found = await feeds.load_feed(conn, supplier_id)
    if found is None:
        return {
            "supplier_id": supplier_id,
            "name": name,
            "reports_shipments": False,
            "feed": None,
            "health": None,
            "quarantine": [],
        }
    health = await feeds.health(conn, supplier_id)
    held = await feeds.open_quarantine(conn, supplier_id)
    return {
        "supplier_id": supplier_id,
        "name": name,
        "reports_shipments": await shipments.reports_shipments(conn, supplier_id),
        "feed": feed_doc(found.feed, found.has_secret),
        "health": health_doc(health) if health else None,
        "quarantine": [
            {
                "delivery_id": r["delivery_id"],
                "line": r["line"],
                "supplier_sku": r["supplier_sku"],
                "on_hand": r["on_hand"],
                "as_of": _iso(r["as_of"]),
                "reason": r["reason"],
                "held_at": _iso(r["created_at"]),
            }
            for r in held
        ],
    }


def _iso(moment: Any) -> str | None:
    return None if moment is None else iso(feeds.ms(moment))


def _iso_ms(at_ms: int | None) -> str | None:
    return None if at_ms is None else iso(at_ms)


def feed_doc(feed: FeedConfig, has_secret: bool) -> dict[str, Any]:
    t = feed.thresholds
    return {
        "kind": feed.kind,
        "url": feed.url or None,
        "interval_s": feed.interval_s or None,
        "format": feed.format,
        "secret_set": has_secret,
        "sku_map": [
            {"supplier_sku": s, "sku": m.sku, "pack_size": m.pack_size}
            for s, m in sorted(feed.sku_map.items())
        ],
        "thresholds": {
            "max_units": t.max_units,
            "max_drop_pct": t.max_drop_pct,
            "max_spike_pct": t.max_spike_pct,
            "min_base_units": t.min_base_units,
            "stale_after_s": t.stale_after_s,
            "max_future_s": t.max_future_s,
        },
    }


def health_doc(h: feeds.FeedHealth) -> dict[str, Any]:
    return {
        "stale": h.stale,
        "age_s": round(h.age_s, 3),
        "stale_after_s": h.stale_after_s,
        "last_update_at": _iso_ms(h.last_applied_ms),
        "last_as_of": _iso_ms(h.last_as_of_ms),
        "last_lag_ms": h.last_lag_ms,
        "deliveries": dict(h.deliveries),
        "records": dict(h.records),
        "quarantine_open": h.quarantine_open,
        "poll_errors": h.poll_errors,
        "last_poll_at": _iso_ms(h.last_poll_ms),
        "last_poll_error": h.last_poll_error or None,
        "last_poll_error_at": _iso_ms(h.last_poll_error_ms),
    }
