"""Helpers of the waiting-room tests: room sales, whole-room snapshots, the room invariants."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from typing import Any

import httpx

from flashsale.engine import Engine, SaleConfig
from flashsale.engine.connection import RedisClient
from flashsale.engine.room_invariants import room_violations
from tests.gateway_helpers import ADMIN, create_sale, new_sale_id, sale_body
from tests.helpers import assert_sound, sale_config, snapshot

STOCK = {"A": [("p", 10_000)]}


def room_config(
    sale_id: str,
    stock: dict[str, list[tuple[str, int]]] | None = None,
    *,
    limit: int = 0,
    starts_at_ms: int = 0,
) -> SaleConfig:
    """A sale with a waiting room; starts_at_ms in the future keeps its room a pre-queue."""
    base = sale_config(sale_id, stock or STOCK, limit=limit)
    return dataclasses.replace(base, waiting_room=True, starts_at_ms=starts_at_ms)


async def room_snapshot(client: RedisClient, sale_id: str) -> dict[str, Any]:
    """Every key of the sale and of its room with its full value ('state unchanged' checks),
    but the admission loop's lease: the gateways' loops take and pass it on their own."""
    room = await snapshot(client, sale_id, prefix="wr", skip="}:lease")
    return {**await snapshot(client, sale_id), **room}


async def assert_room_sound(engine: Engine, sale_id: str, max_active: int | None = None) -> None:
    """Invariants 1, 2, 4 (the stock) and 5 (the room) of docs/design.md hold."""
    await assert_sound(engine, sale_id)
    violations = await room_violations(engine, sale_id, max_active)
    assert violations == [], violations


def independent_order(seed: str, size: int) -> list[int]:
    """The pre-queue permutation written again from docs/waiting-room.md's words, not from
    engine/shuffle: Fisher-Yates from the end, draws SHA-256(seed || counter) with rejection of
    the biased tail."""
    order, counter = list(range(1, size + 1)), 0
    for i in range(size - 1, 0, -1):
        bound = i + 1
        while True:
            block = hashlib.sha256(seed.encode() + counter.to_bytes(8, "big")).digest()
            counter += 1
            draw = int.from_bytes(block[:8], "big")
            if draw < 2**64 - 2**64 % bound:
                break
        j = draw % bound
        order[i], order[j] = order[j], order[i]
    return order


# --- over HTTP ---------------------------------------------------------------------------------

# The gateway of the HTTP tests: short ghost time and fast loops, a rotated token key.
ROOM_ENV = {
    "FLASHSALE_TOKEN_SECRET": "room-test-secret-k2",
    "FLASHSALE_TOKEN_KID": "k2",
    "FLASHSALE_TOKEN_PREVIOUS_SECRETS": "k1=room-test-secret-k1",
    "FLASHSALE_TOKEN_MAX_ATTEMPTS": "3",
    "FLASHSALE_QUEUE_GHOST_AFTER_MS": "1500",
    "FLASHSALE_QUEUE_BEAT_FLUSH_MS": "200",
    "FLASHSALE_QUEUE_TICK_MS": "50",
    "FLASHSALE_QUEUE_CACHE_MS": "100",
    "FLASHSALE_QUEUE_POLL_MS": "300",
}


def room_body(
    units: int = 100,
    *,
    rate: int = 50,
    max_active: int = 1000,
    per_user_limit: int = 0,
    starts_at: str = "2020-01-01T00:00:00Z",
    rate_limit: dict[str, int] | None = None,
    room: bool = True,
) -> dict[str, Any]:
    """A sale of one sku A; with a waiting room unless room=False."""
    extra: dict[str, Any] = {"starts_at": starts_at}
    if room:
        extra["waiting_room"] = {
            "enabled": True,
            "admit_rate_per_s": rate,
            "max_active": max_active,
            "token_ttl_s": 60,
        }
    if rate_limit is not None:
        extra["rate_limit"] = rate_limit
    return sale_body([("p", units)], per_user_limit=per_user_limit, **extra)


async def join(http: httpx.AsyncClient, sale_id: str, customer: str) -> dict[str, Any]:
    reply = await http.post(f"/v1/sales/{sale_id}/queue", json={"customer_id": customer})
    assert reply.status_code in (200, 201), reply.text
    doc: dict[str, Any] = reply.json()
    return doc


async def status(http: httpx.AsyncClient, sale_id: str, ticket: str) -> dict[str, Any]:
    reply = await http.get(f"/v1/sales/{sale_id}/queue/{ticket}")
    assert reply.status_code == 200, reply.text
    doc: dict[str, Any] = reply.json()
    return doc


async def poll_until(
    http: httpx.AsyncClient, sale_id: str, ticket: str, wanted: str, timeout_s: float = 10
) -> dict[str, Any]:
    """Polls like the page does (which also keeps the ticket alive) until `wanted`."""
    deadline = time.monotonic() + timeout_s
    while True:
        doc = await status(http, sale_id, ticket)
        if doc["status"] == wanted:
            return doc
        assert time.monotonic() < deadline, f"still {doc} after {timeout_s} s"
        await asyncio.sleep(0.1)


async def room_info(http: httpx.AsyncClient, sale_id: str) -> dict[str, Any]:
    reply = await http.get(f"/v1/sales/{sale_id}/queue")
    assert reply.status_code == 200, reply.text
    doc: dict[str, Any] = reply.json()
    return doc


async def room_info_when(
    http: httpx.AsyncClient, sale_id: str, wanted: dict[str, Any], timeout_s: float = 5
) -> dict[str, Any]:
    """The room's public facts once they show `wanted` (the gateways cache them briefly)."""
    deadline = time.monotonic() + timeout_s
    while True:
        info = await room_info(http, sale_id)
        if {k: info[k] for k in wanted} == wanted:
            return info
        assert time.monotonic() < deadline, f"room never showed {wanted}: {info}"
        await asyncio.sleep(0.1)


CREATED: list[str] = []


async def create_room_sale(http: httpx.AsyncClient, prefix: str, body: dict[str, Any]) -> str:
    """A new open sale, remembered so that close_created() closes it."""
    sale = new_sale_id(prefix)
    await create_sale(http, sale, body)
    CREATED.append(sale)
    return sale


def close_created(url: str) -> None:
    """Closes the sales a test module made. A closed sale leaves every gateway's admission loops;
    open ones would pile up in PostgreSQL run after run, and every gateway would tick them."""
    with httpx.Client(base_url=url, headers=ADMIN, timeout=10) as http:
        while CREATED:
            http.post(f"/v1/admin/sales/{CREATED.pop()}/close")
