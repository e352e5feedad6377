"""Honest dates on a real gateway with the saga running against the simulators: the customer is
told the promised date when the retailer decides to wait, when an operator moves it
(POST /v1/admin/backorders/{id}/promised-date) and when the day comes with the line still
short; every date is in backorder_dates and the order views; bad changes are refused."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx

from flashsale.engine import Engine, Settings
from flashsale.store.saga import orders as saga_orders
from tests import shipment_support as support
from tests.reconciler_support import create_sale, record
from tests.saga_support import Sims, confirm_orders, reconciler
from tests.shipment_support import (
    ADMIN,
    audited,
    delivered,
    received,
    saga_parties,
    step_decided,
    until,
)

# The module's fixtures (tests/shipment_support.py).
fresh_sims = support.fresh_sims
gw = support.gw
http = support.http
pgc = support.pgc
saga_base = support.saga_base
saga_url = support.saga_url
sengine = support.sengine
sims = support.sims
ssettings = support.ssettings


async def _backorder(pgc: asyncpg.Connection, order_id: str) -> asyncpg.Record:
    return await pgc.fetchrow("SELECT * FROM backorders WHERE order_id = $1", order_id)


async def _dates(pgc: asyncpg.Connection, backorder_id: int) -> list[tuple[Any, ...]]:
    rows = await pgc.fetch(
        "SELECT promised_date, source FROM backorder_dates WHERE backorder_id = $1 ORDER BY id",
        backorder_id,
    )
    return [(r["promised_date"], r["source"]) for r in rows]


async def _due(pgc: asyncpg.Connection, order_id: str) -> dt.datetime:
    found: dt.datetime = await pgc.fetchval(
        "SELECT step_due_at FROM orders WHERE order_id = $1", order_id
    )
    return found


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.UTC)


async def test_the_customer_is_told_every_promised_date(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    http: httpx.AsyncClient,
    sale_id: str,
) -> None:
    sims = fresh_sims
    await create_sale(sengine, pgc, record(sale_id, {"X": [("P1", 100)], "Y": [("P1", 100)]}))
    sims.supplier("P1", stock={"X": 0, "Y": 100})  # nobody can ship X
    held = await confirm_orders(sengine, sale_id, [[("X", 1), ("Y", 1)]] * 2)
    waits, undecided = sorted(held)
    today = dt.datetime.now(dt.UTC).date()
    first, moved = today + dt.timedelta(days=2), today + dt.timedelta(days=5)
    async with reconciler(ssettings, sengine):
        for order_id in held:
            await until(pgc, order_id, "BACKORDERED")
        b = await _backorder(pgc, waits)
        wait = {"decision": "wait", "promised_date": first.isoformat()}
        reply = await http.post(
            f"/v1/admin/backorders/{b['id']}/decision", json=wait, headers=ADMIN
        )
        assert reply.status_code == 202, reply.text
        await until(pgc, waits, "PARTIALLY_FULFILLED")
        assert await _due(pgc, waits) == _midnight(first)

        # The operator moves the date; the saga comes back on the new day.
        change = {"promised_date": moved.isoformat(), "reason": "the supplier's lorry is late"}
        path = f"/v1/admin/backorders/{b['id']}/promised-date"
        reply = await http.post(path, json=change, headers=ADMIN)
        assert reply.status_code == 200, reply.text
        assert reply.json()["previous_date"] == first.isoformat()
        assert await _due(pgc, waits) == _midnight(moved)
        await _refusals(http, pgc, b["id"], await _backorder(pgc, undecided), today)

        # The day comes and X is still short: the date moves on by itself, the customer is told.
        await pgc.execute(
            "UPDATE backorders SET promised_date = current_date WHERE id = $1", b["id"]
        )
        await pgc.execute("UPDATE orders SET step_due_at = now() WHERE order_id = $1", waits)
        later = today + dt.timedelta(days=ssettings.backorder_wait_days)
        await until(pgc, waits, "PARTIALLY_FULFILLED")
        assert (await _backorder(pgc, waits))["promised_date"] == later
        assert (await _backorder(pgc, waits))["status"] == "waiting"
        assert await _due(pgc, waits) == _midnight(later)

        # X comes back: on the day it ships and the order is fulfilled.
        sims.supplier("P1", stock={"X": 5, "Y": 100})
        await pgc.execute(
            "UPDATE backorders SET promised_date = current_date WHERE id = $1", b["id"]
        )
        await pgc.execute("UPDATE orders SET step_due_at = now() WHERE order_id = $1", waits)
        await until(pgc, waits, "FULFILLED")
        await delivered(pgc)
        public = (await http.get(f"/v1/orders/{waits}", headers=ADMIN)).json()
        admin = (await http.get(f"/v1/admin/orders/{waits}", headers=ADMIN)).json()
        await audited(sengine, pgc, sale_id)

    assert await _dates(pgc, b["id"]) == [
        (first, "retailer"),
        (moved, "operator"),
        (later, "saga"),
    ]
    told = [n["lines"][0] for n in received(sims, waits, "order.promised_date")]
    assert [(n["promised_date"], n["previous_date"]) for n in told] == [
        (first.isoformat(), None),
        (moved.isoformat(), first.isoformat()),
        (later.isoformat(), today.isoformat()),
    ]
    assert told[1]["reason"] == "the supplier's lorry is late"
    # The customer's reason names no supplier; the admin's transition says who refused.
    assert told[2]["reason"] == f"not in stock yet on {today.isoformat()}"
    assert all("P1" not in d["reason"] for d in public["promised_dates"])
    moved_on = [t["cause"] for t in admin["transitions"] if "now promised for" in t["cause"]]
    assert len(moved_on) == 1 and "(X refused by P1:" in moved_on[0], moved_on
    assert moved_on[0].endswith(f"now promised for {later.isoformat()}")
    assert [d["promised_date"] for d in public["promised_dates"]] == [
        first.isoformat(),
        moved.isoformat(),
        later.isoformat(),
    ]
    assert "source" not in public["promised_dates"][0]
    assert [d["source"] for d in admin["promised_dates"]] == ["retailer", "operator", "saga"]
    assert received(sims, undecided, "order.promised_date") == []
    auth = sims.authorizations()[waits]
    assert (auth["captures"], auth["captured_minor"]) == (1, 1000 + 1100)


async def _refusals(
    http: httpx.AsyncClient,
    pgc: asyncpg.Connection,
    backorder_id: int,
    other: asyncpg.Record,
    today: dt.date,
) -> None:
    """Bad changes answer a problem and change nothing."""
    before = (await _dates(pgc, backorder_id), await pgc.fetchval("SELECT count(*) FROM outbox"))
    path = f"/v1/admin/backorders/{backorder_id}/promised-date"
    yesterday = (today - dt.timedelta(days=1)).isoformat()
    good = {"promised_date": today.isoformat(), "reason": "r"}
    cases: list[tuple[str, Any, int, str]] = [
        (path, {"promised_date": yesterday, "reason": "r"}, 422, "DATE_IN_PAST"),
        (path, {"promised_date": "2026-13-01", "reason": "r"}, 422, "INVALID_REQUEST"),
        (path, {"promised_date": 20261201, "reason": "r"}, 422, "INVALID_REQUEST"),
        (path, {"promised_date": today.isoformat()}, 422, "INVALID_REQUEST"),
        (path, {**good, "reason": ""}, 422, "INVALID_REQUEST"),
        (path, [good], 422, "INVALID_REQUEST"),
        ("/v1/admin/backorders/999999999/promised-date", good, 404, "NOT_FOUND"),
        ("/v1/admin/backorders/x1/promised-date", good, 422, "INVALID_REQUEST"),
        (f"/v1/admin/backorders/{other['id']}/promised-date", good, 409, "BACKORDER_NOT_WAITING"),
    ]
    for url, doc, status, code in cases:
        reply = await http.post(url, json=doc, headers=ADMIN)
        assert (reply.status_code, reply.json()["code"]) == (status, code), (url, doc, reply.text)
        assert reply.headers["content-type"] == "application/problem+json"
    broken = await http.post(
        path, content=b'{"promised_date": ', headers={**ADMIN, "content-type": "application/json"}
    )
    assert (broken.status_code, broken.json()["code"]) == (400, "MALFORMED_JSON")
    anonymous = await http.post(path, json=good)
    assert anonymous.status_code == 401
    after = (await _dates(pgc, backorder_id), await pgc.fetchval("SELECT count(*) FROM outbox"))
    assert after == before


async def _snapshot(pgc: asyncpg.Connection, order_id: str) -> tuple[Any, ...]:
    """What a date change writes: the backorder's date, its history, the order's cursor and
    its notices."""
    b = await _backorder(pgc, order_id)
    return (
        b["promised_date"],
        await _dates(pgc, b["id"]),
        await pgc.fetchrow(
            "SELECT step_due_at, step_token FROM orders WHERE order_id = $1", order_id
        ),
        await pgc.fetchval("SELECT count(*) FROM outbox WHERE order_id = $1", order_id),
    )


async def _day_came(pgc: asyncpg.Connection, order_id: str) -> None:
    """The promised day is today: the saga's supplier.allocate is due."""
    await pgc.execute(
        "UPDATE backorders SET promised_date = current_date WHERE order_id = $1", order_id
    )
    await pgc.execute("UPDATE orders SET step_due_at = now() WHERE order_id = $1", order_id)


