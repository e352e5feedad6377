"""A backordered line cut by a cancel: its backorder follows the units left, so the secondary
supplier the retailer then picks, or the supplier asked again on the promised day, is asked for
those, not for the line's first quantity; the customer's view shows the units cancelled. Through
the gateway, the saga and the simulators."""

from __future__ import annotations

import datetime as dt
import json

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx

from flashsale.engine import Engine, Settings
from tests.gateway_helpers import ADMIN, as_customer
from tests.order_change_support import available, invariants_hold, payment_of, settled
from tests.reconciler_support import create_sale, record
from tests.saga_support import Sims, confirm_orders, reconciler

pytest_plugins = ("tests.order_change_fixtures",)  # the simulators, a gateway, their database

X_PRICE, Y_PRICE = 1000, 1100  # record(): 1000 + 100 * the sku's position


async def backorder(pgc: asyncpg.Connection, order_id: str) -> dict[str, object]:
    row = await pgc.fetchrow(
        "SELECT id, qty, status FROM backorders WHERE order_id = $1 AND sku = 'X'", order_id
    )
    assert row is not None
    return dict(row)


async def customer_lines(api: httpx.AsyncClient, order_id: str) -> dict[str, dict[str, object]]:
    reply = await api.get(f"/v1/orders/{order_id}", headers=as_customer("c0"))
    assert reply.status_code == 200, reply.text
    return {line["sku"]: line for line in reply.json()["lines"]}


