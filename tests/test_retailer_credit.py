"""The retailer's credit: a line rerouted to a dearer supplier, or shipped from a secondary one
the retailer chose, is credited per the sale's policy (none, full, a share), once per line and
cause, through a real gateway, the simulators, the saga, Redis and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx

from flashsale.engine import Engine, Settings
from flashsale.store import retailer_ledger
from flashsale.store.saga import orders as saga_orders
from flashsale.store.saga.claims import Claim
from tests.after_sale_support import (
    audit_ok,
    confirm,
    open_sale,
    sale_body,
    until_status,
)
from tests.saga_support import Sims, reconciler

pytest_plugins = ("tests.order_change_fixtures",)  # the simulators, a gateway, their database


async def view_policy(admin_api: httpx.AsyncClient, sale_id: str) -> Any:
    reply = await admin_api.get(f"/v1/admin/sales/{sale_id}")
    assert reply.status_code == 200, reply.text
    return reply.json()["credit_policy"]


async def test_credit_policy_is_checked_and_shown(
    admin_api: httpx.AsyncClient, sale_id: str
) -> None:
    items = {"X": (1000, [("P1", 5, 400)])}
    made = await admin_api.put(f"/v1/admin/sales/{sale_id}", json=sale_body(items, {"share": 0.25}))
    assert made.status_code == 201, made.text
    assert await view_policy(admin_api, sale_id) == {"share": 0.25}
    bad: list[Any] = [
        "half",
        "FULL",
        None,
        3,
        {"share": 1.5},
        {"share": -0.1},
        {"share": "0.5"},
        {"share": True},
        {"share": 0.5, "cap": 10},
        {"share": 0.1234567890123},
        [],
    ]
    for policy in bad:
        body = {**sale_body(items), "credit_policy": policy}
        reply = await admin_api.put(f"/v1/admin/sales/{sale_id}", json=body)
        assert reply.status_code == 422, (policy, reply.text)
        assert reply.headers["content-type"] == "application/problem+json"
        assert reply.json()["code"] == "INVALID_REQUEST"
        assert "credit_policy" in reply.json()["detail"]
        assert await view_policy(admin_api, sale_id) == {"share": 0.25}  # unchanged
    for policy, shown in [
        ("full", "full"),
        ({"share": 1}, "full"),
        ({"share": 0}, "none"),
        ({"share": 0.5}, {"share": 0.5}),
        (None, "none"),
    ]:
        body = sale_body(items) if policy is None else sale_body(items, policy)
        reply = await admin_api.put(f"/v1/admin/sales/{sale_id}", json=body)
        assert reply.status_code == 200, reply.text
        assert await view_policy(admin_api, sale_id) == shown


async def credits_of(pgc: asyncpg.Connection, sale_id: str) -> set[tuple[str, str, str, int, int]]:
    rows = await pgc.fetch(
        "SELECT order_id, sku, cause, amount_minor, margin_drop_minor FROM retailer_ledger "
        "WHERE sale_id = $1",
        sale_id,
    )
    return {
        (r["order_id"], r["sku"], r["cause"], r["amount_minor"], r["margin_drop_minor"])
        for r in rows
    }


async def decide_secondary(
    admin_api: httpx.AsyncClient, pgc: asyncpg.Connection, order_id: str
) -> None:
    b = await pgc.fetchrow("SELECT id, options FROM backorders WHERE order_id = $1", order_id)
    offered = [o for o in json.loads(b["options"]) if o["decision"] == "secondary"]
    assert offered == [
        {
            "decision": "secondary",
            "supplier_id": "S9",
            "cost_minor": 700,
            "margin_minor": 300,
            "margin_change_minor": -300,
        }
    ]
    reply = await admin_api.post(
        f"/v1/admin/backorders/{b['id']}/decision",
        json={"decision": "secondary", "supplier_id": "S9"},
    )
    assert reply.status_code == 202, reply.text


async def test_reroute_and_secondary_are_credited_per_policy_once(
    sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    admin_api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    sims.reset()
    sims.supplier("P1", stock={"X": 0, "Y": 0})  # X goes to P2, Y to nobody of the sale
    sims.supplier("P2", stock={"X": 100})
    sims.supplier("S9", stock={"Y": 10}, cost_minor={"Y": 700})  # the secondary, dearer
    items = {"X": (1000, [("P1", 50, 400), ("P2", 50, 555)]), "Y": (1000, [("P1", 50, 400)])}
    policies: dict[str, Any] = {"full": "full", "half": {"share": 0.5}, "none": "none"}
    orders: dict[str, tuple[str, str, str]] = {}  # policy -> (sale, X order, Y order)
    for name, policy in policies.items():
        sid = f"{sale_id}-{name}"
        await open_sale(admin_api, sid, sale_body(items, policy))
        x = await confirm(sengine, sid, "c1", [("X", 1)])
        y = await confirm(sengine, sid, "c2", [("Y", 1)])
        orders[name] = (sid, x, y)
    xs = [x for _, x, _ in orders.values()]
    ys = [y for _, _, y in orders.values()]
    async with reconciler(ssettings, sengine):
        await until_status(pgc, xs, {"FULFILLED"})
        await until_status(pgc, ys, {"BACKORDERED"})
        for y in ys:
            await decide_secondary(admin_api, pgc, y)
        await until_status(pgc, ys, {"FULFILLED"})
        for sid, _, _ in orders.values():
            await audit_ok(sengine, pgc, sid)

    # X: planned 1000 - 400, shipped by P2 at 555: 155 lost. Y: from S9 at 700: 300 lost.
    expected = {
        "full": {("X", "reroute", 155, 155), ("Y", "secondary", 300, 300)},
        "half": {("X", "reroute", 77, 155), ("Y", "secondary", 150, 300)},  # rounded down
        "none": set(),
    }
    for name, (sid, x, y) in orders.items():
        want = {
            (x if sku == "X" else y, sku, cause, amount, drop)
            for sku, cause, amount, drop in expected[name]
        }
        assert await credits_of(pgc, sid) == want, name
        settled = (await admin_api.get(f"/v1/admin/sales/{sid}/settlement")).json()
        assert settled["credits_minor"] == sum(a for _, _, a, _ in expected[name])

    # The parties: each order captured once in full; X confirmed at P2 and Y at S9, once each,
    # after P1 refused both.
    auths = sims.authorizations()
    for order_id in xs + ys:
        a = auths[order_id]
        assert (a["status"], a["captures"], a["captured_minor"]) == ("captured", 1, 1000)
    confirmed = sorted(
        (a["key"].split(":", 1)[0], a["sku"], a["supplier_id"], a["confirms"])
        for a in sims.allocations()
        if a["status"] == "confirmed"
    )
    assert confirmed == sorted([(x, "X", "P2", 1) for x in xs] + [(y, "Y", "S9", 1) for y in ys])
    refused = {
        (r["sku"], r["supplier_id"]) for r in sims.allocation_requests() if r["code"] != "LOCKED"
    }
    assert refused == {("X", "P1"), ("Y", "P1")}

    # The credit write run again (a retried step, a second round) finds nothing left to write.
    full_sale, x, y = orders["full"]
    before = await credits_of(pgc, full_sale)
    for order_id, step in ((x, "supplier.allocate"), (y, "backorder.apply")):
        order = await saga_orders.load(pgc, Claim(order_id, step, 0, 1, 1))
        assert [retailer_ledger.cause(order, line) for line in order.lines] == [
            "reroute" if order_id == x else "secondary"
        ]
        async with pgc.transaction():
            assert await retailer_ledger.reconcile(pgc, order) == 0
    assert await credits_of(pgc, full_sale) == before


async def test_a_line_allocated_again_is_credited_once(
    sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    admin_api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    """P2's first locks lapse before the capture confirms them: supplier.allocate runs again
    for those lines, reroutes them to P2 again, and the credit is still written once."""
    sims.reset()
    sims.supplier("P1", stock={"X": 0})
    sims.supplier("P2", stock={"X": 100}, lapse_next=3)
    items = {"X": (1000, [("P1", 50, 400), ("P2", 50, 555)])}
    await open_sale(admin_api, sale_id, sale_body(items, "full"))
    orders = [await confirm(sengine, sale_id, f"c{i}", [("X", 1)]) for i in range(3)]
    async with reconciler(ssettings, sengine):
        await until_status(pgc, orders, {"FULFILLED"})
        await audit_ok(sengine, pgc, sale_id)

    at_p2: dict[str, list[str]] = {}
    for a in sims.allocations():
        if a["supplier_id"] == "P2":
            at_p2.setdefault(a["key"].split(":", 1)[0], []).append(a["status"])
    assert {o: sorted(s) for o, s in at_p2.items()} == {o: ["confirmed", "lapsed"] for o in orders}
    assert await credits_of(pgc, sale_id) == {(o, "X", "reroute", 155, 155) for o in orders}
