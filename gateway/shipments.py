"""The supplier shipment webhook, POST /v1/shipments/{supplier}: a signed shipment (carrier,
tracking id, lines) applied in the request (store/shipments.py); an operator's change of a
backorder's promised date (POST /v1/admin/backorders/{id}/promised-date); and both as the order
views show them.

Signed exactly as the stock feed webhook (gateway/feeds.py: `X-Flashsale-Timestamp`,
`X-Flashsale-Signature: v1=<hex HMAC-SHA256 of "{timestamp}.{body}">`, the supplier's feed
secret, FLASHSALE_FEED_SIGNATURE_WINDOW_S); only a supplier whose config says
`reports_shipments` takes them. The shipment id de-duplicates a replay."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from flashsale.gateway.admin import require_admin
from flashsale.gateway.feed_schemas import _fields, _int
from flashsale.gateway.feeds import PG_ERRORS, signed_json
from flashsale.gateway.problems import Problem, invalid, unavailable
from flashsale.gateway.responses import json_response, read_json
from flashsale.gateway.schemas import parse_path_id
from flashsale.gateway.state import GatewayState
from flashsale.store import feeds, promised_dates, shipments
from flashsale.store.backorders import DecisionRefused
from flashsale.store.feed_secrets import SecretUnreadable, key_bytes

MAX_SHIPMENT_BYTES = 65_536
MAX_LINES = 200
MAX_TEXT = 200
REFUSED = {  # store/shipments.py's and store/promised_dates.py's codes -> HTTP status
    "NOT_FOUND": 404,
    "ORDER_CLOSED": 409,
    "SAGA_STEP_DEAD": 409,
    "LINE_NOT_CONFIRMED": 409,
    "SHIPMENT_ID_REUSED": 409,
    "UNKNOWN_SKU": 422,
    "SHIPMENT_EXCEEDS_ORDER": 422,
    "BACKORDER_NOT_WAITING": 409,
    "ORDER_BUSY": 409,
    "DATE_IN_PAST": 422,
}


def _text(doc: dict[str, Any], name: str) -> str:
    value = doc[name]
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_TEXT or not value.isprintable():
        raise invalid(f"{name} must be a printable string of 1 to {MAX_TEXT} characters")
    return value


def _when(raw: Any) -> datetime:
    try:
        moment = datetime.fromisoformat(raw) if isinstance(raw, str) and len(raw) <= 40 else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise invalid("shipped_at must be an ISO 8601 time with its offset")
    return moment.astimezone(UTC)


def _lines(raw: Any) -> tuple[tuple[str, int], ...]:
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_LINES:
        raise invalid(f"lines must be a list of 1 to {MAX_LINES} lines")
    qty: dict[str, int] = {}
    for i, line in enumerate(raw):
        _fields(line, f"lines[{i}]", {"sku", "qty"})
        if not isinstance(line["sku"], str):
            raise invalid(f"lines[{i}].sku must be a string")
        sku = parse_path_id(line["sku"], f"lines[{i}].sku")
        qty[sku] = qty.get(sku, 0) + _int(line["qty"], f"lines[{i}].qty", 1, 1_000_000)
    return tuple(sorted(qty.items()))


def parse_shipment(supplier_id: str, doc: dict[str, Any]) -> shipments.Shipment:
    """{"shipment_id", "order_id", "carrier", "tracking_id", "shipped_at", "lines": [{sku, qty}]};
    a sku named twice is shipped once with the sum."""
    _fields(
        doc, "body", {"shipment_id", "order_id", "carrier", "tracking_id", "shipped_at", "lines"}
    )
    for name in ("shipment_id", "order_id"):
        if not isinstance(doc[name], str):
            raise invalid(f"{name} must be a string")
    return shipments.Shipment(
        supplier_id,
        parse_path_id(doc["shipment_id"], "shipment_id"),
        parse_path_id(doc["order_id"], "order_id"),
        _text(doc, "carrier"),
        _text(doc, "tracking_id"),
        _when(doc["shipped_at"]),
        _lines(doc["lines"]),
    )


async def _secret(state: GatewayState, supplier_id: str) -> str:
    """The supplier's feed secret, if it reports shipments (404 otherwise)."""
    missing = Problem(404, "NOT_FOUND", f"supplier {supplier_id} does not report shipments")
    try:
        async with state.pool.acquire() as conn:
            if not await shipments.reports_shipments(conn, supplier_id):
                raise missing
            if not state.settings.feed_key:
                raise Problem(503, "FEED_KEY_MISSING", "FLASHSALE_FEED_KEY is not set")
            secret = await feeds.feed_secret(conn, supplier_id, key_bytes(state.settings.feed_key))
    except SecretUnreadable as exc:
        raise Problem(503, "FEED_SECRET_UNREADABLE", str(exc)) from None
    except PG_ERRORS as exc:
        raise unavailable() from exc
    if secret is None:
        raise missing
    return secret


