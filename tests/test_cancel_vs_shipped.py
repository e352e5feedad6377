"""Cancels and refunds against units that have shipped: a shipment that
arrives while a cancel is pending ships only what the cancel leaves; a line cut down after part of
it shipped is locked again for the unshipped rest only, asked for before the old lock goes; a
refund of everything leaves an order with units still to ship open for its shipments; a whole
cancel takes the refunded units not shipped too; a customer's Idempotency-Key never replays an
operator's change."""

from __future__ import annotations

from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx

from flashsale.engine import Engine, Settings
from tests.gateway_helpers import ADMIN, as_customer
from tests.order_change_support import (
    available,
    invariants_hold,
    payment_of,
    problem,
    settled,
    snapshot,
)
from tests.reconciler_support import create_sale, record
from tests.saga_support import Sims, confirm_orders, reconciler
from tests.shipment_support import SECRET, reporting_supplier, ship, shipment_state

pytest_plugins = ("tests.order_change_fixtures",)  # the simulators, a gateway, their database

PRICE = 1000  # record(): 1000 + 100 * the sku's position


async def _parked(
    sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    api: httpx.AsyncClient,
    sale_id: str,
    qty: int,
    stock: int = 100,
) -> str:
    """An order of `qty` A from R1 (which reports shipments and has `stock` A), captured and
    parked CONFIRMED for its shipments; the reconciler stopped after it."""
    async with httpx.AsyncClient() as control:  # where the supplier simulator posts shipments
        config = {"gateway_url": str(api.base_url)}
        (
            await control.post(sims.urls["suppliers"] + "/_sim/config", json=config)
        ).raise_for_status()
    await create_sale(sengine, pgc, record(sale_id, {"A": [("R1", 100)]}))
    await reporting_supplier(api, "R1")
    sims.supplier("R1", shipment_secret=SECRET, carrier="DHL", stock={"A": stock})
    (order_id,) = await confirm_orders(sengine, sale_id, [[("A", qty)]])
    async with reconciler(ssettings, sengine):
        await settled(pgc, order_id, "CONFIRMED")
    return order_id


def _locks(sims: Sims, order_id: str) -> list[tuple[int, str]]:
    found = [a for a in sims.allocations() if a["key"].startswith(order_id + ":")]
    found.sort(key=lambda a: int(a["id"].split("_")[1]))
    return [(a["qty"], a["status"]) for a in found]


def _asked(sims: Sims) -> list[tuple[Any, Any]]:
    """R1's allocation calls in order, refused ones too: (qty, code). Only this test's order
    asks R1 (the simulators are reset for each test)."""
    return [(r["qty"], r["code"]) for r in sims.allocation_requests() if r["supplier_id"] == "R1"]


