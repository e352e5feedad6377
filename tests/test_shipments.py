"""Shipments reported by suppliers (POST /v1/shipments/{supplier}) on a real gateway, sent signed
by the supplier simulator, with the saga running against the simulators: split shipments give
PARTIALLY_FULFILLED then FULFILLED, a notice per shipment, duplicates applied once, refusals
that change nothing, suppliers without the flag as before, and concurrent shipments."""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx

from flashsale.engine import Engine, Settings
from flashsale.loadtests.simulators.feed_docs import signed_headers
from tests import shipment_support as support
from tests.reconciler_support import create_sale, record
from tests.saga_support import Sims, confirm_orders, reconciler
from tests.shipment_support import (
    ADMIN,
    SECRET,
    audited,
    delivered,
    moves,
    received,
    reporting_supplier,
    ship,
    sim_shipments,
    until,
)

_post, _doc, _state = support.post_signed, support.shipment_doc, support.shipment_state

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


async def test_a_split_shipment_partially_then_fulfilled_with_a_notice_each(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    http: httpx.AsyncClient,
    sale_id: str,
) -> None:
    sims = fresh_sims
    await create_sale(sengine, pgc, record(sale_id, {"A": [("R1", 100)]}))
    await reporting_supplier(http, "R1")
    sims.supplier("R1", shipment_secret=SECRET, carrier="DHL")
    (order_id,) = await confirm_orders(sengine, sale_id, [[("A", 3)]])
    async with reconciler(ssettings, sengine):
        await until(pgc, order_id, "CONFIRMED")  # parked: R1 has not shipped
        sent = ship(sims, "R1", order_id, {"A": 3}, split=2, shipment_id="box")
        answers = [(s["status"], s["answer"].get("status")) for s in sent]
        assert answers == [(201, "PARTIALLY_FULFILLED"), (201, "FULFILLED")], sent
        await until(pgc, order_id, "FULFILLED")
        await delivered(pgc)
        public = (await http.get(f"/v1/orders/{order_id}", headers=ADMIN)).json()
        admin = (await http.get(f"/v1/admin/orders/{order_id}", headers=ADMIN)).json()
        await audited(sengine, pgc, sale_id)

    assert [s["lines"] for s in sim_shipments(sims)] == [
        [{"sku": "A", "qty": 2}],
        [{"sku": "A", "qty": 1}],
    ]
    assert await moves(pgc, order_id) == [*HAPPY, "PARTIALLY_FULFILLED", "FULFILLED"]
    shipped = received(sims, order_id, "order.shipped")
    assert [(n["tracking_id"], n["carrier"], n["lines"], n["status"]) for n in shipped] == [
        ("DHL-R1-box-1", "DHL", [{"sku": "A", "qty": 2}], "PARTIALLY_FULFILLED"),
        ("DHL-R1-box-2", "DHL", [{"sku": "A", "qty": 1}], "FULFILLED"),
    ]
    assert len(received(sims, order_id, "order.fulfilled")) == 1  # the retailer, once
    assert len(received(sims, order_id, "order.confirmed")) == 1
    assert public["status"] == "FULFILLED"
    assert [(s["tracking_id"], s["lines"]) for s in public["shipments"]] == [
        ("DHL-R1-box-1", [{"sku": "A", "qty": 2}]),
        ("DHL-R1-box-2", [{"sku": "A", "qty": 1}]),
    ]
    assert "supplier_id" not in public["shipments"][0]
    assert {s["supplier_id"] for s in admin["shipments"]} == {"R1"}
    assert [t["to"] for t in admin["transitions"]][-2:] == ["PARTIALLY_FULFILLED", "FULFILLED"]
    auth = sims.authorizations()[order_id]
    assert (auth["captures"], auth["captured_minor"]) == (1, 3 * 1000)


