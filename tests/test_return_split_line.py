"""A return refunds the very line its units came from: a sku split over two hold suppliers, one
that reports its shipments (nothing shipped yet) and one that does not. The returned unit can
only be the second's; its refund is booked on that line, and the first can still ship all of its
units. Through the gateway, the saga and the simulators."""

from __future__ import annotations

import json

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx

from flashsale.engine import Engine, Settings
from tests.gateway_helpers import ADMIN, as_customer
from tests.order_change_support import available, invariants_hold, payment_of, settled
from tests.reconciler_support import create_sale, record
from tests.saga_support import Sims, confirm_orders, reconciler
from tests.shipment_support import SECRET, reporting_supplier, ship

pytest_plugins = ("tests.order_change_fixtures",)  # the simulators, a gateway, their database

PRICE = 1000  # record(): the first sku's price


async def lines_of(pgc: asyncpg.Connection, order_id: str) -> list[tuple[object, ...]]:
    rows = await pgc.fetch(
        "SELECT hold_supplier, qty, shipped_qty, refunded_qty, refunded_minor "
        "FROM order_allocations WHERE order_id = $1 ORDER BY hold_supplier",
        order_id,
    )
    return [tuple(r) for r in rows]


async def test_a_return_refunds_the_line_it_came_from(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    sims = fresh_sims
    async with httpx.AsyncClient() as control:  # where the supplier simulator posts shipments
        config = {"gateway_url": str(api.base_url)}
        (
            await control.post(sims.urls["suppliers"] + "/_sim/config", json=config)
        ).raise_for_status()
    # P1 holds two units of X, P2 the rest: an order of three takes two of P1's and one of P2's.
    await create_sale(sengine, pgc, record(sale_id, {"X": [("P1", 2), ("P2", 40)]}))
    await reporting_supplier(api, "P1")  # its line waits for its shipments
    sims.supplier("P1", stock={"X": 100}, shipment_secret=SECRET, carrier="DHL")
    sims.supplier("P2", stock={"X": 100})
    try:
        (order_id,) = await confirm_orders(sengine, sale_id, [[("X", 3)]])
        async with reconciler(ssettings, sengine):
            # Captured; P2's unit counts as shipped, P1's wait for its report.
            await settled(pgc, order_id, "PARTIALLY_FULFILLED")
            assert await lines_of(pgc, order_id) == [("P1", 2, 0, 0, 0), ("P2", 1, 0, 0, 0)]
            body = {"lines": [{"sku": "X", "qty": 1, "condition": "restockable"}], "reason": "r"}
            returned = await api.post(
                f"/v1/admin/orders/{order_id}/returns",
                json=body,
                headers={**ADMIN, "Idempotency-Key": "ret-1"},
            )
            assert returned.status_code == 201, returned.text
            assert [(x["hold_supplier"], x["qty"]) for x in returned.json()["lines"]] == [("P2", 1)]
            await settled(pgc, order_id, "PARTIALLY_FULFILLED")  # refunded; P1 still to ship
            assert await lines_of(pgc, order_id) == [("P1", 2, 0, 0, 0), ("P2", 1, 0, 1, PRICE)]

            sent = ship(sims, "P1", order_id, {"X": 2}, shipment_id="box")
            assert [s["status"] for s in sent] == [201], sent
            row = await settled(pgc, order_id, "FULFILLED")
            stock = await available(sengine, sale_id)
            await invariants_hold(sengine, pgc, sale_id)
            mine = await api.get(f"/v1/orders/{order_id}", headers=as_customer("c0"))
    finally:
        await reporting_supplier(api, "P1", flag=False)

    assert await lines_of(pgc, order_id) == [("P1", 2, 2, 0, 0), ("P2", 1, 0, 1, PRICE)]
    changes = await pgc.fetch(
        "SELECT kind, source, status, lines, amount_minor FROM order_changes WHERE order_id = $1",
        order_id,
    )
    assert [(c["kind"], c["source"], c["status"]) for c in changes] == [
        ("refund", "return", "applied")
    ]
    assert json.loads(changes[0]["lines"]) == [["X", "P2", 1]]
    assert changes[0]["amount_minor"] == PRICE
    # The payment: three units captured once, one refunded once.
    pay = payment_of(sims, order_id)
    assert (pay["captures"], pay["captured_minor"], pay["refunded_minor"]) == (1, 3 * PRICE, PRICE)
    assert [r["amount_minor"] for r in pay["refunds"]] == [PRICE]
    assert (row["captured_minor"], row["refunded_minor"]) == (3 * PRICE, PRICE)
    # The suppliers: each line locked once and firm; P1 shipped both of its units.
    locks = [
        (a["supplier_id"], a["qty"], a["status"])
        for a in sims.allocations()
        if a["key"].startswith(order_id + ":")
    ]
    assert sorted(locks) == [("P1", 2, "confirmed"), ("P2", 1, "confirmed")]
    # The returned unit back on sale at P2, where the hold took it.
    assert stock == {("X", "P1"): 0, ("X", "P2"): 40 - 1 + 1}
    # The customer sees the refunded unit on its line, and no supplier.
    assert mine.status_code == 200, mine.text
    assert [(x["qty"], x["cancelled_qty"], x["refunded_qty"]) for x in mine.json()["lines"]] == [
        (2, 0, 0),
        (1, 0, 1),
    ]
    assert "P2" not in mine.text and "hold_supplier" not in mine.text
