"""The hot path: POST holds as a raw ASGI callable, and the hold's follow-up routes."""

from __future__ import annotations

from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from flashsale.engine.keys import ID_PATTERN
from flashsale.engine.results import Allocation, Code, ReserveResult
from flashsale.engine.waiting_room import TokenUse
from flashsale.gateway import callers
from flashsale.gateway.http import (
    header,
    parse_json_object,
    read_body,
    require_json,
    send_json,
    send_problem,
)
from flashsale.gateway.metrics import OUTCOME_KEY
from flashsale.gateway.problems import Problem, engine_call, from_code, invalid
from flashsale.gateway.responses import json_response, read_json
from flashsale.gateway.room.worker import QueueService
from flashsale.gateway.schemas import iso, parse_checkout, parse_confirm
from flashsale.gateway.state import GatewayState

T = TypeVar("T")


def lines_of(cart_order: list[str], allocations: tuple[Allocation, ...]) -> list[dict[str, Any]]:
    lines = []
    for sku in cart_order:
        mine = [a for a in allocations if a.sku == sku]
        lines.append(
            {
                "sku": sku,
                "qty": sum(a.qty for a in mine),
                "allocations": [{"supplier": a.supplier, "qty": a.qty} for a in mine],
            }
        )
    return lines


class CreateHold:
    """POST /v1/sales/{sale}/holds written against ASGI directly: Starlette's Request/Response
    cost ~25% of this route's throughput (docs/design.md, the hot path)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            status, doc, headers = await self._handle(scope["app"].state.gateway, scope, receive)
        except Problem as problem:
            scope[OUTCOME_KEY] = problem.code
            await send_problem(send, problem, scope["path"])
            return
        await send_json(send, status, doc, headers)

    async def _handle(
        self, state: GatewayState, scope: Scope, receive: Receive
    ) -> tuple[int, Any, dict[str, str]]:
        sale_id = scope["path_params"]["sale"]
        if not ID_PATTERN.fullmatch(sale_id):
            raise invalid("sale must be 1-64 characters of A-Z a-z 0-9 _ -")
        idem = header(scope, b"idempotency-key")
        if idem is not None and not ID_PATTERN.fullmatch(idem):
            raise invalid("Idempotency-Key must be 1-64 characters of A-Z a-z 0-9 _ -")
        body = await read_body(scope, receive, state.settings.max_body_bytes)
        if body:
            require_json(scope)
        body_customer, cart = parse_checkout(parse_json_object(body))
        customer = callers.customer(state, scope, body_customer)
        queue: QueueService = scope["app"].state.queue
        token = _admission(queue, scope, sale_id, customer)
        await state.limits.take(scope, sale_id, "checkout", customer)
        result = await engine_call(state.engine.reserve(sale_id, customer, cart, idem, token=token))
        if not result.ok:
            raise _refusal(result, state.settings.public_stock == "exact")
        doc = {
            "hold_id": result.hold_id,
            "sale_id": sale_id,
            "status": "held",
            "expires_at": iso(result.expires_at_ms),
            "lines": lines_of([sku for sku, _ in cart], result.allocations),
        }
        return 201, doc, {"Idempotent-Replayed": "true"} if result.replay else {}


def _admission(queue: QueueService, scope: Scope, sale_id: str, customer: str) -> TokenUse | None:
    """The request's admission token, verified here without Redis (a bad one is refused with
    its own code); reserve.lua counts its attempts. No token: the sale must have no room."""
    authorization = header(scope, b"authorization")
    if authorization is None:
        return None
    claims = queue.tokens.verify(authorization, sale_id, customer)
    return TokenUse(claims.place, queue.settings.token_max_attempts, claims.expires_at_ms)


def _refusal(result: ReserveResult, exact_stock: bool) -> Problem:
    if result.code in (Code.SOLD_OUT, Code.LIMIT_EXCEEDED, Code.UNKNOWN_SKU):
        detail = f"sku {result.sku}"
        if result.code is Code.SOLD_OUT:
            # The count left is a setting: exact numbers let bots time their requests.
            detail += f": {result.units} left" if exact_stock else ": not enough left"
        elif result.code is Code.LIMIT_EXCEEDED:
            detail += f": you already have {result.units}"
        return from_code(result.code, detail)
    if result.code is Code.IDEMPOTENCY_CONFLICT:
        return from_code(result.code, "this Idempotency-Key was used with another request")
    if result.code is Code.NOT_ADMITTED:
        return from_code(result.code, "join the sale's waiting room and check out when admitted")
    if result.code is Code.TOKEN_EXHAUSTED:
        return from_code(result.code, f"this admission token made its {result.detail} attempts")
    if result.code is Code.TOKEN_EXPIRED:
        return from_code(result.code, "the admission token has expired")
    return from_code(result.code, result.detail)


async def _hold_target(request: Request) -> tuple[GatewayState, str, str, str]:
    """(state, sale, hold, owner): the owner is the caller's customer, or ANYONE for the admin.
    Another customer's hold answers 404, as a hold that does not exist does."""
    state: GatewayState = request.app.state.gateway
    sale_id, hold_id = request.path_params["sale"], request.path_params["hold"]
    owner = callers.owner(state, request.scope)
    if not ID_PATTERN.fullmatch(sale_id) or not ID_PATTERN.fullmatch(hold_id):
        raise invalid("sale and hold must be 1-64 characters of A-Z a-z 0-9 _ -")
    await state.limits.take(request.scope, sale_id, "hold", owner or None)
    return state, sale_id, hold_id, owner


