"""The retailer's credit follows what the line ends as, through a real gateway, the simulators,
the saga, Redis and PostgreSQL: a line shipped by the supplier it was sold from owes nothing even
after a partial cancel; a rerouted line partly cancelled is owed its live units only; a refused
capture owes nothing; an order undone after its capture reverses its credit; a lock that lapsed
and went to a dearer supplier is credited at the supplier that ships it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx

from flashsale.engine import Engine, Settings
from tests.after_sale_support import (
    audit_ok,
    confirm,
    open_sale,
    sale_body,
    until_changes_done,
    until_status,
)
from tests.saga_support import Sims, reconciler

pytest_plugins = ("tests.order_change_fixtures",)  # the simulators, a gateway, their database


Entry = tuple[str, str, str, str, int, int]  # (order, sku, kind, cause, amount, owed after)


async def entries(pgc: asyncpg.Connection, sale_id: str) -> list[Entry]:
    rows = await pgc.fetch(
        "SELECT order_id, sku, kind, cause, amount_minor, owed_minor FROM retailer_ledger "
        "WHERE sale_id = $1 ORDER BY id",
        sale_id,
    )
    return [
        (r["order_id"], r["sku"], r["kind"], r["cause"], r["amount_minor"], r["owed_minor"])
        for r in rows
    ]


async def decide(
    admin_api: httpx.AsyncClient,
    pgc: asyncpg.Connection,
    order_id: str,
    pick: Callable[[list[dict[str, Any]]], dict[str, Any]],
) -> None:
    """The retailer's decision on the order's one backorder, from its options."""
    b = await pgc.fetchrow("SELECT id, options FROM backorders WHERE order_id = $1", order_id)
    reply = await admin_api.post(
        f"/v1/admin/backorders/{b['id']}/decision", json=pick(json.loads(b["options"]))
    )
    assert reply.status_code == 202, reply.text


def secondary(options: list[dict[str, Any]]) -> dict[str, Any]:
    (s9,) = [o for o in options if o["decision"] == "secondary"]
    assert (s9["supplier_id"], s9["cost_minor"]) == ("S9", 700)
    return {"decision": "secondary", "supplier_id": "S9"}


def wait(options: list[dict[str, Any]]) -> dict[str, Any]:
    (until,) = [o for o in options if o["decision"] == "wait"]
    return {"decision": "wait", "promised_date": until["promised_date"]}


async def until_waiting(pgc: asyncpg.Connection, order_id: str) -> None:
    """Until the order is captured with a line waiting for its promised date."""
    deadline = time.monotonic() + 60
    while True:
        row = await pgc.fetchrow(
            "SELECT status, step_due_at > now() AS later FROM orders WHERE order_id = $1",
            order_id,
        )
        if row["status"] == "PARTIALLY_FULFILLED" and row["later"]:
            return
        assert time.monotonic() < deadline, dict(row)
        await asyncio.sleep(0.1)


async def cancel(admin_api: httpx.AsyncClient, order_id: str, body: dict[str, Any]) -> None:
    reply = await admin_api.post(f"/v1/admin/orders/{order_id}/cancel", json=body)
    assert reply.status_code in (200, 201, 202), reply.text


async def test_partial_cancels_and_undone_orders(
    sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    admin_api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    sims.reset()
    sims.supplier("P1", stock={"X": 0, "Y": 100, "Z": 0})  # X goes to P2, Z to nobody
    sims.supplier("P2", stock={"X": 100})
    sims.supplier("S9", stock={"Z": 10}, cost_minor={"Z": 700})  # the secondary, dearer
    items = {
        "X": (1000, [("P1", 50, 400), ("P2", 50, 555)]),
        "Y": (1000, [("P1", 50, 400)]),
        "Z": (1000, [("P1", 50, 400)]),
    }
    await open_sale(admin_api, sale_id, sale_body(items, "full"))
    o1 = await confirm(sengine, sale_id, "c1", [("X", 3), ("Y", 2), ("Z", 1)])
    o2 = await confirm(sengine, sale_id, "c2", [("X", 2), ("Z", 1)])
    async with reconciler(ssettings, sengine):
        await until_status(pgc, [o1, o2], {"BACKORDERED"})
        # Nothing is owed before a supplier confirms a line (a lock may still lapse).
        assert await entries(pgc, sale_id) == []
        # o1: one X (rerouted) and one Y (shipped from its own supplier) cancelled; then Z
        # from the secondary supplier.
        await cancel(admin_api, o1, {"lines": [{"sku": "X", "qty": 1}, {"sku": "Y", "qty": 1}]})
        await until_changes_done(pgc, [o1], 1)
        await until_status(pgc, [o1], {"BACKORDERED"})
        await decide(admin_api, pgc, o1, secondary)
        # o2: Z waits; X is captured, confirmed at P2 and credited; then Z is cancelled and the
        # rest refunded by an operator: the credit is reversed.
        await decide(admin_api, pgc, o2, wait)
        await until_status(pgc, [o1], {"FULFILLED"})
        await until_waiting(pgc, o2)
        assert (o2, "X", "credit", "reroute", 2 * 155, 2 * 155) in await entries(pgc, sale_id)
        # X counts as shipped (P2 does not report shipments: PARTIALLY_FULFILLED says so), so
        # only the waiting Z is cancelled; paying back the rest then undoes the order.
        await cancel(admin_api, o2, {"lines": [{"sku": "Z", "qty": 1}], "reason": "no Z"})
        await until_changes_done(pgc, [o1, o2], 2)
        await until_status(pgc, [o2], {"FULFILLED"})
        rest = await admin_api.post(
            f"/v1/admin/orders/{o2}/refunds",
            json={"amount_minor": 2000, "reason": "changed my mind"},
            headers={"Idempotency-Key": "o2-rest"},
        )
        assert rest.status_code == 202, rest.text
        await until_changes_done(pgc, [o1, o2], 3)
        undone = await until_status(pgc, [o2], {"REFUNDED"})
        await audit_ok(sengine, pgc, sale_id)

    why = undone[o2].lower()
    assert sorted(await entries(pgc, sale_id)) == sorted(
        [
            (o1, "X", "credit", "reroute", 2 * 155, 2 * 155),  # its two live units only
            (o1, "Z", "credit", "secondary", 300, 300),
            (o2, "X", "credit", "reroute", 2 * 155, 2 * 155),
            (o2, "X", "reversal", why, 2 * 155, 0),
        ]
    )
    auths = sims.authorizations()
    assert (auths[o1]["captures"], auths[o1]["captured_minor"]) == (1, 4000)
    assert auths[o2]["captured_minor"] == 3000

    settled = (await admin_api.get(f"/v1/admin/sales/{sale_id}/settlement")).json()
    assert settled["credits_minor"] == 2 * 155 + 300
    assert [(c["order_id"], c["kind"], c["amount_minor"]) for c in settled["credits"]][-1] == (
        o2,
        "reversal",
        -2 * 155,
    )
    assert sum(c["amount_minor"] for c in settled["credits"]) == settled["credits_minor"]


async def test_a_refused_capture_owes_nothing(
    sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    admin_api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    sims.reset()
    sims.supplier("P1", stock={"X": 0})
    sims.supplier("P2", stock={"X": 100})
    sims.payment(expire_share=1.0)  # every capture finds the authorisation expired
    try:
        items = {"X": (1000, [("P1", 50, 400), ("P2", 50, 555)])}
        await open_sale(admin_api, sale_id, sale_body(items, "full"))
        orders = [await confirm(sengine, sale_id, f"c{i}", [("X", 1)]) for i in range(2)]
        async with reconciler(ssettings, sengine):
            await until_status(pgc, orders, {"PAYMENT_FAILED"})
            await audit_ok(sengine, pgc, sale_id)
    finally:
        sims.payment(expire_share=0.0)
    rerouted = await pgc.fetchval(
        "SELECT count(*) FROM order_allocations a JOIN orders o USING (order_id) "
        "WHERE o.sale_id = $1 AND a.supplier_id = 'P2'",
        sale_id,
    )
    assert rerouted == 2  # allocated at the dearer supplier before the capture was refused
    auths = sims.authorizations()
    assert [auths[o]["capture_refusals"] for o in orders] == [1, 1]
    assert await entries(pgc, sale_id) == []
    settled = (await admin_api.get(f"/v1/admin/sales/{sale_id}/settlement")).json()
    assert (settled["credits_minor"], settled["credits"]) == (0, [])


async def test_a_lapsed_lock_is_credited_where_it_ships(
    sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    admin_api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    """P2's lock lapses before the capture confirms it and its unit is sold elsewhere: the line
    goes to P3, dearer still, and is credited for P3's cost, once."""
    sims.reset()
    sims.supplier("P1", stock={"X": 0})
    sims.supplier("P2", stock={"X": 1}, lapse_next=1, lapse_sells=1)
    sims.supplier("P3", stock={"X": 100})
    items = {"X": (1000, [("P1", 50, 400), ("P2", 50, 555), ("P3", 50, 650)])}
    await open_sale(admin_api, sale_id, sale_body(items, {"share": 0.5}))
    order = await confirm(sengine, sale_id, "c1", [("X", 1)])
    async with reconciler(ssettings, sengine):
        await until_status(pgc, [order], {"FULFILLED"})
        await audit_ok(sengine, pgc, sale_id)

    mine = sorted(
        (a["supplier_id"], a["status"])
        for a in sims.allocations()
        if a["key"].startswith(order + ":")
    )
    assert mine == [("P2", "lapsed"), ("P3", "confirmed")]
    assert await entries(pgc, sale_id) == [(order, "X", "credit", "reroute", 125, 125)]
    row = await pgc.fetchrow(
        "SELECT supplier_id, margin_drop_minor FROM retailer_ledger WHERE order_id = $1", order
    )
    assert (row["supplier_id"], row["margin_drop_minor"]) == ("P3", 250)
