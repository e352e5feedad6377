"""A line sent back to supplier.allocate after part of it shipped: the
supplier is asked for its unshipped units only, its backorder is for those; the retailer's
"cancel" of that backorder cancels and pays back those units only, never the shipped ones, and
puts none back on sale. A backorder "cancel" on an order refunded in full ends it REFUNDED
(nothing more paid back, the captured authorisation never voided). Through the gateway, the
saga and the simulators. A return while a step of the order is running is refused (409
ORDER_BUSY), so that step's compensation cannot give the restocked units back again. A whole
cancel after a line refund books its money on the units still paid for."""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx

from flashsale.engine import Engine, Settings
from tests.gateway_helpers import ADMIN
from tests.order_change_support import (
    available,
    invariants_hold,
    ledger,
    payment_of,
    problem,
    settled,
)
from tests.reconciler_support import create_sale, record
from tests.saga_support import Sims, confirm_orders, reconciler
from tests.shipment_support import SECRET, reporting_supplier, ship
from tests.test_cancel_vs_shipped import PRICE, _asked, _parked

pytest_plugins = ("tests.order_change_fixtures",)  # the simulators, a gateway, their database


async def _open_backorder(pgc: asyncpg.Connection, order_id: str) -> tuple[int, int]:
    row = await pgc.fetchrow(
        "SELECT id, qty FROM backorders WHERE order_id = $1 AND status = 'open'", order_id
    )
    assert row is not None
    return int(row["id"]), int(row["qty"])


async def _line(pgc: asyncpg.Connection, order_id: str) -> tuple[int, ...]:
    row = await pgc.fetchrow(
        "SELECT qty, cancelled_qty, shipped_qty, refunded_minor FROM order_allocations "
        "WHERE order_id = $1",
        order_id,
    )
    assert row is not None
    return tuple(row)


def _refuse_next(sims: Sims, n: int, stock: int) -> None:
    """R1 refuses its next `n` allocations (it keeps its shipment settings and `stock` A)."""
    sims.supplier("R1", shipment_secret=SECRET, carrier="DHL", stock={"A": stock}, refuse_next=n)


