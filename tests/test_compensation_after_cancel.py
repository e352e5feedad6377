"""Compensations after a partial cancel give every unit back once: a capture refused, the
retailer's "cancel" of a backorder and a declined authorisation put back only the units the
cancel did not give back already; a whole cancel with an authorisation that lapsed ends
CANCELLED instead of dead-lettering; cancelling the line an order waits for lets it finish now;
an operator's new promised date reaches a step that a pending change displaced. Through the
gateway, the saga and the simulators."""

from __future__ import annotations

import datetime as dt

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx

from flashsale.engine import Code, Engine, Settings
from flashsale.reconciler.saga.compensation import kept_out
from flashsale.store.saga.model import Line, Order
from tests.gateway_helpers import ADMIN, as_customer
from tests.order_change_support import invariants_hold, payment_of, settled, until_flushed
from tests.reconciler_support import create_sale, record
from tests.saga_support import Sims, confirm_orders, reconciler
from tests.shipment_support import flushing

pytest_plugins = ("tests.order_change_fixtures",)  # the simulators, a gateway, their database

X_PRICE, Y_PRICE = 1000, 1100  # record(): 1000 + 100 * the sku's position
ONE_X = {"lines": [{"sku": "X", "qty": 1}], "reason": "one is enough"}


def _line(sku: str, status: str, qty: int, **done: int) -> Line:
    return Line(sku, "P1", qty, 1000, status, "P1", 400, "a1", True, 0, None, [], **done)


def test_kept_out_counts_every_unit_given_back_already_or_unshippable() -> None:
    """What a whole compensation writes off, per line: units cancelled, live units of lines no
    supplier can ship, units shipped (a return restocked some), the parts the Redis tests cannot
    all reach."""
    lines = [
        _line("A", "allocated", 3, cancelled_qty=1),  # the cancel gave 1 back
        _line("B", "backordered", 4, cancelled_qty=1),  # 1 cancelled, 3 nobody ships
        _line("C", "waiting", 2),
        # 3 shipped (gone: never back on sale by a compensation), a return put 2 of them back
        _line("D", "allocated", 5, shipped_qty=3, restocked_qty=2),
        _line("E", "cancelled", 2, cancelled_qty=2),  # closed by order.change
        _line("F", "allocated", 2),  # nothing given back: all of it goes back on sale
    ]
    order = Order("o1", "s1", "c1", "BACKORDERED", 0, "", None, 0, 0, "x", 1, lines, [], {})
    assert kept_out(order) == (
        ("A", "P1", 1),
        ("B", "P1", 4),
        ("C", "P1", 2),
        ("D", "P1", 3),
        ("E", "P1", 2),
    )


async def counts(engine: Engine, sale_id: str) -> dict[tuple[str, str], tuple[int, int]]:
    """(sku, supplier) -> (available, sold) in Redis."""
    state = await engine.stock(sale_id)
    assert state is not None
    return {(k.sku, s.supplier): (s.available, s.sold) for k in state.skus for s in k.suppliers}


async def movements(pgc: asyncpg.Connection, sale_id: str) -> list[tuple[str, str, int]]:
    """The sale's ledger rows after the load: (kind, sku, qty), in order."""
    rows = await pgc.fetch(
        "SELECT kind, sku, qty FROM stock_movements WHERE sale_id = $1 AND kind <> 'load' "
        "ORDER BY id",
        sale_id,
    )
    return [(r["kind"], r["sku"], r["qty"]) for r in rows]


async def backordered_with_one_x_cancelled(
    sims: Sims, sengine: Engine, pgc: asyncpg.Connection, api: httpx.AsyncClient, sale_id: str
) -> tuple[str, int]:
    """2 X (P1 ships them) and 1 Y (nobody can): BACKORDERED; the customer cancels one X before
    the capture. (order id, the Y backorder's id); the caller runs the reconciler."""
    await create_sale(sengine, pgc, record(sale_id, {"X": [("P1", 10)], "Y": [("P1", 10)]}))
    sims.supplier("P1", stock={"X": 100, "Y": 0})
    (order_id,) = await confirm_orders(sengine, sale_id, [[("X", 2), ("Y", 1)]])
    await settled(pgc, order_id, "BACKORDERED")
    cut = await api.post(f"/v1/orders/{order_id}/cancel", json=ONE_X, headers=as_customer("c0"))
    assert cut.status_code == 202, cut.text
    await settled(pgc, order_id, "BACKORDERED")
    # The cancelled X is back on sale; P1's refusal of Y took Y's other units off the sale.
    assert await counts(sengine, sale_id) == {("X", "P1"): (9, 2), ("Y", "P1"): (0, 1)}
    backorder = await pgc.fetchval("SELECT id FROM backorders WHERE order_id = $1", order_id)
    return order_id, int(backorder)


