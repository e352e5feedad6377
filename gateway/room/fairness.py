"""The fairness receipt: what anyone needs to recompute the pre-queue draw and check a place."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from flashsale.engine.keys import ID_PATTERN
from flashsale.engine.shuffle import prequeue_order_sha256, prequeue_ticket_order
from flashsale.engine.waiting_room import RoomState
from flashsale.gateway.problems import Problem, invalid
from flashsale.gateway.responses import json_response
from flashsale.gateway.room.routes import SHUFFLE
from flashsale.gateway.room.views import SHUFFLE_IN_THREAD
from flashsale.gateway.room.worker import QueueService, no_ticket
from flashsale.gateway.schemas import iso

QUERY = {"ticket", "include"}
ORDER_HASH = (
    "SHA-256 (hex) of the ticket numbers at places 1, 2, ..., prequeue_size, written in decimal "
    "and joined by ',' with no spaces (an empty pre-queue hashes the empty string)"
)
VERIFY = "flashsale verify-draw --url <this gateway> --sale <sale>, or docs/verify_draw.py"
# The receipt never changes once the room has opened; only the ticket part is personal.
PUBLIC_CACHE = {"Cache-Control": "public, max-age=60"}
PRIVATE = {"Cache-Control": "no-store"}


def _query(request: Request) -> tuple[str | None, bool]:
    """(the ticket id asked about, whether the whole order is wanted); anything else is refused."""
    params = request.query_params
    unknown = ", ".join(sorted(set(params.keys()) - QUERY))
    if unknown:
        raise invalid(f"unknown query parameters {unknown}; known: include, ticket")
    include = params.get("include")
    if include not in (None, "order"):
        raise invalid("include must be 'order'")
    ticket = params.get("ticket")
    if ticket is not None and not ID_PATTERN.fullmatch(ticket):
        raise invalid("ticket must be 1-64 characters of A-Z a-z 0-9 _ -")
    return ticket, include == "order"


def not_revealed(state: RoomState) -> Problem:
    return Problem(
        409,
        "DRAW_NOT_REVEALED",
        f"the draw of sale {state.sale_id} is revealed when its room opens, at "
        f"{iso(state.starts_at_ms)} (status {state.status})",
    )


async def _order(state: RoomState) -> tuple[tuple[int, ...], str]:
    """The draw and its hash, both cached per (seed, size) after the first request."""
    if state.prequeue > SHUFFLE_IN_THREAD:
        order = await asyncio.to_thread(prequeue_ticket_order, state.seed, state.prequeue)
        digest = await asyncio.to_thread(prequeue_order_sha256, state.seed, state.prequeue)
        return order, digest
    return prequeue_ticket_order(state.seed, state.prequeue), prequeue_order_sha256(
        state.seed, state.prequeue
    )


def _place(state: RoomState, ticket: str, number: int) -> dict[str, Any]:
    if number > state.seq:
        raise no_ticket(ticket)
    place = state.place_of(number)
    return {
        "ticket": ticket,
        "number": number,
        "place": place,
        "prequeue": number <= state.prequeue,
    }


async def fairness(request: Request) -> Response:
    """GET /v1/sales/{sale}/fairness[?ticket=T][&include=order]: the committed hash, the seed,
    the pre-queue's size and the order's hash; `ticket` adds that ticket's place, `include=order`
    the whole order (the ticket at place 1, 2, ...)."""
    service: QueueService = request.app.state.queue
    sale_id: str = request.path_params["sale"]
    if not ID_PATTERN.fullmatch(sale_id):
        raise invalid("sale must be 1-64 characters of A-Z a-z 0-9 _ -")
    ticket, with_order = _query(request)
    request.app.state.gateway.limits.take_status(request.scope)  # the status poll's bucket
    # A ticket just joined can be newer than this worker's cached read of the room: ask for a
    # read that has it (a receipt opened right after joining answered 404).
    number = 0 if ticket is None else service.ticket_number(sale_id, ticket)
    state = await service.room_state(sale_id, number)
    if not state.opened:
        raise not_revealed(state)
    order, digest = await _order(state)
    doc: dict[str, Any] = {
        "sale_id": sale_id,
        "opened_at": iso(state.opened_at_ms),
        "seed_sha256": state.seed_sha256,
        "seed": state.seed,
        "prequeue_size": state.prequeue,
        "order_sha256": digest,
        "order_hash": ORDER_HASH,
        "shuffle": SHUFFLE,
        "verify": VERIFY,
    }
    if ticket is not None:
        doc["ticket"] = _place(state, ticket, number)
    if with_order:
        doc["order"] = order
    return json_response(doc, headers=PRIVATE if ticket else PUBLIC_CACHE)