async def test_refused_shipments_change_nothing_and_a_duplicate_applies_once(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    http: httpx.AsyncClient,
    sale_id: str,
) -> None:
    await create_sale(sengine, pgc, record(sale_id, {"A": [("R1", 100)], "B": [("N1", 100)]}))
    await reporting_supplier(http, "R1")
    await reporting_supplier(http, "N1", flag=False)  # has a secret, reports no shipments
    (order_id,) = await confirm_orders(sengine, sale_id, [[("A", 3), ("B", 1)]])
    async with reconciler(ssettings, sengine):
        # B (N1's, no shipments) counts as shipped: the order is partly on its way already.
        await until(pgc, order_id, "PARTIALLY_FULFILLED")
        first = await _post(http, "R1", _doc(order_id, "s1", {"A": 2}))
        assert (first.status_code, first.json()["status"]) == (201, "PARTIALLY_FULFILLED")
        before = await _state(pgc, order_id)
        again = await _post(http, "R1", _doc(order_id, "s1", {"A": 2}))
        assert (again.status_code, again.json()) == (
            200,
            {"shipment_id": "s1", "order_id": order_id, "duplicate": True},
        )
        reused = {**_doc(order_id, "s1", {"A": 2}), "tracking_id": "1Zother"}
        refusals: list[tuple[httpx.Response, int, str]] = [
            # s1 again with other contents: a reused id, not a duplicate
            (await _post(http, "R1", _doc(order_id, "s1", {"A": 1})), 409, "SHIPMENT_ID_REUSED"),
            (await _post(http, "R1", reused), 409, "SHIPMENT_ID_REUSED"),
            (
                await _post(http, "R1", _doc(order_id, "s2", {"A": 2})),
                422,
                "SHIPMENT_EXCEEDS_ORDER",
            ),
            (await _post(http, "R1", _doc(order_id, "s2", {"B": 1})), 422, "UNKNOWN_SKU"),
            (await _post(http, "R1", _doc("no-such-order", "s2", {"A": 1})), 404, "NOT_FOUND"),
            (await _post(http, "N1", _doc(order_id, "s2", {"B": 1})), 404, "NOT_FOUND"),
            (
                await _post(http, "R1", _doc(order_id, "s2", {"A": 1}), SECRET + "x"),
                401,
                "SIGNATURE_INVALID",
            ),
            (
                await _post(http, "R1", _doc(order_id, "s2", {"A": 1}), age_s=600),
                401,
                "SIGNATURE_STALE",
            ),
            (
                await _post(http, "R1", {**_doc(order_id, "s2", {"A": 1}), "lines": "A"}),
                422,
                "INVALID_REQUEST",
            ),
            (await _post(http, "R1", {**_doc(order_id, "s2", {"A": 0})}), 422, "INVALID_REQUEST"),
            (
                await _post(http, "R1", {**_doc(order_id, "s2", {"A": 1}), "shipped_at": "today"}),
                422,
                "INVALID_REQUEST",
            ),
            (
                await _post(http, "R1", {**_doc(order_id, "s2", {"A": 1}), "extra": 1}),
                422,
                "INVALID_REQUEST",
            ),
            (await _post(http, "R1", [1, 2]), 422, "INVALID_REQUEST"),
        ]
        unsigned = await http.post("/v1/shipments/R1", content=b"{}")
        refusals.append((unsigned, 401, "SIGNATURE_MISSING"))
        body = b'{"shipment_id": '
        broken = await http.post(
            "/v1/shipments/R1", content=body, headers=signed_headers(SECRET, body)
        )
        refusals.append((broken, 400, "MALFORMED_JSON"))
        for reply, status, code in refusals:
            assert (reply.status_code, reply.json()["code"]) == (status, code), reply.text
            assert reply.headers["content-type"] == "application/problem+json"
        assert await _state(pgc, order_id) == before
        last = await _post(http, "R1", _doc(order_id, "s3", {"A": 1}))
        assert (last.status_code, last.json()["status"]) == (201, "FULFILLED")
        await until(pgc, order_id, "FULFILLED")
        closed = await _post(http, "R1", _doc(order_id, "s4", {"A": 1}))
        assert closed.status_code == 422 and closed.json()["code"] == "SHIPMENT_EXCEEDS_ORDER"
        await delivered(pgc)
        await audited(sengine, pgc, sale_id)
    rows = await pgc.fetch(
        "SELECT shipment_id FROM shipments WHERE order_id = $1 ORDER BY shipment_id", order_id
    )
    assert [r["shipment_id"] for r in rows] == ["s1", "s3"]
    assert [n["tracking_id"] for n in received(fresh_sims, order_id, "order.shipped")] == [
        "1Zs1",
        "1Zs3",
    ]
    assert await moves(pgc, order_id) == [*HAPPY, "PARTIALLY_FULFILLED", "FULFILLED"]