async def test_a_refused_capture_after_a_partial_cancel_gives_each_unit_back_once(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    sims = fresh_sims
    later = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=3)).isoformat()
    async with reconciler(ssettings, sengine):
        order_id, backorder = await backordered_with_one_x_cancelled(
            sims, sengine, pgc, api, sale_id
        )
        sims.payment(expire_share=1.0)  # the capture finds the authorisation expired
        decided = await api.post(
            f"/v1/admin/backorders/{backorder}/decision",
            json={"decision": "wait", "promised_date": later},
            headers=ADMIN,
        )
        assert decided.status_code == 202, decided.text
        await settled(pgc, order_id, "PAYMENT_FAILED")
        await invariants_hold(sengine, pgc, sale_id)
        stock = await counts(sengine, sale_id)
        ledger = await movements(pgc, sale_id)

    # X: 10 loaded, none sold, none offered twice (the cancel's unit is not given back again);
    # Y, which nobody can ship, is written off.
    assert stock == {("X", "P1"): (10, 0), ("Y", "P1"): (0, 0)}
    assert ledger == [
        ("confirm", "X", 2),
        ("confirm", "Y", 1),
        ("adjust", "Y", -9),
        ("adjust", "X", 1),
        ("compensate", "X", -2),
        ("compensate", "Y", -1),
        ("adjust", "X", -1),
        ("adjust", "Y", -1),
    ]
    pay = payment_of(sims, order_id)
    assert (pay["status"], pay["captures"], pay["captured_minor"]) == ("expired", 0, 0)


