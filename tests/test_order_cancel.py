"""Cancellations through the gateway, carried out by the saga against the simulators: a customer's
whole and per-line cancel before the capture (asked while a step runs), an operator's cancels
after the capture (refunds), and every refusal leaving the order as it was."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx

from flashsale.engine import Engine, Settings
from tests.gateway_helpers import ADMIN, as_customer
from tests.order_change_support import (
    available,
    invariants_hold,
    order_row,
    payment_of,
    problem,
    settled,
    snapshot,
    step_running,
    until_flushed,
    until_ledger,
)
from tests.reconciler_support import create_sale, record
from tests.saga_support import Sims, confirm_orders, reconciler
from tests.shipment_support import SECRET, reporting_supplier, ship

pytest_plugins = ("tests.order_change_fixtures",)  # the simulators, a gateway, their database

X_PRICE, Y_PRICE = 1000, 1100  # record(): 1000 + 100 * the sku's position


async def owners(pgc: asyncpg.Connection, order_ids: list[str]) -> dict[str, str]:
    """customer id -> order id."""
    rows = await pgc.fetch(
        "SELECT order_id, customer_id FROM orders WHERE order_id = ANY($1)", order_ids
    )
    return {r["customer_id"]: r["order_id"] for r in rows}


def allocations_of(sims: Sims, order_id: str) -> list[dict[str, Any]]:
    return sorted(
        (a for a in sims.allocations() if a["key"].startswith(order_id + ":")),
        key=lambda a: int(a["id"].split("_")[1]),
    )


async def notices(pgc: asyncpg.Connection, order_id: str, topic: str) -> list[dict[str, Any]]:
    rows = await pgc.fetch(
        "SELECT recipient, payload FROM outbox WHERE order_id = $1 AND topic = $2 "
        "ORDER BY recipient",
        order_id,
        topic,
    )
    return [{"recipient": r["recipient"], **json.loads(r["payload"])} for r in rows]


async def test_customer_cancels_whole_and_per_line_before_the_capture(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    sims = fresh_sims
    await create_sale(sengine, pgc, record(sale_id, {"X": [("P1", 10)], "Y": [("P1", 10)]}))
    sims.supplier("P1", delay_ms=1000)  # each supplier call takes a while: the cancel lands in one
    held = await confirm_orders(sengine, sale_id, [[("X", 2), ("Y", 1)], [("X", 1), ("Y", 1)]])
    async with reconciler(ssettings, sengine):
        await until_flushed(pgc, list(held))
        by = await owners(pgc, list(held))
        part, whole = by["c0"], by["c1"]
        await step_running(pgc, part, "supplier.allocate")
        cut = {"lines": [{"sku": "X", "qty": 1}], "reason": "one is enough"}
        line = await api.post(f"/v1/orders/{part}/cancel", json=cut, headers=as_customer("c0"))
        assert line.status_code == 202, line.text
        assert line.json()["lines"] == [{"sku": "X", "hold_supplier": "P1", "qty": 1}]
        await step_running(pgc, whole, "supplier.allocate")

        # Someone else's order is unknown to this customer; nothing changes.
        before = await snapshot(pgc, whole)
        stranger = await api.post(f"/v1/orders/{whole}/cancel", json={}, headers=as_customer("c0"))
        problem(stranger, 404, "NOT_FOUND")
        assert await snapshot(pgc, whole) == before

        mine = {**as_customer("c1"), "Idempotency-Key": "cancel-1"}
        first = await api.post(f"/v1/orders/{whole}/cancel", headers=mine)
        assert first.status_code == 202, first.text
        doc = first.json()
        assert doc["kind"] == "cancel" and doc["status"] == "pending"
        assert doc["amount_minor"] == X_PRICE + Y_PRICE
        again = await api.post(f"/v1/orders/{whole}/cancel", headers=mine)
        assert again.status_code == 202 and again.json()["change_id"] == doc["change_id"]
        assert again.headers["idempotent-replayed"] == "true"
        part_of_it = await api.post(
            f"/v1/orders/{whole}/cancel", json={"lines": [{"sku": "X", "qty": 1}]}, headers=mine
        )
        problem(part_of_it, 422, "IDEMPOTENCY_CONFLICT")  # the key, for another cancel

        cancelled = await settled(pgc, whole, "CANCELLED")
        fulfilled = await settled(pgc, part, "FULFILLED")
        stock = await available(sengine, sale_id)
        adjusts = await until_ledger(pgc, sale_id, "adjust", 1)
        await invariants_hold(sengine, pgc, sale_id)

    # The whole order: its lock cancelled after the allocation it waited for, the
    # authorisation voided, nothing captured, its units back on sale.
    pay = payment_of(sims, whole)
    assert (pay["status"], pay["captures"], pay["captured_minor"]) == ("voided", 0, 0)
    assert cancelled["captured_minor"] == 0 and cancelled["refunded_minor"] == 0
    assert [a["status"] for a in allocations_of(sims, whole)] == ["cancelled", "cancelled"]
    # Per line: X locked again for the one unit left; the capture charged what is left.
    pay = payment_of(sims, part)
    assert pay["amount_minor"] == 2 * X_PRICE + Y_PRICE
    assert (pay["captures"], pay["captured_minor"]) == (1, X_PRICE + Y_PRICE)
    assert fulfilled["captured_minor"] == X_PRICE + Y_PRICE
    locks = [(a["sku"], a["qty"], a["status"]) for a in allocations_of(sims, part)]
    assert sorted(locks) == [("X", 1, "confirmed"), ("X", 2, "cancelled"), ("Y", 1, "confirmed")]
    lines = await pgc.fetch(
        "SELECT sku, qty, cancelled_qty, status FROM order_allocations WHERE order_id = $1 "
        "ORDER BY sku",
        part,
    )
    assert [tuple(r) for r in lines] == [("X", 2, 1, "allocated"), ("Y", 1, 0, "allocated")]
    # Stock: 10 each, less what the orders bought, plus what came back (1 X, and the whole order).
    assert stock == {("X", "P1"): 10 - 3 + 1 + 1, ("Y", "P1"): 10 - 2 + 1}
    assert [(r["sku"], r["qty"]) for r in adjusts] == [("X", 1)]
    assert f"order {part} change {line.json()['change_id']}" in adjusts[0]["reason"]
    changes = await pgc.fetch("SELECT order_id, status FROM order_changes ORDER BY id")
    assert {(r["order_id"], r["status"]) for r in changes} >= {
        (whole, "applied"),
        (part, "applied"),
    }
    for order_id in (whole, part):
        told = await notices(pgc, order_id, "order.cancelled")
        assert [n["recipient"] for n in told] == ["customer", "retailer"]
    statuses = await pgc.fetch(
        "SELECT to_status FROM order_transitions WHERE order_id = $1 AND from_status <> to_status "
        "ORDER BY id",
        whole,
    )
    assert [r["to_status"] for r in statuses][-1] == "CANCELLED"
    assert "CONFIRMED" not in [r["to_status"] for r in statuses]

    # Too late now: captured, or final.
    captured = await api.post(f"/v1/orders/{part}/cancel", headers=as_customer("c0"))
    problem(captured, 409, "ORDER_CAPTURED")
    final = await api.post(
        f"/v1/orders/{whole}/cancel", headers={**as_customer("c1"), "Idempotency-Key": "later"}
    )
    problem(final, 409, "ORDER_FINAL")
    assert (await order_row(pgc, part))["status"] == "FULFILLED"


async def _parked_partially_fulfilled(
    sims: Sims, sengine: Engine, pgc: asyncpg.Connection, api: httpx.AsyncClient, sale_id: str
) -> str:
    """An order of X (nobody can ship it: the retailer chose to wait) and 2 Y (captured and
    locked firm): PARTIALLY_FULFILLED until the promised day."""
    await create_sale(sengine, pgc, record(sale_id, {"X": [("P1", 10)], "Y": [("P1", 10)]}))
    sims.supplier("P1", stock={"X": 0, "Y": 100})
    held = await confirm_orders(sengine, sale_id, [[("X", 1), ("Y", 2)]])
    (order_id,) = held
    await settled(pgc, order_id, "BACKORDERED")
    backorder = await pgc.fetchval("SELECT id FROM backorders WHERE order_id = $1", order_id)
    later = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=3)).isoformat()
    decided = await api.post(
        f"/v1/admin/backorders/{backorder}/decision",
        json={"decision": "wait", "promised_date": later},
        headers=ADMIN,
    )
    assert decided.status_code == 202, decided.text
    await settled(pgc, order_id, "PARTIALLY_FULFILLED")
    return order_id


async def test_operator_cancels_after_the_capture_refund_each_part(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    sims = fresh_sims
    async with reconciler(ssettings, sengine):
        order_id = await _parked_partially_fulfilled(sims, sengine, pgc, api, sale_id)
        captured = X_PRICE + 2 * Y_PRICE  # the waiting line is charged too
        assert payment_of(sims, order_id)["captured_minor"] == captured
        before = await snapshot(pgc, order_id)
        refused = await api.post(f"/v1/orders/{order_id}/cancel", headers=as_customer("c0"))
        problem(refused, 409, "ORDER_CAPTURED")
        assert await snapshot(pgc, order_id) == before

        # Y counts as shipped (P1 does not report shipments, so its confirmed line is on its
        # way, as PARTIALLY_FULFILLED says): neither a unit of it nor the whole order is
        # cancelled; X, the line still waiting, is.
        url = f"/v1/admin/orders/{order_id}/cancel"
        one_y = {"lines": [{"sku": "Y", "qty": 1}], "reason": "customer called"}
        problem(await api.post(url, json=one_y, headers=ADMIN), 409, "LINE_SHIPPED")
        whole = {"reason": "give up"}
        problem(await api.post(url, json=whole, headers=ADMIN), 409, "LINE_SHIPPED")
        assert await snapshot(pgc, order_id) == before

        one_x = {"lines": [{"sku": "X", "qty": 1}], "reason": "customer called"}
        one = await api.post(url, json=one_x, headers=ADMIN)
        assert one.status_code == 202, one.text
        first_id = one.json()["change_id"]
        # Nothing left waits for the promised day: every unit left counts as shipped.
        row = await settled(pgc, order_id, "FULFILLED")
        assert row["refunded_minor"] == X_PRICE

        rest = await api.post(
            f"/v1/admin/orders/{order_id}/refunds",
            json={"amount_minor": 2 * Y_PRICE, "reason": "goodwill"},
            headers={**ADMIN, "Idempotency-Key": "rest"},
        )
        assert rest.status_code == 202, rest.text
        second_id = rest.json()["change_id"]
        row = await settled(pgc, order_id, "REFUNDED")  # no unit is left to ship
        stock = await available(sengine, sale_id)
        await invariants_hold(sengine, pgc, sale_id)

    assert row["refunded_minor"] == row["captured_minor"] == captured
    pay = payment_of(sims, order_id)
    assert pay["refunded_minor"] == captured
    assert [r["amount_minor"] for r in pay["refunds"]] == [X_PRICE, 2 * Y_PRICE]
    assert [r["key"].rsplit(":", 1)[1] for r in pay["refunds"]] == [
        str(first_id),
        str(second_id),
    ]
    # Y's lock stands (its units are with the customer); X (nobody ships it: P1's refusal took
    # the rest of X off the sale) is written off, not offered again; Y is not given back.
    locks = [(a["sku"], a["qty"], a["status"]) for a in allocations_of(sims, order_id)]
    assert locks == [("Y", 2, "confirmed")]
    assert stock == {("X", "P1"): 0, ("Y", "P1"): 10 - 2}
    assert await pgc.fetchval("SELECT status FROM backorders WHERE order_id = $1", order_id) == (
        "cancelled"
    )
    again = await api.post(f"/v1/admin/orders/{order_id}/cancel", headers=ADMIN)
    problem(again, 409, "ORDER_FINAL")


async def test_cancel_refusals_leave_the_order_unchanged(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    sims = fresh_sims
    async with reconciler(ssettings, sengine):
        order_id = await _parked_partially_fulfilled(sims, sengine, pgc, api, sale_id)
        before = await snapshot(pgc, order_id)
        url = f"/v1/admin/orders/{order_id}/cancel"
        raw = {**ADMIN, "content-type": "application/json"}
        problem(await api.post(url, content=b"{nope", headers=raw), 400, "MALFORMED_JSON")
        problem(await api.post(url, content=b"[]", headers=raw), 422, "INVALID_REQUEST")
        bad_bodies: list[Any] = [
            {"lines": []},
            {"lines": "Y"},
            {"lines": [{"sku": "Y"}]},
            {"lines": [{"sku": "Y", "qty": 0}]},
            {"lines": [{"sku": "Y", "qty": "1"}]},
            {"lines": [{"sku": "Y", "qty": True}]},
            {"lines": [{"sku": "Y", "qty": 1}, {"sku": "Y", "qty": 1}]},
            {"lines": [{"sku": "../Y", "qty": 1}]},
            {"whole": True},
            {"reason": 5},
        ]
        for body in bad_bodies:
            problem(await api.post(url, json=body, headers=ADMIN), 422, "INVALID_REQUEST")
        one_z = {"lines": [{"sku": "Z", "qty": 1}]}
        problem(await api.post(url, json=one_z, headers=ADMIN), 422, "UNKNOWN_LINE")
        three_y = {"lines": [{"sku": "Y", "qty": 3}]}
        problem(await api.post(url, json=three_y, headers=ADMIN), 409, "LINE_QTY_EXCEEDED")
        problem(await api.post(url, json={}), 401, "UNAUTHORIZED")
        problem(
            await api.post(url, json={}, headers={**ADMIN, "Idempotency-Key": "a b"}),
            422,
            "INVALID_REQUEST",
        )
        problem(await api.post("/v1/admin/orders/nope/cancel", headers=ADMIN), 404, "NOT_FOUND")
        problem(
            await api.post("/v1/admin/orders/n%20o/cancel", headers=ADMIN), 422, "INVALID_REQUEST"
        )
        problem(
            await api.post("/v1/orders/nope/cancel", headers=as_customer("c0")), 404, "NOT_FOUND"
        )
        assert await snapshot(pgc, order_id) == before
        # A key that recorded a refund is not a cancel's.
        refund = await api.post(
            f"/v1/admin/orders/{order_id}/refunds",
            json={"amount_minor": 1, "reason": "goodwill"},
            headers={**ADMIN, "Idempotency-Key": "k-1"},
        )
        assert refund.status_code == 202, refund.text
        await settled(pgc, order_id, "PARTIALLY_FULFILLED")
        before = await snapshot(pgc, order_id)
        reused = await api.post(url, headers={**ADMIN, "Idempotency-Key": "k-1"})
        problem(reused, 422, "IDEMPOTENCY_CONFLICT")
        assert await snapshot(pgc, order_id) == before
        await invariants_hold(sengine, pgc, sale_id)
    assert [r["amount_minor"] for r in payment_of(sims, order_id)["refunds"]] == [1]


async def test_an_adjustment_with_a_once_key_is_made_once(sengine: Engine, sale_id: str) -> None:
    """What makes a cancelled line's units come back once when order.change runs again."""
    await sengine.load_sale(record(sale_id, {"X": [("P1", 10)]}).to_config(1))
    first = await sengine.adjust(sale_id, "X", "P1", 3, "cancel", once="o1:7:X:P1")
    again = await sengine.adjust(sale_id, "X", "P1", 3, "cancel", once="o1:7:X:P1")
    other = await sengine.adjust(sale_id, "X", "P1", 2, "cancel", once="o1:8:X:P1")
    assert (first.applied, first.replay) == (3, False)
    assert (again.applied, again.replay, again.available) == (3, True, 13)
    assert (other.applied, other.replay, other.available) == (2, False, 15)
    assert await available(sengine, sale_id) == {("X", "P1"): 15}


