"""The supplier stock webhook, POST /v1/feeds/{supplier}: a signed delivery, applied in the
request (store/feed_intake.py), answered with its counts. Only a supplier whose feed kind is
`webhook` takes them; a worker runs one delivery per supplier at a time (gateway/feed_turns.py),
so a busy supplier cannot take the whole PostgreSQL pool.

The signature is `v1=<hex HMAC-SHA256 of "{timestamp}.{body}">` with the supplier's feed secret,
over the exact bytes received, compared in constant time; a timestamp more than
FLASHSALE_FEED_SIGNATURE_WINDOW_S away from the gateway's clock is refused, so a captured request
is only good for that long. Within it, a replayed request is still just its delivery: the
delivery id is what de-duplicates."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from flashsale.engine.errors import EngineUnavailable, InvalidInput
from flashsale.gateway.feed_schemas import parse_delivery
from flashsale.gateway.http import parse_json_object, require_json
from flashsale.gateway.problems import Problem, invalid, unavailable
from flashsale.gateway.responses import json_response
from flashsale.gateway.schemas import parse_path_id
from flashsale.gateway.state import GatewayState
from flashsale.store import feeds
from flashsale.store.feed_intake import receive
from flashsale.store.feed_secrets import SecretUnreadable, key_bytes

SIGNATURE_PREFIX = "v1="
PG_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
CHALLENGE = {"WWW-Authenticate": 'Signature realm="feeds"'}


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The hex HMAC-SHA256 a supplier sends (loadtests' simulator signs the same way)."""
    signed = timestamp.encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def _refuse(code: str, detail: str) -> Problem:
    return Problem(401, code, detail, CHALLENGE)


def check_signature(
    secret: str, timestamp: str | None, sent: str | None, body: bytes, window_s: int, now_s: float
) -> None:
    """Raises 401 SIGNATURE_MISSING, SIGNATURE_STALE or SIGNATURE_INVALID."""
    if not timestamp or not sent:
        raise _refuse("SIGNATURE_MISSING", "send X-Flashsale-Timestamp and X-Flashsale-Signature")
    # isascii: str.isdigit() also takes "²" and other digits int() refuses (a 500, not a 401).
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        raise _refuse("SIGNATURE_STALE", "X-Flashsale-Timestamp must be unix seconds")
    if abs(now_s - int(timestamp)) > window_s:
        raise _refuse("SIGNATURE_STALE", f"the timestamp is more than {window_s} s away")
    expected = SIGNATURE_PREFIX + signature(secret, timestamp, body)
    if not hmac.compare_digest(sent.strip().encode(), expected.encode()):
        raise _refuse("SIGNATURE_INVALID", "the signature does not match the body")


async def _body(request: Request, max_bytes: int) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise Problem(413, "PAYLOAD_TOO_LARGE", f"bodies are limited to {max_bytes} bytes")
    return bytes(body)


async def _secret(state: GatewayState, supplier_id: str) -> str:
    settings = state.settings
    try:
        async with state.pool.acquire() as conn:
            if not await feeds.takes_webhooks(conn, supplier_id):
                raise Problem(404, "NOT_FOUND", f"supplier {supplier_id} has no webhook feed")
            if not settings.feed_key:
                raise Problem(503, "FEED_KEY_MISSING", "FLASHSALE_FEED_KEY is not set")
            secret = await feeds.feed_secret(conn, supplier_id, key_bytes(settings.feed_key))
    except SecretUnreadable as exc:
        raise Problem(503, "FEED_SECRET_UNREADABLE", str(exc)) from None
    except PG_ERRORS as exc:
        raise unavailable() from exc
    if secret is None:  # its secret went between the two reads (the feed was replaced)
        raise Problem(404, "NOT_FOUND", f"supplier {supplier_id} has no webhook feed")
    return secret


SecretOf = Callable[[GatewayState, str], Awaitable[str]]


async def signed_json(
    request: Request, max_bytes: int, secret_of: SecretOf
) -> tuple[str, dict[str, Any]]:
    """The supplier of the path and the JSON object of a request it signed: the body read whole
    (at most `max_bytes`), the supplier's secret looked up (`secret_of` refuses a supplier that
    takes no such request), the signature checked (401), and only then the JSON parsed. The
    stock webhook and the shipment webhook both come through here."""
    state: GatewayState = request.app.state.gateway
    supplier_id = parse_path_id(request.path_params["supplier"], "supplier")
    body = await _body(request, max_bytes)
    secret = await secret_of(state, supplier_id)
    headers = request.headers
    check_signature(
        secret,
        headers.get("x-flashsale-timestamp"),
        headers.get("x-flashsale-signature"),
        body,
        state.settings.feed_signature_window_s,
        time.time(),
    )
    require_json(request.scope)
    return supplier_id, parse_json_object(body)


async def post_feed(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    supplier_id, doc = await signed_json(request, state.settings.feed_max_body_bytes, _secret)
    delivery = parse_delivery(supplier_id, doc)
    try:
        async with state.feed_turns.turn(supplier_id), state.pool.acquire() as conn:
            receipt = await receive(conn, state.engine, delivery)
    except feeds.FeedNotConfigured as exc:
        raise Problem(404, "NOT_FOUND", str(exc)) from None
    except InvalidInput as exc:
        raise invalid(str(exc)) from None
    except (EngineUnavailable, *PG_ERRORS) as exc:
        raise unavailable() from exc
    if receipt.duplicate:
        return json_response({"delivery_id": receipt.delivery_id, "duplicate": True}, 200)
    doc = {"delivery_id": receipt.delivery_id, "duplicate": False, **receipt.counts()}
    return json_response(doc, 202)