async def test_a_backorder_cancel_after_a_shipment_cancels_only_the_unshipped_units(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    sims = fresh_sims
    order_id = await _parked(sims, sengine, pgc, ssettings, api, sale_id, 4)
    sent = ship(sims, "R1", order_id, {"A": 1}, shipment_id=f"{order_id}-b1")
    assert [s["status"] for s in sent] == [201]
    url = f"/v1/admin/orders/{order_id}/cancel"
    one = await api.post(url, json={"lines": [{"sku": "A", "qty": 1}]}, headers=ADMIN)
    assert one.status_code == 202, one.text
    sent = ship(sims, "R1", order_id, {"A": 1}, shipment_id=f"{order_id}-b2")
    assert [s["status"] for s in sent] == [201]
    # 4 ordered, 1 cancelled, 2 shipped: 1 unit to lock again, refused beside the old lock, once
    # it is cancelled, and by supplier.allocate.
    _refuse_next(sims, 3, 96)
    async with reconciler(ssettings, sengine):
        await settled(pgc, order_id, "PARTIALLY_FULFILLED")
        backorder_id, qty = await _open_backorder(pgc, order_id)
        assert qty == 1  # the unshipped unit, not the line's 3 live ones
        decided = await api.post(
            f"/v1/admin/backorders/{backorder_id}/decision",
            json={"decision": "cancel"},
            headers=ADMIN,
        )
        assert decided.status_code == 202, decided.text
        row = await settled(pgc, order_id, "FULFILLED")  # the 2 shipped units are what is left
        stock = await available(sengine, sale_id)
        await invariants_hold(sengine, pgc, sale_id)
        adjusts = await ledger(pgc, sale_id, "adjust")
        compensations = await ledger(pgc, sale_id, "compensate")

    assert _asked(sims) == [(4, "LOCKED"), (1, "REFUSED"), (1, "REFUSED"), (1, "REFUSED")]
    assert (row["captured_minor"], row["refunded_minor"]) == (4 * PRICE, 2 * PRICE)
    change_id = one.json()["change_id"]
    refunds = payment_of(sims, order_id)["refunds"]
    assert refunds == [
        {"key": f"{order_id}:order.change:1:{change_id}", "amount_minor": PRICE},
        {"key": f"{order_id}:backorder.apply:1:refund:{backorder_id}", "amount_minor": PRICE},
    ]
    assert await _line(pgc, order_id) == (4, 2, 2, 2 * PRICE)
    # The change's unit back on sale; the backordered one written off with the hold, nothing
    # given back by a compensation.
    assert stock == {("A", "R1"): 100 - 4 + 1}
    assert [(r["sku"], r["supplier_id"], r["qty"]) for r in adjusts] == [("A", "R1", 1)]
    assert compensations == []


async def test_a_backorder_cancel_on_a_fully_refunded_order_ends_it_refunded(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    sims = fresh_sims
    order_id = await _parked(sims, sengine, pgc, ssettings, api, sale_id, 4)
    _refuse_next(sims, 3, 96)
    async with reconciler(ssettings, sengine):
        url = f"/v1/admin/orders/{order_id}/cancel"
        one = await api.post(url, json={"lines": [{"sku": "A", "qty": 1}]}, headers=ADMIN)
        assert one.status_code == 202, one.text
        await settled(pgc, order_id, "BACKORDERED")
        backorder_id, qty = await _open_backorder(pgc, order_id)
        assert qty == 3
        refund = await api.post(
            f"/v1/admin/orders/{order_id}/refunds",
            json={"amount_minor": 3 * PRICE, "reason": "late"},
            headers={**ADMIN, "Idempotency-Key": "rest"},
        )
        assert refund.status_code == 202, refund.text
        row = await settled(pgc, order_id, "BACKORDERED")
        assert (row["captured_minor"], row["refunded_minor"]) == (4 * PRICE, 4 * PRICE)
        decided = await api.post(
            f"/v1/admin/backorders/{backorder_id}/decision",
            json={"decision": "cancel"},
            headers=ADMIN,
        )
        assert decided.status_code == 202, decided.text
        row = await settled(pgc, order_id, "REFUNDED")
        stock = await available(sengine, sale_id)
        await invariants_hold(sengine, pgc, sale_id)
        compensations = await ledger(pgc, sale_id, "compensate")
        adjusts = await ledger(pgc, sale_id, "adjust")

    assert row["dead_step"] is None
    assert (row["captured_minor"], row["refunded_minor"]) == (4 * PRICE, 4 * PRICE)
    payment = payment_of(sims, order_id)
    assert [r["amount_minor"] for r in payment["refunds"]] == [PRICE, 3 * PRICE]
    assert payment["status"] == "refunded"  # never voided
    # The change's unit went back on sale once; the compensation undoes the hold and writes off
    # the 4 units again (the cancelled one given back already, the 3 nobody could ship).
    assert stock == {("A", "R1"): 100 - 4 + 1}
    assert [(r["sku"], r["qty"]) for r in compensations] == [("A", -4)]
    assert [(r["sku"], r["qty"]) for r in adjusts] == [("A", 1), ("A", -4)]


async def test_a_return_while_a_step_runs_is_refused_busy(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    sims = fresh_sims
    order_id = await _parked(sims, sengine, pgc, ssettings, api, sale_id, 2)
    sent = ship(sims, "R1", order_id, {"A": 1}, shipment_id=f"{order_id}-b1")
    assert [s["status"] for s in sent] == [201]
    url = f"/v1/admin/orders/{order_id}/returns"
    body = {"lines": [{"sku": "A", "qty": 1, "condition": "restockable"}], "reason": "too big"}
    # A step of the order claimed (as a reconciler worker does) and still running.
    await pgc.execute(
        "UPDATE orders SET claimed_until = now() + interval '1 minute' WHERE order_id = $1",
        order_id,
    )
    before = await available(sengine, sale_id)
    busy = await api.post(url, json=body, headers={**ADMIN, "Idempotency-Key": "r1"})
    problem(busy, 409, "ORDER_BUSY")
    assert busy.headers["Retry-After"] == "1"
    assert await pgc.fetchval("SELECT count(*) FROM returns WHERE order_id = $1", order_id) == 0
    assert await available(sengine, sale_id) == before
    assert payment_of(sims, order_id)["refunds"] == []
    # The step done: the same return goes through, restocked once, refunded once.
    await pgc.execute("UPDATE orders SET claimed_until = NULL WHERE order_id = $1", order_id)
    done = await api.post(url, json=body, headers={**ADMIN, "Idempotency-Key": "r1"})
    assert done.status_code == 201, done.text
    async with reconciler(ssettings, sengine):
        await settled(pgc, order_id, "PARTIALLY_FULFILLED")
        await invariants_hold(sengine, pgc, sale_id)
        stock = await available(sengine, sale_id)
    assert stock == {("A", "R1"): before[("A", "R1")] + 1}
    assert [r["amount_minor"] for r in payment_of(sims, order_id)["refunds"]] == [PRICE]


async def test_a_whole_cancel_after_a_line_refund_books_the_money_on_the_paid_units(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    sims = fresh_sims
    await create_sale(sengine, pgc, record(sale_id, {"A": [("R1", 100)], "B": [("R1", 100)]}))
    await reporting_supplier(api, "R1")  # the order waits for shipments: it can be cancelled
    sims.supplier("R1", shipment_secret=SECRET, carrier="DHL", stock={"A": 100, "B": 100})
    (order_id,) = await confirm_orders(sengine, sale_id, [[("A", 2), ("B", 1)]])
    a_price, b_price = PRICE, PRICE + 100
    async with reconciler(ssettings, sengine):
        await settled(pgc, order_id, "CONFIRMED")
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
        row = await settled(pgc, order_id, "REFUNDED")
        stock = await available(sengine, sale_id)
        await invariants_hold(sengine, pgc, sale_id)
    assert row["refunded_minor"] == row["captured_minor"] == 2 * a_price + b_price
    refunds = [r["amount_minor"] for r in payment_of(sims, order_id)["refunds"]]
    assert refunds == [a_price, a_price + b_price]
    lines = await pgc.fetch(
        "SELECT sku, cancelled_qty, refunded_minor FROM order_allocations WHERE order_id = $1 "
        "ORDER BY sku",
        order_id,
    )
    # Each line's money back is what was paid for it, no more.
    assert [tuple(x) for x in lines] == [("A", 2, 2 * a_price), ("B", 1, b_price)]
    assert stock == {("A", "R1"): 100, ("B", "R1"): 100}