async def test_the_retailers_cancel_after_a_partial_cancel_gives_each_unit_back_once(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    sims = fresh_sims
    async with reconciler(ssettings, sengine):
        order_id, backorder = await backordered_with_one_x_cancelled(
            sims, sengine, pgc, api, sale_id
        )
        decided = await api.post(
            f"/v1/admin/backorders/{backorder}/decision",
            json={"decision": "cancel"},
            headers=ADMIN,
        )
        assert decided.status_code == 202, decided.text
        await settled(pgc, order_id, "CANCELLED")
        await invariants_hold(sengine, pgc, sale_id)
        stock = await counts(sengine, sale_id)
        ledger = await movements(pgc, sale_id)

    assert stock == {("X", "P1"): (10, 0), ("Y", "P1"): (0, 0)}
    assert ledger == [
        ("confirm", "X", 2),
        ("confirm", "Y", 1),
        ("adjust", "Y", -9),
        ("adjust", "X", 1),
        ("compensate", "X", -2),
        ("compensate", "Y", -1),
        ("adjust", "X", -1),
        ("adjust", "Y", -1),
    ]
    pay = payment_of(sims, order_id)
    assert (pay["status"], pay["captures"]) == ("voided", 0)
    p1 = [a for a in sims.allocations() if a["key"].startswith(order_id + ":")]
    # The partial cancel locked the X left again; the retailer's cancel freed that lock too.
    assert sorted((a["sku"], a["qty"], a["status"]) for a in p1) == [
        ("X", 1, "cancelled"),
        ("X", 2, "cancelled"),
    ]


async def test_a_declined_authorisation_after_a_cancel_while_pending_gives_each_unit_back_once(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    sims = fresh_sims
    await create_sale(sengine, pgc, record(sale_id, {"X": [("P1", 10)]}))
    (order_id,) = await confirm_orders(sengine, sale_id, [[("X", 2)]])
    async with flushing(ssettings, sengine):  # the order reaches PostgreSQL; no step runs
        await until_flushed(pgc, [order_id])
        cut = await api.post(f"/v1/orders/{order_id}/cancel", json=ONE_X, headers=as_customer("c0"))
        assert cut.status_code == 202, cut.text
    sims.payment(decline_share=1.0)
    async with reconciler(ssettings, sengine):
        await settled(pgc, order_id, "PAYMENT_FAILED")
        await invariants_hold(sengine, pgc, sale_id)
        stock = await counts(sengine, sale_id)
        ledger = await movements(pgc, sale_id)
        change = await pgc.fetchval(
            "SELECT status FROM order_changes WHERE order_id = $1", order_id
        )

    assert change == "applied"  # the cancel ran first, the authorisation after it
    assert stock == {("X", "P1"): (10, 0)}
    assert ledger == [
        ("confirm", "X", 2),
        ("adjust", "X", 1),
        ("compensate", "X", -2),
        ("adjust", "X", -1),
    ]
    assert payment_of(sims, order_id)["status"] == "declined"


async def test_a_whole_cancel_with_a_lapsed_authorisation_ends_cancelled(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    """Nothing captured, the authorisation expired at the provider: the void is refused, and
    that is recorded, not retried into a dead letter."""
    sims = fresh_sims
    async with reconciler(ssettings, sengine):
        order_id, _ = await backordered_with_one_x_cancelled(sims, sengine, pgc, api, sale_id)
        auth = payment_of(sims, order_id)["id"]
        async with httpx.AsyncClient(base_url=sims.urls["payment"]) as provider:
            lapsed = await provider.post(f"/_sim/authorizations/{auth}/expire")
        assert lapsed.json()["status"] == "expired", lapsed.text
        whole = await api.post(f"/v1/orders/{order_id}/cancel", json={}, headers=as_customer("c0"))
        assert whole.status_code == 202, whole.text
        row = await settled(pgc, order_id, "CANCELLED")
        await invariants_hold(sengine, pgc, sale_id)
        stock = await counts(sengine, sale_id)
        voided = await pgc.fetchval(
            "SELECT outcome FROM saga_steps WHERE order_id = $1 AND step = 'payment.void'",
            order_id,
        )

    assert row["dead_step"] is None
    assert voided == "not voided: NOT_VOIDABLE expired"
    assert stock == {("X", "P1"): (10, 0), ("Y", "P1"): (0, 0)}
    assert payment_of(sims, order_id)["status"] == "expired"


async def test_cancelling_the_waiting_line_lets_the_order_finish_now(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    """PARTIALLY_FULFILLED, parked until Y's promised day; the operator cancels Y: nothing waits
    for that day any more, the order is FULFILLED now (P1 reports no shipments)."""
    sims = fresh_sims
    later = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=3)).isoformat()
    await create_sale(sengine, pgc, record(sale_id, {"X": [("P1", 10)], "Y": [("P1", 10)]}))
    sims.supplier("P1", stock={"X": 100, "Y": 0})
    (order_id,) = await confirm_orders(sengine, sale_id, [[("X", 2), ("Y", 1)]])
    async with reconciler(ssettings, sengine):
        await settled(pgc, order_id, "BACKORDERED")
        backorder = await pgc.fetchval("SELECT id FROM backorders WHERE order_id = $1", order_id)
        decided = await api.post(
            f"/v1/admin/backorders/{backorder}/decision",
            json={"decision": "wait", "promised_date": later},
            headers=ADMIN,
        )
        assert decided.status_code == 202, decided.text
        parked = await settled(pgc, order_id, "PARTIALLY_FULFILLED")
        assert parked["next_step"] == "supplier.allocate"
        cut = await api.post(
            f"/v1/admin/orders/{order_id}/cancel",
            json={"lines": [{"sku": "Y", "qty": 1}], "reason": "customer called"},
            headers=ADMIN,
        )
        assert cut.status_code == 202, cut.text
        row = await settled(pgc, order_id, "FULFILLED")
        await invariants_hold(sengine, pgc, sale_id)

    assert row["next_step"] is None  # nothing comes back on the promised day
    assert (row["captured_minor"], row["refunded_minor"]) == (2 * X_PRICE + Y_PRICE, Y_PRICE)


async def test_a_new_promised_date_reaches_the_step_a_pending_change_displaced(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    sims = fresh_sims
    today = dt.datetime.now(dt.UTC).date()
    first, moved = today + dt.timedelta(days=3), today + dt.timedelta(days=5)
    await create_sale(sengine, pgc, record(sale_id, {"X": [("P1", 10)], "Y": [("P1", 10)]}))
    sims.supplier("P1", stock={"X": 100, "Y": 0})
    (order_id,) = await confirm_orders(sengine, sale_id, [[("X", 2), ("Y", 1)]])
    async with reconciler(ssettings, sengine):
        await settled(pgc, order_id, "BACKORDERED")
        backorder = await pgc.fetchval("SELECT id FROM backorders WHERE order_id = $1", order_id)
        decided = await api.post(
            f"/v1/admin/backorders/{backorder}/decision",
            json={"decision": "wait", "promised_date": first.isoformat()},
            headers=ADMIN,
        )
        assert decided.status_code == 202, decided.text
        await settled(pgc, order_id, "PARTIALLY_FULFILLED")
    # With no saga running, a refund displaces the promised day's step; the operator moves it.
    refund = await api.post(
        f"/v1/admin/orders/{order_id}/refunds",
        json={"amount_minor": 100, "reason": "goodwill"},
        headers={**ADMIN, "Idempotency-Key": "goodwill-1"},
    )
    assert refund.status_code == 202, refund.text
    row = await pgc.fetchrow("SELECT * FROM orders WHERE order_id = $1", order_id)
    assert (row["next_step"], row["paused_step"]) == ("order.change", "supplier.allocate")
    path = f"/v1/admin/backorders/{backorder}/promised-date"
    reply = await api.post(
        path, json={"promised_date": moved.isoformat(), "reason": "late truck"}, headers=ADMIN
    )
    assert reply.status_code == 200, reply.text
    midnight = dt.datetime.combine(moved, dt.time(), dt.UTC)
    row = await pgc.fetchrow("SELECT * FROM orders WHERE order_id = $1", order_id)
    assert (row["next_step"], row["paused_due_at"]) == ("order.change", midnight)
    async with reconciler(ssettings, sengine):
        row = await settled(pgc, order_id, "PARTIALLY_FULFILLED")
    assert (row["next_step"], row["step_due_at"], row["refunded_minor"]) == (
        "supplier.allocate",
        midnight,
        100,
    )


async def test_a_partial_cancel_on_a_closed_sale_puts_nothing_back(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    """The sale closed before the cancel ran: the unit is not offered on a sale that is over,
    and the change is applied (recorded as not returned), not retried into a dead letter."""
    sims = fresh_sims
    await create_sale(sengine, pgc, record(sale_id, {"X": [("P1", 10)], "Y": [("P1", 10)]}))
    sims.supplier("P1", stock={"X": 100, "Y": 0})
    (order_id,) = await confirm_orders(sengine, sale_id, [[("X", 2), ("Y", 1)]])
    async with reconciler(ssettings, sengine):
        await settled(pgc, order_id, "BACKORDERED")
        closed, _ = await sengine.set_status(sale_id, "closed")
        assert closed is Code.OK
        cut = await api.post(f"/v1/admin/orders/{order_id}/cancel", json=ONE_X, headers=ADMIN)
        assert cut.status_code == 202, cut.text
        row = await settled(pgc, order_id, "BACKORDERED")
        await invariants_hold(sengine, pgc, sale_id)
        stock = await counts(sengine, sale_id)
        change = await pgc.fetchrow(
            "SELECT status, outcome FROM order_changes WHERE order_id = $1", order_id
        )

    assert row["dead_step"] is None
    assert change["status"] == "applied"
    assert "cancelled 1 x X" in change["outcome"]
    history = await pgc.fetchval(
        "SELECT outcome FROM saga_steps WHERE order_id = $1 AND step = 'stock.release'", order_id
    )
    assert history == f"change {cut.json()['change_id']}: sale closed: units not returned"
    assert stock == {("X", "P1"): (8, 2), ("Y", "P1"): (0, 1)}