async def test_suppliers_without_the_flag_fulfil_at_once_and_auto_shipping_completes(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    http: httpx.AsyncClient,
    sale_id: str,
) -> None:
    sims = fresh_sims
    await create_sale(sengine, pgc, record(sale_id, {"A": [("R1", 100)], "B": [("N2", 100)]}))
    await reporting_supplier(http, "R1")
    sims.supplier("R1", shipment_secret=SECRET, auto_ship=2)  # ships by itself after a confirm
    held = await confirm_orders(sengine, sale_id, [[("B", 2)], [("A", 5)]])
    a_order = next(o for o, lines in held.items() if lines[0][0] == "A")
    b_order = next(o for o, lines in held.items() if lines[0][0] == "B")
    async with reconciler(ssettings, sengine):
        for order_id in held:
            await until(pgc, order_id, "FULFILLED")
        await delivered(pgc)
        await audited(sengine, pgc, sale_id)
    by_order = Counter(s["order_id"] for s in sim_shipments(sims) if s["status"] == 201)
    assert by_order == {a_order: 2}
    assert await moves(pgc, b_order) == [*HAPPY, "FULFILLED"]  # as before shipments existed
    assert await moves(pgc, a_order) in (
        [*HAPPY, "PARTIALLY_FULFILLED", "FULFILLED"],  # notify parked it before they came
        [*HAPPY, "FULFILLED"],  # both shipments came before notify ran
    )
    assert len(received(sims, a_order, "order.shipped")) == 2
    assert received(sims, b_order, "order.shipped") == []
    assert len(received(sims, a_order, "order.fulfilled")) == 1


async def test_thirty_concurrent_shipments_of_one_unit_for_twenty_units(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    http: httpx.AsyncClient,
    sale_id: str,
) -> None:
    stock = {"A": [("R1", 100)], "B": [("R2", 100)], "C": [("R3", 100)]}
    await create_sale(sengine, pgc, record(sale_id, stock))
    for supplier in ("R1", "R2", "R3"):
        await reporting_supplier(http, supplier)
    (order_id,) = await confirm_orders(sengine, sale_id, [[("A", 8), ("B", 6), ("C", 6)]])
    async with reconciler(ssettings, sengine):
        await until(pgc, order_id, "CONFIRMED")
        posts = [
            _post(http, supplier, _doc(order_id, f"{supplier}-{i}", {sku: 1}))
            for i in range(10)
            for supplier, sku in (("R1", "A"), ("R2", "B"), ("R3", "C"))
        ]
        replies = await asyncio.gather(*posts)
        await until(pgc, order_id, "FULFILLED")
        await delivered(pgc)
        await audited(sengine, pgc, sale_id)
    outcomes = Counter((r.status_code, r.json().get("code")) for r in replies)
    assert outcomes == {(201, None): 20, (422, "SHIPMENT_EXCEEDS_ORDER"): 10}
    applied = Counter(r.json()["lines"][0]["sku"] for r in replies if r.status_code == 201)
    assert applied == {"A": 8, "B": 6, "C": 6}
    lines = await pgc.fetch(
        "SELECT sku, qty, shipped_qty FROM order_allocations WHERE order_id = $1", order_id
    )
    assert {(r["sku"], r["qty"], r["shipped_qty"]) for r in lines} == {
        ("A", 8, 8),
        ("B", 6, 6),
        ("C", 6, 6),
    }
    assert sum(r.json()["status"] == "FULFILLED" for r in replies if r.status_code == 201) == 1
    assert await moves(pgc, order_id) == [*HAPPY, "PARTIALLY_FULFILLED", "FULFILLED"]
    notes = await pgc.fetchval(
        "SELECT count(*) FROM order_transitions WHERE order_id = $1 AND cause LIKE 'shipment %'",
        order_id,
    )
    assert notes == 20  # one per shipment applied
    assert len(received(fresh_sims, order_id, "order.shipped")) == 20
    assert len(received(fresh_sims, order_id, "order.fulfilled")) == 1