async def post_shipment(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    supplier_id, body = await signed_json(request, MAX_SHIPMENT_BYTES, _secret)
    shipment = parse_shipment(supplier_id, body)
    try:
        async with state.pool.acquire() as conn:
            receipt = await shipments.record(conn, shipment)
    except shipments.ShipmentRefused as exc:
        raise Problem(REFUSED[exc.code], exc.code, exc.detail) from None
    except PG_ERRORS as exc:
        raise unavailable() from exc
    doc: dict[str, Any] = {
        "shipment_id": receipt.shipment_id,
        "order_id": receipt.order_id,
        "duplicate": receipt.duplicate,
    }
    if receipt.duplicate:
        return json_response(doc, 200)
    doc["status"] = receipt.status
    doc["lines"] = [{"sku": sku, "qty": qty} for sku, qty in receipt.lines]
    return json_response(doc, 201)


def shipment_docs(rows: list[Any], admin: bool) -> list[dict[str, Any]]:
    """The order's shipments: carrier, tracking id, lines and time; the admin view adds who
    shipped it and its id."""
    out = []
    for r in rows:
        doc: dict[str, Any] = {
            "carrier": r["carrier"],
            "tracking_id": r["tracking_id"],
            "shipped_at": _iso(r["shipped_at"]),
            "lines": json.loads(r["lines"]),
        }
        if admin:
            doc.update(
                supplier_id=r["supplier_id"],
                shipment_id=r["shipment_id"],
                received_at=_iso(r["received_at"]),
            )
        out.append(doc)
    return out


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- promised dates ----------------------------------------------------------------------------


def parse_date_change(doc: dict[str, Any]) -> tuple[date, str]:
    """{"promised_date": "YYYY-MM-DD", "reason": "..."}."""
    _fields(doc, "body", {"promised_date", "reason"})
    raw = doc["promised_date"]
    try:
        day = date.fromisoformat(raw) if isinstance(raw, str) and len(raw) == 10 else None
    except ValueError:
        day = None
    if day is None:
        raise invalid("promised_date must be a date, YYYY-MM-DD")
    return day, _text(doc, "reason")


async def post_promised_date(request: Request) -> Response:
    state = require_admin(request)
    raw = request.path_params["backorder"]
    if not raw.isdigit() or len(raw) > 18:
        raise invalid("backorder id must be a positive integer")
    day, reason = parse_date_change(await read_json(request, state.settings.max_body_bytes))
    today = datetime.now(UTC).date()
    try:
        async with state.pool.acquire() as conn:
            order_id, previous = await promised_dates.change(conn, int(raw), day, reason, today)
    except DecisionRefused as exc:
        again = {"Retry-After": "1"} if exc.code == "ORDER_BUSY" else None
        raise Problem(REFUSED[exc.code], exc.code, exc.detail, again) from None
    except PG_ERRORS as exc:
        raise unavailable() from exc
    doc = {
        "backorder_id": int(raw),
        "order_id": order_id,
        "promised_date": day.isoformat(),
        "previous_date": previous.isoformat() if previous else None,
        "reason": reason,
    }
    return json_response(doc, 200)


async def after_sale(state: GatewayState, order_id: str, admin: bool) -> dict[str, Any]:
    """What the order views add: its shipments and the promised dates of its backorders."""
    try:
        async with state.pool.acquire() as conn:
            sent = await shipments.of_order(conn, order_id)
            dates = await promised_dates.history(conn, order_id)
    except PG_ERRORS as exc:
        raise unavailable() from exc
    return {
        "shipments": shipment_docs(sent, admin),
        "promised_dates": [
            {
                "sku": r["sku"],
                "promised_date": r["promised_date"].isoformat(),
                "reason": r["reason"],
                "at": _iso(r["at"]),
                **({"backorder_id": r["backorder_id"], "source": r["source"]} if admin else {}),
            }
            for r in dates
        ],
    }