def _no_hold(hold_id: str, sale_id: str) -> Problem:
    return from_code(Code.UNKNOWN_HOLD, f"no hold {hold_id} in sale {sale_id}")


async def get_hold(request: Request) -> Response:
    state, sale_id, hold_id, owner = await _hold_target(request)
    hold = await engine_call(state.engine.get_hold(sale_id, hold_id))
    if hold is None or (owner and hold.customer_id != owner):
        raise _no_hold(hold_id, sale_id)
    order = list(dict.fromkeys(a.sku for a in hold.allocations))
    return json_response(
        {
            "hold_id": hold.hold_id,
            "sale_id": sale_id,
            "customer_id": hold.customer_id,
            "status": hold.status,
            "expires_at": iso(hold.expires_at_ms),
            "extended": hold.extended,
            "lines": lines_of(order, hold.allocations),
        }
    )


async def confirm_hold(request: Request) -> Response:
    state, sale_id, hold_id, owner = await _hold_target(request)
    payment_ref = parse_confirm(await read_json(request, state.settings.max_body_bytes))
    outcome = await engine_call(state.engine.confirm(sale_id, hold_id, payment_ref, owner=owner))
    if outcome.code is Code.UNKNOWN_HOLD:
        raise _no_hold(hold_id, sale_id)
    if outcome.code is not Code.OK:
        raise from_code(outcome.code, f"hold {hold_id} is {outcome.status or 'unknown'}")
    return json_response(
        {"order_id": hold_id, "status": outcome.status, "confirmed_at": iso(outcome.at_ms)}
    )


async def release_hold(request: Request) -> Response:
    state, sale_id, hold_id, owner = await _hold_target(request)
    outcome = await engine_call(state.engine.release(sale_id, hold_id, owner=owner))
    if outcome.code is Code.UNKNOWN_HOLD:
        raise _no_hold(hold_id, sale_id)
    if outcome.code is not Code.OK:
        raise from_code(outcome.code, f"hold {hold_id} is {outcome.status or 'unknown'}")
    return json_response({"hold_id": hold_id, "status": outcome.status})


async def extend_hold(request: Request) -> Response:
    state, sale_id, hold_id, owner = await _hold_target(request)
    result = await engine_call(state.engine.extend(sale_id, hold_id, owner=owner))
    if result.code is Code.UNKNOWN_HOLD:
        raise _no_hold(hold_id, sale_id)
    if result.code is not Code.OK:
        raise from_code(result.code, f"hold {hold_id} cannot be extended")
    return json_response({"hold_id": hold_id, "expires_at": iso(result.expires_at_ms)})
