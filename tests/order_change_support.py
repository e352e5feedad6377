"""Helpers of the cancel and refund tests (tests/test_order_cancel.py, tests/test_order_refunds.py):
the checks that read the order, the stock and what the parties recorded. Their fixtures are in
tests/order_change_fixtures.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx

from flashsale.engine import Engine, keys
from flashsale.engine.invariants import check_sale
from flashsale.reconciler.audit import audit
from tests.saga_support import Sims

PROBLEM = "application/problem+json"


def problem(reply: httpx.Response, status: int, code: str) -> None:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith(PROBLEM), reply.headers
    assert reply.json()["code"] == code, reply.json()


async def order_row(pgc: asyncpg.Connection, order_id: str) -> dict[str, Any]:
    row = await pgc.fetchrow("SELECT * FROM orders WHERE order_id = $1", order_id)
    assert row is not None
    return dict(row)


async def snapshot(pgc: asyncpg.Connection, order_id: str) -> tuple[Any, ...]:
    """The order row, its lines and its changes: what a refused request must leave alone."""
    return (
        await order_row(pgc, order_id),
        [
            dict(r)
            for r in await pgc.fetch(
                "SELECT * FROM order_allocations WHERE order_id = $1 ORDER BY sku", order_id
            )
        ],
        [
            dict(r)
            for r in await pgc.fetch(
                "SELECT * FROM order_changes WHERE order_id = $1 ORDER BY id", order_id
            )
        ],
    )


async def settled(
    pgc: asyncpg.Connection, order_id: str, status: str, timeout_s: float = 30
) -> dict[str, Any]:
    """The order once it has `status`, nothing due (or only a promised day's step far ahead),
    and no change pending."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = await pgc.fetchrow("SELECT * FROM orders WHERE order_id = $1", order_id)
        row: dict[str, Any] = dict(found) if found else {"status": "not flushed", "next_step": None}
        waiting = await pgc.fetchval(
            "SELECT count(*) FROM order_changes WHERE order_id = $1 AND status = 'pending'",
            order_id,
        )
        due = row.get("step_due_at")
        far = due is not None and due.timestamp() > time.time() + 3600
        if row["status"] == status and (row["next_step"] is None or far) and not waiting:
            return row
        assert time.monotonic() < deadline, f"order {order_id}: {row}, {waiting} pending"
        await asyncio.sleep(0.1)


async def step_running(pgc: asyncpg.Connection, order_id: str, step: str) -> None:
    """Until `step` of the order is claimed and running (its first try counted)."""
    deadline = time.monotonic() + 30
    while True:
        row = await pgc.fetchrow(
            "SELECT o.next_step, o.claimed_until > now() AS leased, s.attempts "
            "FROM orders o LEFT JOIN saga_steps s ON s.order_id = o.order_id AND s.step = $2 "
            "WHERE o.order_id = $1",
            order_id,
            step,
        )
        if row and row["next_step"] == step and row["leased"] and (row["attempts"] or 0) > 0:
            return
        assert time.monotonic() < deadline, f"{step} of {order_id} never ran: {row}"
        await asyncio.sleep(0.02)


async def until_flushed(pgc: asyncpg.Connection, order_ids: list[str]) -> None:
    deadline = time.monotonic() + 30
    while (
        await pgc.fetchval("SELECT count(*) FROM orders WHERE order_id = ANY($1)", order_ids)
    ) < len(order_ids):
        assert time.monotonic() < deadline, "orders not flushed"
        await asyncio.sleep(0.1)


async def available(engine: Engine, sale_id: str) -> dict[tuple[str, str], int]:
    """(sku, supplier) -> the units Redis offers."""
    state = await engine.stock(sale_id)
    assert state is not None
    return {(k.sku, s.supplier): s.available for k in state.skus for s in k.suppliers}


async def ledger(pgc: asyncpg.Connection, sale_id: str, kind: str) -> list[dict[str, Any]]:
    rows = await pgc.fetch(
        "SELECT sku, supplier_id, qty, reason FROM stock_movements "
        "WHERE sale_id = $1 AND kind = $2 ORDER BY id",
        sale_id,
        kind,
    )
    return [dict(r) for r in rows]


async def until_ledger(
    pgc: asyncpg.Connection, sale_id: str, kind: str, count: int
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    while len(rows := await ledger(pgc, sale_id, kind)) < count:
        assert time.monotonic() < deadline, f"{kind} rows: {rows}"
        await asyncio.sleep(0.1)
    return rows


async def invariants_hold(engine: Engine, pgc: asyncpg.Connection, sale_id: str) -> None:
    """Redis's invariants and `flashsale audit --strict`, once the flush has booked every event
    (call it while the reconciler runs)."""
    deadline = time.monotonic() + 30
    while int(await engine.client.xlen(keys.events(sale_id))):
        assert time.monotonic() < deadline, "the stream was not flushed"
        await asyncio.sleep(0.1)
    assert await check_sale(engine, sale_id) == []
    found = await audit(engine, pgc, sale_id, strict=True)
    assert found.ok, found


def payment_of(sims: Sims, order_id: str) -> dict[str, Any]:
    return sims.authorizations()[order_id]