async def test_a_date_change_while_the_step_runs_is_refused_then_kept(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    http: httpx.AsyncClient,
    sale_id: str,
) -> None:
    sims = fresh_sims
    await create_sale(sengine, pgc, record(sale_id, {"X": [("P1", 100)], "Y": [("P1", 100)]}))
    sims.supplier("P1", stock={"X": 0, "Y": 100})  # X stays short on every promised day
    (order_id,) = await confirm_orders(sengine, sale_id, [[("X", 1), ("Y", 1)]])
    today = dt.datetime.now(dt.UTC).date()
    saga_day = today + dt.timedelta(days=ssettings.backorder_wait_days)
    first, second = today + dt.timedelta(days=20), today + dt.timedelta(days=30)
    async with reconciler(ssettings, sengine):
        await until(pgc, order_id, "BACKORDERED")
        b = await _backorder(pgc, order_id)
        wait = {"decision": "wait", "promised_date": first.isoformat()}
        decide = f"/v1/admin/backorders/{b['id']}/decision"
        reply = await http.post(decide, json=wait, headers=ADMIN)
        assert reply.status_code == 202, reply.text
        await until(pgc, order_id, "PARTIALLY_FULFILLED")
    path = f"/v1/admin/backorders/{b['id']}/promised-date"

    async with saga_parties(ssettings, sengine) as parties:
        # The day comes; the saga's step has read the order and is asking the supplier.
        await _day_came(pgc, order_id)
        c, o, d = await step_decided(parties, pgc, order_id)
        assert c.step == "supplier.allocate" and d.outcome == "promised date moved"
        before = await _snapshot(pgc, order_id)
        busy = await http.post(
            path, json={"promised_date": first.isoformat(), "reason": "lorry"}, headers=ADMIN
        )
        assert (busy.status_code, busy.json()["code"]) == (409, "ORDER_BUSY")
        assert busy.headers["retry-after"] == "1"
        assert await _snapshot(pgc, order_id) == before
        assert await saga_orders.write(pgc, c, o, d)  # the step's date: today + wait days
        assert (await _backorder(pgc, order_id))["promised_date"] == saga_day
        again = await http.post(
            path, json={"promised_date": first.isoformat(), "reason": "lorry"}, headers=ADMIN
        )
        assert again.status_code == 200, again.text
        assert again.json()["previous_date"] == saga_day.isoformat()
        assert await _due(pgc, order_id) == _midnight(first)

        # A step whose lease ran out, still running in a slow process: the operator's change
        # goes through and the step's outcome (the date it read, moved on) is dropped.
        await _day_came(pgc, order_id)
        c, o, d = await step_decided(parties, pgc, order_id, lease_ms=1)
        await asyncio.sleep(0.05)
        late = await http.post(
            path, json={"promised_date": second.isoformat(), "reason": "ship"}, headers=ADMIN
        )
        assert late.status_code == 200, late.text
        assert not await saga_orders.write(pgc, c, o, d)
    assert (await _backorder(pgc, order_id))["promised_date"] == second
    assert await _due(pgc, order_id) == _midnight(second)
    assert await _dates(pgc, b["id"]) == [
        (first, "retailer"),
        (saga_day, "saga"),
        (first, "operator"),
        (second, "operator"),
    ]
    async with reconciler(ssettings, sengine):
        await delivered(pgc)
        await audited(sengine, pgc, sale_id)
        await until(pgc, order_id, "PARTIALLY_FULFILLED")  # waits for its new day
    told = [n["lines"][0] for n in received(sims, order_id, "order.promised_date")]
    assert [(n["promised_date"], n["previous_date"]) for n in told] == [
        (first.isoformat(), None),
        (saga_day.isoformat(), today.isoformat()),
        (first.isoformat(), saga_day.isoformat()),
        (second.isoformat(), today.isoformat()),
    ]
    assert sims.authorizations()[order_id]["captures"] == 1
