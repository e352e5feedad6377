"""Helpers of the after-sale tests (returns, retailer credit, settlement): a saga database of
their own, the simulators, a real gateway process on that database, and a sale made over HTTP."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx

from flashsale.engine import Code, Engine, keys
from flashsale.reconciler.audit import audit

ADMIN = {"authorization": "Bearer dev-admin-key"}
Supplier = tuple[str, int, int]  # (id, stock, unit cost)


def sale_body(
    items: dict[str, tuple[int, list[Supplier]]], credit_policy: Any = None
) -> dict[str, Any]:
    """A sale open since 2020 with no end: sku -> (price, [(supplier, stock, cost)])."""
    body: dict[str, Any] = {
        "name": "after the sale",
        "starts_at": "2020-01-01T00:00:00Z",
        "ends_at": None,
        "hold_ttl_s": 300,
        "per_user_limit": 0,
        "items": [
            {
                "sku": sku,
                "price_minor": price,
                "suppliers": [
                    {"id": s, "stock": n, "cost_minor": c, "priority": j}
                    for j, (s, n, c) in enumerate(sups)
                ],
            }
            for sku, (price, sups) in items.items()
        ],
    }
    if credit_policy is not None:
        body["credit_policy"] = credit_policy
    return body


async def open_sale(http: httpx.AsyncClient, sale_id: str, body: dict[str, Any]) -> None:
    """PUT the sale, then open it: the admin API's own path."""
    made = await http.put(f"/v1/admin/sales/{sale_id}", json=body)
    assert made.status_code == 201, made.text
    opened = await http.post(f"/v1/admin/sales/{sale_id}/open")
    assert opened.status_code == 200, opened.text


async def confirm(
    engine: Engine, sale_id: str, customer: str, cart: list[tuple[str, int]], token: str = "tok"
) -> str:
    """A confirmed hold (the order id) for `customer`; a token with "decline" is declined."""
    held = await engine.reserve(sale_id, customer, cart)
    assert held.ok, held
    done = await engine.confirm(sale_id, held.hold_id, f"card:{token}")
    assert done.code is Code.OK, done
    return held.hold_id


async def until_status(
    pgc: asyncpg.Connection, order_ids: list[str], statuses: set[str], timeout_s: float = 60
) -> dict[str, str]:
    """Until each order is in one of `statuses` with nothing left to run: id -> status."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await pgc.fetch(
            "SELECT order_id, status, next_step FROM orders WHERE order_id = ANY($1::text[])",
            order_ids,
        )
        got = {r["order_id"]: r["status"] for r in rows if r["next_step"] is None}
        if len(got) == len(order_ids) and set(got.values()) <= statuses:
            return got
        assert time.monotonic() < deadline, [dict(r) for r in rows]
        await asyncio.sleep(0.1)


async def until_changes_done(pgc: asyncpg.Connection, order_ids: list[str], n: int) -> None:
    """Until `n` changes of these orders are carried out, and none is pending."""
    deadline = time.monotonic() + 60
    while True:
        rows = await pgc.fetch(
            "SELECT status, count(*) AS n FROM order_changes "
            "WHERE order_id = ANY($1::text[]) GROUP BY status",
            order_ids,
        )
        by = {r["status"]: r["n"] for r in rows}
        if by.get("applied", 0) == n and not by.get("pending"):
            return
        assert time.monotonic() < deadline, by
        await asyncio.sleep(0.1)


async def drained(engine: Engine, sale_id: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while int(await engine.client.xlen(keys.events(sale_id))):
        assert time.monotonic() < deadline, "the stream was not flushed"
        await asyncio.sleep(0.1)


async def audit_ok(engine: Engine, pgc: asyncpg.Connection, sale_id: str) -> None:
    """`flashsale audit --strict`: every invariant, once the stream is flushed."""
    await drained(engine, sale_id)
    found = await audit(engine, pgc, sale_id, strict=True)
    assert found.ok, dict(found.violations)
