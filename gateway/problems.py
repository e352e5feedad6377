"""Errors as application/problem+json: one table from codes to HTTP statuses, one exception type."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import orjson

from flashsale.engine.errors import EngineUnavailable, InvalidInput
from flashsale.engine.results import Code

T = TypeVar("T")

PROBLEM_TYPE = "application/problem+json"

# Engine codes -> (HTTP status, public code). Every answer a client can get is listed here.
STATUS_OF: dict[str, tuple[int, str]] = {
    Code.SOLD_OUT: (409, "SOLD_OUT"),
    Code.LIMIT_EXCEEDED: (409, "LIMIT_EXCEEDED"),
    Code.SALE_NOT_OPEN: (409, "SALE_NOT_OPEN"),
    Code.UNKNOWN_SALE: (404, "NOT_FOUND"),
    Code.UNKNOWN_HOLD: (404, "NOT_FOUND"),
    Code.UNKNOWN_SKU: (422, "UNKNOWN_SKU"),
    Code.UNKNOWN_SUPPLIER: (422, "UNKNOWN_SUPPLIER"),
    Code.HOLD_EXPIRED: (410, "HOLD_EXPIRED"),
    Code.HOLD_RELEASED: (410, "HOLD_RELEASED"),
    Code.HOLD_CONFIRMED: (409, "HOLD_CONFIRMED"),
    Code.NOT_CONFIRMED: (409, "NOT_CONFIRMED"),
    Code.ALREADY_EXTENDED: (409, "ALREADY_EXTENDED"),
    Code.IDEMPOTENCY_CONFLICT: (422, "IDEMPOTENCY_CONFLICT"),
    Code.STOCK_COMMITTED: (409, "STOCK_COMMITTED"),
    Code.STALE_VERSION: (409, "STALE_VERSION"),
    Code.BAD_TRANSITION: (409, "BAD_TRANSITION"),
    Code.NOT_ADMITTED: (403, "NOT_ADMITTED"),
    Code.TOKEN_EXHAUSTED: (403, "TOKEN_EXHAUSTED"),
    Code.TOKEN_EXPIRED: (401, "TOKEN_EXPIRED"),
    Code.NO_WAITING_ROOM: (409, "NO_WAITING_ROOM"),
    Code.RATE_LIMITED: (429, "RATE_LIMITED"),
}

TITLES = {
    "SOLD_OUT": "Sold out",
    "LIMIT_EXCEEDED": "Per-customer limit reached",
    "SALE_NOT_OPEN": "The sale is not open",
    "NOT_FOUND": "Not found",
    "UNKNOWN_SKU": "Unknown sku",
    "UNKNOWN_SUPPLIER": "Unknown supplier",
    "HOLD_EXPIRED": "The hold has expired",
    "HOLD_RELEASED": "The hold was released",
    "HOLD_CONFIRMED": "The hold is already confirmed",
    "NOT_CONFIRMED": "The hold is not confirmed",
    "ALREADY_EXTENDED": "The hold was already extended once",
    "IDEMPOTENCY_CONFLICT": "Idempotency-Key reused with another request",
    "STOCK_COMMITTED": "Stock already reserved or sold would be dropped",
    "STALE_VERSION": "A newer configuration is loaded",
    "BAD_TRANSITION": "That status change is not allowed",
    "NOT_ADMITTED": "A waiting-room admission is needed",
    "TOKEN_INVALID": "The admission token is not valid",
    "TOKEN_EXPIRED": "The admission token has expired",
    "TOKEN_WRONG_SALE": "The admission token is for another sale",
    "TOKEN_WRONG_CUSTOMER": "The admission token is for another customer",
    "TOKEN_EXHAUSTED": "The admission token has no checkout attempts left",
    "NO_WAITING_ROOM": "This sale has no waiting room",
    "DRAW_NOT_REVEALED": "The pre-queue draw is revealed when the room opens",
    "BACKORDER_CLOSED": "The backorder is already decided",
    "SAGA_STEP_DEAD": "The order's saga is stopped at a dead-lettered step",
    "NOT_DEAD": "The order has no dead-lettered step to retry",
    "LINE_NOT_CONFIRMED": "The supplier has not confirmed that line yet: send it again later",
    "SHIPMENT_ID_REUSED": "That shipment id was already used for another shipment",
    "ORDER_BUSY": "A saga step of the order is running: try again in a moment",
    "ORDER_FINAL": "The order is final: nothing left to cancel",
    "ORDER_CAPTURED": "The payment is captured: only the shop can cancel now",
    "LINE_SHIPPED": "Those units have shipped",
    "UNKNOWN_LINE": "The order has no such line",
    "LINE_QTY_EXCEEDED": "More units than the line has left",
    "NOTHING_TO_CANCEL": "The order has no unit left to cancel",
    "REFUND_EXCEEDS_CAPTURED": "More than was captured and not yet refunded",
    "RETURN_EXCEEDS_ORDER": "More units returned than the order has left to return",
    "RETURN_NOT_SHIPPED": "Its supplier has not reported those units shipped yet",
    "ORDER_NOT_CAPTURED": "The order's payment is not captured",
    "SIGNATURE_MISSING": "The feed signature headers are missing",
    "SIGNATURE_STALE": "The feed signature's timestamp is too old or too new",
    "SIGNATURE_INVALID": "The feed signature does not match",
    "FEED_KEY_MISSING": "The key that seals feed secrets is not configured",
    "FEED_SECRET_UNREADABLE": "The stored feed secret cannot be opened",
    "INVALID_REQUEST": "Invalid request",
    "MALFORMED_JSON": "The body is not valid JSON",
    "PAYLOAD_TOO_LARGE": "The body is too large",
    "UNAUTHORIZED": "Missing or wrong credentials",
    "CUSTOMER_UNAUTHENTICATED": "The customer token is missing or not valid",
    "CUSTOMER_MISMATCH": "The body names another customer than the token",
    "UNSUPPORTED_MEDIA_TYPE": "The body must be application/json",
    "METHOD_NOT_ALLOWED": "Method not allowed",
    "RATE_LIMITED": "Too many requests",
    "UNAVAILABLE": "Temporarily unavailable",
    "INTERNAL": "Internal error",
}


class Problem(Exception):
    """An answer that is not a success; raised anywhere in a handler, rendered once."""

    def __init__(
        self, status: int, code: str, detail: str = "", headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}

    def body(self, instance: str = "") -> bytes:
        doc = {
            "type": f"https://flashsale.dev/problems/{self.code.lower().replace('_', '-')}",
            "title": TITLES.get(self.code, self.code),
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if instance:
            doc["instance"] = instance
        return orjson.dumps(doc)


def from_code(code: Code, detail: str = "") -> Problem:
    status, public = STATUS_OF[code]
    return Problem(status, public, detail)


def invalid(detail: str) -> Problem:
    return Problem(422, "INVALID_REQUEST", detail)


def unavailable() -> Problem:
    return Problem(503, "UNAVAILABLE", "storage is not answering", {"Retry-After": "1"})


async def engine_call(call: Awaitable[T]) -> T:
    """Awaits an engine call, turning bad input into 422 and broken storage into 503."""
    try:
        return await call
    except InvalidInput as exc:
        raise invalid(str(exc)) from None
    except EngineUnavailable:
        raise unavailable() from None
