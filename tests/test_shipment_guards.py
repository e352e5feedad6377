"""What a shipment may not do, on a real gateway with the saga's own steps against the simulators:
land on a line its supplier has not confirmed yet, or move an order whose saga is stopped at a
dead-lettered step (409, nothing written; applied once the step is retried). And a supplier that
stops reporting shipments: the orders parked for its shipments settle at once."""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx

from flashsale.engine import Engine, Settings
from flashsale.store.saga import orders as saga_orders
from flashsale.store.saga.claims import claim, record_failure
from tests import shipment_support as support
from tests.reconciler_support import create_sale, record
from tests.saga_support import Sims, confirm_orders, reconciler
from tests.shipment_support import (
    ADMIN,
    audited,
    delivered,
    flushed,
    flushing,
    moves,
    received,
    reporting_supplier,
    saga_parties,
    step_decided,
    until,
)
from tests.shipment_support import post_signed as post
from tests.shipment_support import shipment_doc as doc
from tests.shipment_support import shipment_state as state

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

HAPPY = ["AUTHORIZED", "ALLOCATED", "CONFIRMED"]


async def test_a_shipment_waits_for_the_confirm_and_for_a_dead_step_to_be_retried(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    http: httpx.AsyncClient,
    sale_id: str,
) -> None:
    await create_sale(sengine, pgc, record(sale_id, {"A": [("R1", 100)]}))
    await reporting_supplier(http, "R1")
    (order_id,) = await confirm_orders(sengine, sale_id, [[("A", 2)]])
    async with flushing(ssettings, sengine), saga_parties(ssettings, sengine) as parties:
        await flushed(pgc, order_id)
        for step in ("payment.authorize", "supplier.allocate"):
            c, o, d = await step_decided(parties, pgc, order_id)
            assert c.step == step
            assert await saga_orders.write(pgc, c, o, d)
        # Allocated at R1, not confirmed yet (payment.capture confirms it): not shippable.
        allocated = await state(pgc, order_id)
        assert allocated[0] == "ALLOCATED"
        early = await post(http, "R1", doc(order_id, "box", {"A": 1}))
        assert (early.status_code, early.json()["code"]) == (409, "LINE_NOT_CONFIRMED")
        assert early.headers["content-type"] == "application/problem+json"
        assert await state(pgc, order_id) == allocated

        # The capture step gives up (dead-lettered): the order is stuck, a shipment too.
        (c,) = await claim(pgc, 1, 60_000)
        assert (c.order_id, c.step) == (order_id, "payment.capture")
        assert await record_failure(pgc, c, "the provider is down", delay_ms=0, dead=True)
        dead = await state(pgc, order_id)
        stuck = await post(http, "R1", doc(order_id, "box", {"A": 2}))
        assert (stuck.status_code, stuck.json()["code"]) == (409, "SAGA_STEP_DEAD")
        assert await state(pgc, order_id) == dead
        retried = await http.post(f"/v1/admin/orders/{order_id}/retry", headers=ADMIN)
        assert retried.status_code == 202, retried.text
        await audited(sengine, pgc, sale_id)

    async with reconciler(ssettings, sengine):
        await until(pgc, order_id, "CONFIRMED")  # parked for R1's shipment
        shipped = await post(http, "R1", doc(order_id, "box", {"A": 2}))
        assert (shipped.status_code, shipped.json()["status"]) == (201, "FULFILLED")
        await delivered(pgc)
        await audited(sengine, pgc, sale_id)
    assert await moves(pgc, order_id) == [*HAPPY, "FULFILLED"]
    lines = await pgc.fetch(
        "SELECT shipment_id, sku, qty FROM shipment_lines WHERE order_id = $1", order_id
    )
    assert [tuple(r) for r in lines] == [("box", "A", 2)]
    assert [n["tracking_id"] for n in received(fresh_sims, order_id, "order.shipped")] == ["1Zbox"]
    auth = fresh_sims.authorizations()[order_id]
    assert (auth["captures"], auth["captured_minor"]) == (1, 2 * 1000)


async def test_a_supplier_that_stops_reporting_shipments_settles_its_waiting_orders(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    http: httpx.AsyncClient,
    sale_id: str,
) -> None:
    await create_sale(sengine, pgc, record(sale_id, {"A": [("R1", 100)], "B": [("R2", 100)]}))
    await reporting_supplier(http, "R1")
    await reporting_supplier(http, "R2")
    held = await confirm_orders(sengine, sale_id, [[("A", 2), ("B", 1)], [("A", 1)], [("B", 3)]])
    both, only_r1, only_r2 = (
        next(o for o, lines in held.items() if sorted(x[0] for x in lines) == skus)
        for skus in (["A", "B"], ["A"], ["B"])
    )
    async with reconciler(ssettings, sengine):
        for order_id in held:
            await until(pgc, order_id, "CONFIRMED")
        sent = await post(http, "R1", doc(both, "r1-box", {"A": 2}))
        assert (sent.status_code, sent.json()["status"]) == (201, "PARTIALLY_FULFILLED")

        # R2 stops reporting shipments: its lines count as shipped from now on.
        await reporting_supplier(http, "R2", flag=False)
        statuses = await pgc.fetch(
            "SELECT order_id, status, next_step FROM orders WHERE sale_id = $1", sale_id
        )
        assert {r["order_id"]: (r["status"], r["next_step"]) for r in statuses} == {
            both: ("FULFILLED", None),
            only_r1: ("CONFIRMED", None),  # still waits for R1
            only_r2: ("FULFILLED", None),
        }
        late = await post(http, "R2", doc(only_r2, "r2-box", {"B": 3}))
        assert (late.status_code, late.json()["code"]) == (404, "NOT_FOUND")
        await delivered(pgc)
        await audited(sengine, pgc, sale_id)

    assert await moves(pgc, both) == [*HAPPY, "PARTIALLY_FULFILLED", "FULFILLED"]
    assert await moves(pgc, only_r2) == [*HAPPY, "FULFILLED"]
    assert await moves(pgc, only_r1) == HAPPY
    causes = await pgc.fetch(
        "SELECT order_id FROM order_transitions WHERE cause LIKE 'supplier R2 no longer%' "
        "ORDER BY order_id"
    )
    assert [r["order_id"] for r in causes] == sorted([both, only_r2])
    for order_id in (both, only_r2):
        assert len(received(fresh_sims, order_id, "order.fulfilled")) == 1
    assert received(fresh_sims, only_r1, "order.fulfilled") == []
    assert await pgc.fetchval("SELECT count(*) FROM shipments WHERE order_id = $1", only_r2) == 0
