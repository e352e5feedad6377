"""Waiting-room routes: join and status as raw ASGI (hot), the room's public facts, the page."""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from flashsale.engine.keys import ID_PATTERN
from flashsale.engine.results import Code
from flashsale.engine.settings import Settings
from flashsale.engine.waiting_room import JoinResult
from flashsale.gateway import callers
from flashsale.gateway.http import (
    parse_json_object,
    read_body,
    require_json,
    send_json,
    send_problem,
)
from flashsale.gateway.problems import Problem, engine_call, from_code, invalid
from flashsale.gateway.responses import json_response
from flashsale.gateway.room.worker import QueueService
from flashsale.gateway.schemas import iso, optional_customer
from flashsale.gateway.state import GatewayState

NO_STORE = {"Cache-Control": "no-store"}
JSON_NO_STORE = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
SHUFFLE = (
    "Fisher-Yates over tickets 1..prequeue_size, i from size-1 down to 1, swapping i with a "
    "uniform draw below i+1; draws are SHA-256(seed || 8-byte big-endian counter), first 8 bytes "
    "big-endian, redrawn when past the last whole multiple of the bound. The result lists the "
    "ticket at place 1, 2, ... Check the seed with `printf %s SEED | sha256sum`."
)


def _service(scope: Scope) -> QueueService:
    service: QueueService = scope["app"].state.queue
    return service


def _sale_id(scope: Scope) -> str:
    sale_id: str = scope["path_params"]["sale"]
    if not ID_PATTERN.fullmatch(sale_id):
        raise invalid("sale must be 1-64 characters of A-Z a-z 0-9 _ -")
    return sale_id


def parse_join(doc: dict[str, Any]) -> str | None:
    """The body's customer_id, which may be left out (the customer token says who)."""
    unknown = ", ".join(sorted(doc.keys() - {"customer_id"}))
    if unknown:
        raise invalid(f"body has unknown fields {unknown}")
    return optional_customer(doc)


async def _join_body(scope: Scope, receive: Receive, max_bytes: int) -> dict[str, Any]:
    """The JSON object of the body; no body at all reads as {} (the token says who)."""
    body = await read_body(scope, receive, max_bytes)
    if not body:
        return {}
    require_json(scope)
    return parse_json_object(body)


def _join_refusal(result: JoinResult, sale_id: str) -> Problem:
    if result.code is Code.UNKNOWN_SALE:
        return Problem(404, "NOT_FOUND", f"no sale {sale_id}")
    if result.code is Code.SALE_NOT_OPEN:
        return from_code(result.code, f"sale {sale_id} is {result.status or 'over'}")
    return from_code(result.code, f"sale {sale_id} has no waiting room: check out directly")