async def test_shipped_units_are_never_cancelled_and_the_rest_completes_the_order(
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
    await create_sale(sengine, pgc, record(sale_id, {"A": [("R1", 100)]}))
    await reporting_supplier(api, "R1")  # its lines wait for its shipments
    sims.supplier("R1", shipment_secret=SECRET, carrier="DHL")
    (order_id,) = await confirm_orders(sengine, sale_id, [[("A", 3)]])
    async with reconciler(ssettings, sengine):
        await settled(pgc, order_id, "CONFIRMED")
        sent = ship(sims, "R1", order_id, {"A": 2}, shipment_id="box")
        assert [s["status"] for s in sent] == [201], sent
        await settled(pgc, order_id, "PARTIALLY_FULFILLED")
        url = f"/v1/admin/orders/{order_id}/cancel"
        before = await snapshot(pgc, order_id)
        problem(await api.post(url, headers=ADMIN), 409, "LINE_SHIPPED")
        two = {"lines": [{"sku": "A", "qty": 2}]}
        problem(await api.post(url, json=two, headers=ADMIN), 409, "LINE_SHIPPED")
        assert await snapshot(pgc, order_id) == before
        one = await api.post(url, json={"lines": [{"sku": "A", "qty": 1}]}, headers=ADMIN)
        assert one.status_code == 202, one.text
        row = await settled(pgc, order_id, "FULFILLED")  # what is left has all shipped
        stock = await available(sengine, sale_id)
        await invariants_hold(sengine, pgc, sale_id)

    assert (row["captured_minor"], row["refunded_minor"]) == (3 * X_PRICE, X_PRICE)
    key = f"{order_id}:order.change:1:{one.json()['change_id']}"
    assert payment_of(sims, order_id)["refunds"] == [{"key": key, "amount_minor": X_PRICE}]
    # The lock is cancelled (freeing the unshipped unit) and not taken again: the 2 units left
    # have shipped, the supplier holds nothing more for the order.
    locks = [(a["qty"], a["status"]) for a in allocations_of(sims, order_id)]
    assert locks == [(3, "cancelled")]
    assert stock == {("A", "R1"): 100 - 3 + 1}
    line = await pgc.fetchrow(
        "SELECT qty, cancelled_qty, shipped_qty FROM order_allocations WHERE order_id = $1",
        order_id,
    )
    assert tuple(line) == (3, 1, 2)


async def test_a_cancel_while_the_capture_runs_is_refunded_after_it(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    """The customer asks before the money is taken, but the capture is already in flight: it is
    not lost, nor overtaken; the change that follows it pays everything back."""
    sims = fresh_sims
    await create_sale(sengine, pgc, record(sale_id, {"X": [("P1", 10)]}))
    (order_id,) = await confirm_orders(sengine, sale_id, [[("X", 2)]])
    sims.payment(delay_ms=700)  # slow, under the adapter timeout (1 s): the capture takes a while
    async with reconciler(ssettings, sengine):
        await step_running(pgc, order_id, "payment.capture")
        reply = await api.post(f"/v1/orders/{order_id}/cancel", headers=as_customer("c0"))
        assert reply.status_code == 202, reply.text
        row = await settled(pgc, order_id, "REFUNDED")
        stock = await available(sengine, sale_id)
        await invariants_hold(sengine, pgc, sale_id)

    pay = payment_of(sims, order_id)
    assert (pay["captures"], pay["captured_minor"], pay["refunded_minor"]) == (1, 2000, 2000)
    assert [r["amount_minor"] for r in pay["refunds"]] == [2 * X_PRICE]
    assert row["captured_minor"] == row["refunded_minor"] == 2 * X_PRICE
    assert [a["status"] for a in allocations_of(sims, order_id)] == ["cancelled"]
    assert stock == {("X", "P1"): 10}
    moved = await pgc.fetch(
        "SELECT to_status FROM order_transitions WHERE order_id = $1 AND from_status <> to_status "
        "ORDER BY id",
        order_id,
    )
    assert [r["to_status"] for r in moved][-2:] == ["CONFIRMED", "REFUNDED"]