async def test_a_shipment_while_a_cancel_is_pending_ships_only_what_the_cancel_leaves(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    sims = fresh_sims
    # R1 has exactly the 4 units: the rest cannot be locked beside the old lock, so the old lock
    # is cancelled first and the rest asked for again.
    order_id = await _parked(sims, sengine, pgc, ssettings, api, sale_id, 4, stock=4)
    assert [
        s["status"] for s in ship(sims, "R1", order_id, {"A": 1}, shipment_id=f"{order_id}-b1")
    ] == [201]
    url = f"/v1/admin/orders/{order_id}/cancel"
    one = await api.post(url, json={"lines": [{"sku": "A", "qty": 1}]}, headers=ADMIN)
    assert one.status_code == 202, one.text  # pending: no reconciler runs
    before = await shipment_state(pgc, order_id)
    over = ship(sims, "R1", order_id, {"A": 3}, shipment_id=f"{order_id}-b2")
    assert [(s["status"], s["answer"]["code"]) for s in over] == [(422, "SHIPMENT_EXCEEDS_ORDER")]
    assert await shipment_state(pgc, order_id) == before
    assert [
        s["status"] for s in ship(sims, "R1", order_id, {"A": 1}, shipment_id=f"{order_id}-b3")
    ] == [201]
    async with reconciler(ssettings, sengine):
        row = await settled(pgc, order_id, "PARTIALLY_FULFILLED")
        # 4 ordered, 1 cancelled, 2 shipped: 1 unit locked again, confirmed, and it ships.
        assert _locks(sims, order_id) == [(4, "cancelled"), (1, "confirmed")]
        last = ship(sims, "R1", order_id, {"A": 1}, shipment_id=f"{order_id}-b4")
        assert [s["status"] for s in last] == [201]
        row = await settled(pgc, order_id, "FULFILLED")
        stock = await available(sengine, sale_id)
        await invariants_hold(sengine, pgc, sale_id)

    change_id = one.json()["change_id"]
    # The first lock, the rest asked for beside it (refused), then again once it was cancelled.
    assert _asked(sims) == [(4, "LOCKED"), (1, "OUT_OF_STOCK"), (1, "LOCKED")]
    assert (row["captured_minor"], row["refunded_minor"]) == (4 * PRICE, PRICE)
    refunds = payment_of(sims, order_id)["refunds"]
    assert refunds == [{"key": f"{order_id}:order.change:1:{change_id}", "amount_minor": PRICE}]
    assert stock == {("A", "R1"): 100 - 4 + 1}
    line = await pgc.fetchrow(
        "SELECT qty, cancelled_qty, shipped_qty FROM order_allocations WHERE order_id = $1",
        order_id,
    )
    assert tuple(line) == (4, 1, 3)


async def test_the_rest_is_locked_before_the_old_lock_goes(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    sims = fresh_sims
    order_id = await _parked(sims, sengine, pgc, ssettings, api, sale_id, 3)
    first = ship(sims, "R1", order_id, {"A": 1}, shipment_id=f"{order_id}-b1")
    assert [s["status"] for s in first] == [201], first
    async with reconciler(ssettings, sengine):
        await settled(pgc, order_id, "PARTIALLY_FULFILLED")
        url = f"/v1/admin/orders/{order_id}/cancel"
        one = await api.post(url, json={"lines": [{"sku": "A", "qty": 1}]}, headers=ADMIN)
        assert one.status_code == 202, one.text
        await settled(pgc, order_id, "PARTIALLY_FULFILLED")
        assert [
            s["status"] for s in ship(sims, "R1", order_id, {"A": 1}, shipment_id=f"{order_id}-b2")
        ] == [201]
        await settled(pgc, order_id, "FULFILLED")
        await invariants_hold(sengine, pgc, sale_id)
    assert _asked(sims) == [(3, "LOCKED"), (1, "LOCKED")]  # the rest, beside the old lock
    assert _locks(sims, order_id) == [(3, "cancelled"), (1, "confirmed")]


async def test_a_refund_of_everything_leaves_units_to_ship_open_for_shipments(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    sims = fresh_sims
    order_id = await _parked(sims, sengine, pgc, ssettings, api, sale_id, 2)
    async with reconciler(ssettings, sengine):
        refund = await api.post(
            f"/v1/admin/orders/{order_id}/refunds",
            json={"amount_minor": 2 * PRICE, "reason": "late"},
            headers={**ADMIN, "Idempotency-Key": "all"},
        )
        assert refund.status_code == 202, refund.text
        row = await settled(pgc, order_id, "CONFIRMED")  # 2 units still to ship
        assert row["refunded_minor"] == 2 * PRICE
        sent = ship(sims, "R1", order_id, {"A": 2}, shipment_id=f"{order_id}-b1")
        assert [s["status"] for s in sent] == [201]
        row = await settled(pgc, order_id, "FULFILLED")
        await invariants_hold(sengine, pgc, sale_id)
    assert [r["amount_minor"] for r in payment_of(sims, order_id)["refunds"]] == [2 * PRICE]
    assert _locks(sims, order_id) == [(2, "confirmed")]


async def test_a_whole_cancel_takes_refunded_units_not_shipped(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    sims = fresh_sims
    order_id = await _parked(sims, sengine, pgc, ssettings, api, sale_id, 2)
    async with reconciler(ssettings, sengine):
        refund = await api.post(
            f"/v1/admin/orders/{order_id}/refunds",
            json={"lines": [{"sku": "A", "qty": 1}], "reason": "scratched"},
            headers={**ADMIN, "Idempotency-Key": "one"},
        )
        assert refund.status_code == 202, refund.text
        await settled(pgc, order_id, "CONFIRMED")
        whole = await api.post(
            f"/v1/admin/orders/{order_id}/cancel", json={"reason": "gone"}, headers=ADMIN
        )
        assert whole.status_code == 202, whole.text
        assert (whole.json()["amount_minor"], whole.json()["lines"]) == (
            PRICE,
            [{"sku": "A", "hold_supplier": "R1", "qty": 2}],
        )
        row = await settled(pgc, order_id, "REFUNDED")
        stock = await available(sengine, sale_id)
        await invariants_hold(sengine, pgc, sale_id)
    assert row["refunded_minor"] == row["captured_minor"] == 2 * PRICE
    assert [r["amount_minor"] for r in payment_of(sims, order_id)["refunds"]] == [PRICE, PRICE]
    assert _locks(sims, order_id) == [(2, "cancelled")]
    assert stock == {("A", "R1"): 100}
    line = await pgc.fetchrow(
        "SELECT status, cancelled_qty FROM order_allocations WHERE order_id = $1", order_id
    )
    assert tuple(line) == ("cancelled", 2)


async def test_a_customer_key_never_replays_an_operator_change(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    sims = fresh_sims
    order_id = await _parked(sims, sengine, pgc, ssettings, api, sale_id, 2)
    body = {"lines": [{"sku": "A", "qty": 1}]}
    mine = await api.post(
        f"/v1/admin/orders/{order_id}/cancel", json=body, headers={**ADMIN, "Idempotency-Key": "k"}
    )
    assert mine.status_code == 202, mine.text
    before = await snapshot(pgc, order_id)
    theirs = await api.post(
        f"/v1/orders/{order_id}/cancel",
        json=body,
        headers={**as_customer("c0"), "Idempotency-Key": "k"},
    )
    problem(theirs, 422, "IDEMPOTENCY_CONFLICT")
    again = await api.post(
        f"/v1/admin/orders/{order_id}/cancel", json=body, headers={**ADMIN, "Idempotency-Key": "k"}
    )
    assert (again.status_code, again.json()["change_id"]) == (202, mine.json()["change_id"])
    assert await snapshot(pgc, order_id) == before
    listed = f"/v1/admin/orders/{order_id}/changes"
    problem(await api.get(listed, params={"status": "x"}, headers=ADMIN), 422, "INVALID_REQUEST")
    assert (await api.get(listed, headers=ADMIN)).status_code == 200
    async with reconciler(ssettings, sengine):
        await settled(pgc, order_id, "CONFIRMED")
        await invariants_hold(sengine, pgc, sale_id)
    assert [r["amount_minor"] for r in payment_of(sims, order_id)["refunds"]] == [PRICE]


async def test_a_returned_unit_counts_as_shipped_once(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    """3 ordered, 2 shipped, 1 of those returned (refunded): the unit not shipped is still
    cancellable; the returned one is neither shipped nor cancellable again."""
    sims = fresh_sims
    order_id = await _parked(sims, sengine, pgc, ssettings, api, sale_id, 3)
    sent = ship(sims, "R1", order_id, {"A": 2}, shipment_id=f"{order_id}-b1")
    assert [s["status"] for s in sent] == [201]
    async with reconciler(ssettings, sengine):
        await settled(pgc, order_id, "PARTIALLY_FULFILLED")
        back = {"lines": [{"sku": "A", "qty": 1, "condition": "damaged"}], "reason": "broken"}
        returned = await api.post(
            f"/v1/admin/orders/{order_id}/returns",
            json=back,
            headers={**ADMIN, "Idempotency-Key": "ret"},
        )
        assert returned.status_code == 201, returned.text
        await settled(pgc, order_id, "PARTIALLY_FULFILLED")
        url = f"/v1/admin/orders/{order_id}/cancel"
        before = await snapshot(pgc, order_id)
        two = {"lines": [{"sku": "A", "qty": 2}]}
        problem(await api.post(url, json=two, headers=ADMIN), 409, "LINE_SHIPPED")
        assert await snapshot(pgc, order_id) == before
        one = await api.post(url, json={"lines": [{"sku": "A", "qty": 1}]}, headers=ADMIN)
        assert one.status_code == 202, one.text
        row = await settled(pgc, order_id, "FULFILLED")  # the 2 left have shipped
        assert row["refunded_minor"] == 2 * PRICE
        # The other shipped unit comes back too: everything captured is paid back and no unit
        # is left to ship (returned units left the supplier): REFUNDED.
        returned = await api.post(
            f"/v1/admin/orders/{order_id}/returns",
            json=back,
            headers={**ADMIN, "Idempotency-Key": "ret-2"},
        )
        assert returned.status_code == 201, returned.text
        row = await settled(pgc, order_id, "REFUNDED")
        await invariants_hold(sengine, pgc, sale_id)
    assert row["refunded_minor"] == row["captured_minor"] == 3 * PRICE
    refunds = payment_of(sims, order_id)["refunds"]
    assert [r["amount_minor"] for r in refunds] == [PRICE, PRICE, PRICE]
    assert _locks(sims, order_id) == [(3, "cancelled")]
    line = await pgc.fetchrow(
        "SELECT cancelled_qty, refunded_qty, shipped_qty FROM order_allocations "
        "WHERE order_id = $1",
        order_id,
    )
    assert tuple(line) == (1, 2, 2)