class JoinQueue:
    """POST /v1/sales/{sale}/queue (X-Customer-Token): 201 with a new ticket, 200 with the
    customer's ticket when they joined before."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            status, doc = await self._handle(_service(scope), scope, receive)
        except Problem as problem:
            await send_problem(send, problem, scope["path"])
            return
        await send_json(send, status, doc, NO_STORE)

    async def _handle(
        self, service: QueueService, scope: Scope, receive: Receive
    ) -> tuple[int, dict[str, Any]]:
        state: GatewayState = scope["app"].state.gateway
        sale_id = _sale_id(scope)
        doc = await _join_body(scope, receive, service.settings.max_body_bytes)
        customer = callers.customer(state, scope, parse_join(doc))
        await state.limits.take(scope, sale_id, "join", customer)
        result = await engine_call(service.room.queue_join(sale_id, customer))
        if result.code is not Code.OK:
            raise _join_refusal(result, sale_id)
        ticket = service.tickets.make(sale_id, result.ticket)
        doc = await service.status_doc(sale_id, result.ticket, ticket, joined=True)
        doc["status_url"] = f"/v1/sales/{sale_id}/queue/{ticket}"
        return (201 if result.new else 200), doc


class QueueStatus:
    """GET /v1/sales/{sale}/queue/{ticket}: answered from the worker's cached room state; Redis
    only hears of it in the batched heartbeats, and once when the ticket's turn has come."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = _service(scope)
        sale_id: str = scope["path_params"]["sale"]
        ticket: str = scope["path_params"]["ticket"]
        try:
            scope["app"].state.gateway.limits.take_status(scope)
            number = service.tickets.known(sale_id, ticket)  # a poll seen before: valid ids
            if number is None:
                _sale_id(scope)
                if not ID_PATTERN.fullmatch(ticket):
                    raise invalid("ticket must be 1-64 characters of A-Z a-z 0-9 _ -")
                number = service.ticket_number(sale_id, ticket)
            doc = service.status_now(sale_id, number, ticket)
            if doc is None:
                doc = await service.status_doc(sale_id, number, ticket)
        except Problem as problem:
            await send_problem(send, problem, scope["path"])
            return
        body = orjson.dumps(doc)
        headers = [*JSON_NO_STORE, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def room_info(request: Request) -> Response:
    """GET /v1/sales/{sale}/queue: the room's public facts, including the shuffle commitment."""
    service = _service(request.scope)
    sale_id = _sale_id(request.scope)
    state = await service.room_state(sale_id)
    window = service.views.windows.get(sale_id)
    doc = {
        "sale_id": sale_id,
        "status": state.status,
        "opened_at": iso(state.opened_at_ms) if state.opened else None,
        "tickets": state.seq,
        "waiting": state.waiting,
        "serving": state.serving,
        "admitted": state.admitted,
        "abandoned": state.skipped,
        "passed_unadmitted": state.abandoned,
        "released": state.released,
        "returned": state.returned,
        "coming_back": state.coming_back,
        "active": state.active,
        **_stock(service.settings, state.units_left),
        "admit_rate_per_s": state.rate_per_s,
        "measured_admit_rate_per_s": round(window.admit_rate(), 2) if window else 0.0,
        "seed_sha256": state.seed_sha256 or None,
        "seed": state.seed or None,
        "prequeue_size": state.prequeue if state.opened else None,
        "shuffle": SHUFFLE,
    }
    return json_response(doc, headers=NO_STORE)


def _stock(settings: Settings, units_left: int) -> dict[str, Any]:
    """The room's public figure of stock: a level, unless FLASHSALE_PUBLIC_STOCK=exact."""
    if settings.public_stock == "exact":
        return {"units_left": units_left}
    return {"stock": "in_stock" if units_left > 0 else "sold_out"}


def _page() -> tuple[bytes, str]:
    """The page, and a Content-Security-Policy allowing exactly its inline script and style."""
    page = resources.files("flashsale.gateway").joinpath("static/waiting_room.html")
    html = page.read_text("utf-8")

    def digest(tag: str) -> str:
        body = re.search(rf"<{tag}>(.*?)</{tag}>", html, re.S)
        assert body is not None, f"the page has no <{tag}>"
        raw = hashlib.sha256(body[1].encode()).digest()
        return "'sha256-" + base64.b64encode(raw).decode() + "'"

    csp = (
        f"default-src 'none'; script-src {digest('script')}; style-src {digest('style')}; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )
    return html.encode(), csp


PAGE, PAGE_CSP = _page()
# Dev mode's page also offers a customer-ID box for visitors who come without the shop's pass.
DEV_PAGE = PAGE.replace(b'data-dev="0"', b'data-dev="1"', 1)


async def waiting_room_page(request: Request) -> Response:
    """GET /sales/{sale}/waiting-room: plain HTML and a little JS that polls the status route.
    The shop links here with the customer's token in the fragment (#customer_token=...)."""
    service = _service(request.scope)
    await service.room_state(_sale_id(request.scope))
    headers = {
        "Content-Security-Policy": PAGE_CSP,
        "Cache-Control": "no-cache",
        "Referrer-Policy": "no-referrer",
    }
    page = DEV_PAGE if service.settings.dev else PAGE
    return Response(page, 200, headers, media_type="text/html; charset=utf-8")