async def test_a_cut_backorder_asks_the_secondary_for_the_units_left(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    sims = fresh_sims
    await create_sale(sengine, pgc, record(sale_id, {"X": [("P1", 10)], "Y": [("P1", 10)]}))
    sims.supplier("P1", stock={"X": 0, "Y": 100})  # nobody of the sale can ship X
    sims.supplier("S9", stock={"X": 10}, cost_minor={"X": 700})  # the secondary, dearer
    (order_id,) = await confirm_orders(sengine, sale_id, [[("X", 3), ("Y", 1)]])
    async with reconciler(ssettings, sengine):
        await settled(pgc, order_id, "BACKORDERED")
        opened = await backorder(pgc, order_id)
        assert (opened["qty"], opened["status"]) == (3, "open")

        cut = {"lines": [{"sku": "X", "qty": 1}], "reason": "two are enough"}
        asked = await api.post(f"/v1/orders/{order_id}/cancel", json=cut, headers=as_customer("c0"))
        assert asked.status_code == 202, asked.text
        await settled(pgc, order_id, "BACKORDERED")  # still parked for the retailer
        assert await backorder(pgc, order_id) == {**opened, "qty": 2}
        # The retailer's secondary option is priced for the two units left.
        options = await pgc.fetchval("SELECT options FROM backorders WHERE id = $1", opened["id"])
        assert [o for o in json.loads(options) if o["decision"] == "secondary"] == [
            {
                "decision": "secondary",
                "supplier_id": "S9",
                "cost_minor": 700,
                "margin_minor": 2 * (X_PRICE - 700),
                "margin_change_minor": 2 * (X_PRICE - 700) - 2 * (X_PRICE - 400),
            }
        ]
        lines = await customer_lines(api, order_id)
        assert (lines["X"]["qty"], lines["X"]["cancelled_qty"], lines["X"]["refunded_qty"]) == (
            3,
            1,
            0,
        )
        assert (lines["Y"]["cancelled_qty"], lines["Y"]["refunded_qty"]) == (0, 0)

        decided = await api.post(
            f"/v1/admin/backorders/{opened['id']}/decision",
            json={"decision": "secondary", "supplier_id": "S9"},
            headers=ADMIN,
        )
        assert decided.status_code == 202, decided.text
        row = await settled(pgc, order_id, "FULFILLED")
        stock = await available(sengine, sale_id)
        await invariants_hold(sengine, pgc, sale_id)
        lines = await customer_lines(api, order_id)

    # The secondary was asked once, for the two units left, and locked them firm.
    asked_s9 = [r for r in sims.allocation_requests() if r["supplier_id"] == "S9"]
    assert asked_s9 == [{"supplier_id": "S9", "sku": "X", "qty": 2, "code": "LOCKED"}]
    locks = [
        (a["supplier_id"], a["sku"], a["qty"], a["status"])
        for a in sims.allocations()
        if a["key"].startswith(order_id + ":")
    ]
    assert sorted(locks) == [("P1", "Y", 1, "confirmed"), ("S9", "X", 2, "confirmed")]
    # Charged for what is left; nothing to refund, since the cut came before the capture.
    pay = payment_of(sims, order_id)
    assert pay["amount_minor"] == 3 * X_PRICE + Y_PRICE
    assert (pay["captures"], pay["captured_minor"], pay["refunded_minor"]) == (
        1,
        2 * X_PRICE + Y_PRICE,
        0,
    )
    assert (row["captured_minor"], row["refunded_minor"]) == (2 * X_PRICE + Y_PRICE, 0)
    assert await backorder(pgc, order_id) == {**opened, "qty": 2, "status": "secondary"}
    x = await pgc.fetchrow(
        "SELECT qty, cancelled_qty, supplier_id, margin_minor FROM order_allocations "
        "WHERE order_id = $1 AND sku = 'X'",
        order_id,
    )
    assert tuple(x) == (3, 1, "S9", 2 * (X_PRICE - 700))
    assert (lines["X"]["cancelled_qty"], lines["X"]["status"]) == (1, "allocated")
    # The cancelled unit was never offered again: nobody of the sale has X (P1's refusal took
    # the rest off the sale); Y sold one.
    assert stock == {("X", "P1"): 0, ("Y", "P1"): 9}


async def test_a_cut_waiting_backorder_asks_for_the_units_left_on_its_day(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    """The operator cuts a line the retailer chose to wait for (after the capture: refunded);
    on the promised day the supplier is asked for what is left."""
    sims = fresh_sims
    stock = {"X": [("P1", 10), ("P2", 10)], "Y": [("P1", 10)]}
    await create_sale(sengine, pgc, record(sale_id, stock))
    sims.supplier("P1", stock={"X": 0, "Y": 100})
    sims.supplier("P2", stock={"X": 0})
    (order_id,) = await confirm_orders(sengine, sale_id, [[("X", 3), ("Y", 1)]])
    async with reconciler(ssettings, sengine):
        await settled(pgc, order_id, "BACKORDERED")
        opened = await backorder(pgc, order_id)
        later = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=3)).isoformat()
        decided = await api.post(
            f"/v1/admin/backorders/{opened['id']}/decision",
            json={"decision": "wait", "promised_date": later},
            headers=ADMIN,
        )
        assert decided.status_code == 202, decided.text
        await settled(pgc, order_id, "PARTIALLY_FULFILLED")
        cut = await api.post(
            f"/v1/admin/orders/{order_id}/cancel",
            json={"lines": [{"sku": "X", "qty": 1}], "reason": "customer called"},
            headers=ADMIN,
        )
        assert cut.status_code == 202, cut.text
        row = await settled(pgc, order_id, "PARTIALLY_FULFILLED")
        assert row["refunded_minor"] == X_PRICE
        assert await backorder(pgc, order_id) == {**opened, "qty": 2, "status": "waiting"}

        # The promised day comes, and P2 has X again.
        sims.supplier("P2", stock={"X": 5})
        await pgc.execute(
            "UPDATE backorders SET promised_date = current_date WHERE order_id = $1", order_id
        )
        await pgc.execute("UPDATE orders SET step_due_at = now() WHERE order_id = $1", order_id)
        row = await settled(pgc, order_id, "FULFILLED")
        await invariants_hold(sengine, pgc, sale_id)
        lines = await customer_lines(api, order_id)

    asked_p2 = [r for r in sims.allocation_requests() if r["supplier_id"] == "P2"]
    assert [(r["qty"], r["code"]) for r in asked_p2] == [(3, "OUT_OF_STOCK"), (2, "LOCKED")]
    locks = [
        (a["supplier_id"], a["sku"], a["qty"], a["status"])
        for a in sims.allocations()
        if a["key"].startswith(order_id + ":")
    ]
    assert sorted(locks) == [("P1", "Y", 1, "confirmed"), ("P2", "X", 2, "confirmed")]
    pay = payment_of(sims, order_id)
    captured = 3 * X_PRICE + Y_PRICE  # the waiting line is charged too
    assert (pay["captures"], pay["captured_minor"], pay["refunded_minor"]) == (
        1,
        captured,
        X_PRICE,
    )
    assert (row["captured_minor"], row["refunded_minor"]) == (captured, X_PRICE)
    assert await backorder(pgc, order_id) == {**opened, "qty": 2, "status": "resolved"}
    assert (lines["X"]["qty"], lines["X"]["cancelled_qty"], lines["X"]["refunded_qty"]) == (3, 1, 0)
