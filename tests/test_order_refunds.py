"""Refunds through the gateway, paid back by the saga at the payment simulator: partial amounts and
lines until REFUNDED, a replayed key paid once, never above what was captured (also when twenty
operators ask at once), and refusals that change nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx

from flashsale.engine import Engine, Settings
from tests.gateway_helpers import ADMIN
from tests.order_change_support import (
    invariants_hold,
    payment_of,
    problem,
    settled,
    snapshot,
)
from tests.reconciler_support import create_sale, record
from tests.saga_support import Sims, confirm_orders, reconciler

pytest_plugins = ("tests.order_change_fixtures",)  # the simulators, a gateway, their database

X_PRICE = 1000  # record(): the first sku's price


def refund(api: httpx.AsyncClient, order_id: str, key: str | None, body: dict[str, Any]) -> Any:
    headers = {**ADMIN, **({"Idempotency-Key": key} if key else {})}
    return api.post(f"/v1/admin/orders/{order_id}/refunds", json=body, headers=headers)


async def fulfilled_orders(
    sengine: Engine, pgc: asyncpg.Connection, sale_id: str, carts: list[list[tuple[str, int]]]
) -> list[str]:
    await create_sale(sengine, pgc, record(sale_id, {"X": [("P1", 100)]}))
    held = await confirm_orders(sengine, sale_id, carts)
    for order_id in held:
        await settled(pgc, order_id, "FULFILLED")
    return sorted(held)


async def test_partial_refunds_then_the_rest_end_refunded(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    sims = fresh_sims
    async with reconciler(ssettings, sengine):
        (order_id,) = await fulfilled_orders(sengine, pgc, sale_id, [[("X", 2)]])
        captured = 2 * X_PRICE
        first = await refund(api, order_id, "r-1", {"amount_minor": 300, "reason": "late"})
        assert first.status_code == 202, first.text
        row = await settled(pgc, order_id, "FULFILLED")
        assert row["refunded_minor"] == 300
        # The same key again: the first record, paid once.
        again = await refund(api, order_id, "r-1", {"amount_minor": 300, "reason": "late"})
        assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
        assert again.json()["change_id"] == first.json()["change_id"]
        assert again.json()["status"] == "applied"
        other = await refund(api, order_id, "r-1", {"amount_minor": 301, "reason": "late"})
        problem(other, 422, "IDEMPOTENCY_CONFLICT")  # the key, for another refund

        line = await refund(
            api, order_id, "r-2", {"lines": [{"sku": "X", "qty": 1}], "reason": "broken"}
        )
        assert line.status_code == 202, line.text
        assert line.json()["amount_minor"] == X_PRICE
        row = await settled(pgc, order_id, "FULFILLED")
        assert row["refunded_minor"] == 300 + X_PRICE

        before = await snapshot(pgc, order_id)
        over = await refund(api, order_id, "r-3", {"amount_minor": 701, "reason": "too much"})
        problem(over, 409, "REFUND_EXCEEDS_CAPTURED")
        two = {"lines": [{"sku": "X", "qty": 2}], "reason": "both"}
        problem(await refund(api, order_id, "r-4", two), 409, "LINE_QTY_EXCEEDED")
        assert await snapshot(pgc, order_id) == before

        rest = await refund(api, order_id, "r-3", {"amount_minor": 700, "reason": "the rest"})
        assert rest.status_code == 202, rest.text
        row = await settled(pgc, order_id, "REFUNDED")
        problem(
            await refund(api, order_id, "r-5", {"amount_minor": 1, "reason": "x"}),
            409,
            "REFUND_EXCEEDS_CAPTURED",
        )
        listed = await api.get(f"/v1/admin/orders/{order_id}/changes", headers=ADMIN)
        await invariants_hold(sengine, pgc, sale_id)

    assert row["captured_minor"] == row["refunded_minor"] == captured
    ids = [first.json()["change_id"], line.json()["change_id"], rest.json()["change_id"]]
    pay = payment_of(sims, order_id)
    assert pay["refunded_minor"] == captured and pay["captures"] == 1
    assert pay["refunds"] == [
        {"key": f"{order_id}:order.change:{n}:{change}", "amount_minor": amount}
        for n, (change, amount) in enumerate(zip(ids, [300, X_PRICE, 700], strict=True), 1)
    ]
    lines = await pgc.fetchrow(
        "SELECT refunded_qty, refunded_minor, cancelled_qty FROM order_allocations "
        "WHERE order_id = $1",
        order_id,
    )
    assert tuple(lines) == (1, X_PRICE, 0)
    assert listed.status_code == 200
    assert [(c["change_id"], c["status"]) for c in listed.json()["changes"]] == [
        (change, "applied") for change in ids
    ]
    told = await pgc.fetch(
        "SELECT recipient, count(*) FROM outbox WHERE order_id = $1 AND topic = 'order.refunded' "
        "GROUP BY 1 ORDER BY 1",
        order_id,
    )
    assert [tuple(r) for r in told] == [("customer", 3), ("retailer", 3)]
    transitions = await pgc.fetch(
        "SELECT from_status, to_status FROM order_transitions WHERE order_id = $1 "
        "AND from_status <> to_status ORDER BY id",
        order_id,
    )
    assert tuple(transitions[-1]) == ("FULFILLED", "REFUNDED")


async def test_refund_refusals_leave_the_order_unchanged(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    async with reconciler(ssettings, sengine):
        (order_id,) = await fulfilled_orders(sengine, pgc, sale_id, [[("X", 1)]])
        before = await snapshot(pgc, order_id)
        url = f"/v1/admin/orders/{order_id}/refunds"
        keyed = {**ADMIN, "Idempotency-Key": "k", "content-type": "application/json"}
        problem(
            await api.post(url, content=b'{"amount_minor": ', headers=keyed), 400, "MALFORMED_JSON"
        )
        problem(await api.post(url, content=b"7", headers=keyed), 422, "INVALID_REQUEST")
        bad: list[Any] = [
            {},
            {"reason": "r"},
            {"amount_minor": 5},
            {"amount_minor": 5, "reason": ""},
            {"amount_minor": 5, "reason": "r" * 501},
            {"amount_minor": 0, "reason": "r"},
            {"amount_minor": -5, "reason": "r"},
            {"amount_minor": "5", "reason": "r"},
            {"amount_minor": 5.0, "reason": "r"},
            {"amount_minor": True, "reason": "r"},
            {"amount_minor": 5, "lines": [{"sku": "X", "qty": 1}], "reason": "r"},
            {"lines": [{"sku": "X", "qty": -1}], "reason": "r"},
            {"lines": [{"sku": "X", "qty": 1, "price": 1}], "reason": "r"},
            {"amount_minor": 5, "reason": "r", "currency": "EUR"},
        ]
        for body in bad:
            problem(await refund(api, order_id, "k", body), 422, "INVALID_REQUEST")
        ok = {"amount_minor": 5, "reason": "r"}
        problem(await refund(api, order_id, None, ok), 422, "INVALID_REQUEST")  # no key
        problem(await refund(api, order_id, "a/b", ok), 422, "INVALID_REQUEST")
        problem(await api.post(url, json=ok, headers={"Idempotency-Key": "k"}), 401, "UNAUTHORIZED")
        z = {"lines": [{"sku": "Z", "qty": 1}], "reason": "r"}
        problem(await refund(api, order_id, "k", z), 422, "UNKNOWN_LINE")
        problem(await refund(api, "no-such-order", "k", ok), 404, "NOT_FOUND")
        over = {"amount_minor": X_PRICE + 1, "reason": "r"}
        problem(await refund(api, order_id, "k", over), 409, "REFUND_EXCEEDS_CAPTURED")
        assert await snapshot(pgc, order_id) == before
        await invariants_hold(sengine, pgc, sale_id)
    assert payment_of(fresh_sims, order_id)["refunds"] == []


async def test_twenty_concurrent_refunds_of_a_tenth_pay_back_exactly_the_capture(
    fresh_sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    sims = fresh_sims
    async with reconciler(ssettings, sengine):
        tenths, replayed = await fulfilled_orders(sengine, pgc, sale_id, [[("X", 1)]] * 2)
        tenth = X_PRICE // 10

        async def ask(order_id: str, key: str) -> httpx.Response:
            reply: httpx.Response = await refund(
                api, order_id, key, {"amount_minor": tenth, "reason": "goodwill"}
            )
            return reply

        replies = await asyncio.gather(*(ask(tenths, f"tenth-{i}") for i in range(20)))
        same = await asyncio.gather(*(ask(replayed, "once") for _ in range(10)))
        accepted = [r for r in replies if r.status_code == 202]
        refused = [r for r in replies if r.status_code != 202]
        assert len(accepted) == 10, [r.text for r in refused]
        for r in refused:
            problem(r, 409, "REFUND_EXCEEDS_CAPTURED")
        assert [r.status_code for r in same] == [202] * 10
        assert len({r.json()["change_id"] for r in same}) == 1
        assert sum(r.headers.get("idempotent-replayed") == "true" for r in same) == 9
        row = await settled(pgc, tenths, "REFUNDED")
        once = await settled(pgc, replayed, "FULFILLED")
        await invariants_hold(sengine, pgc, sale_id)

    assert row["refunded_minor"] == row["captured_minor"] == X_PRICE
    assert once["refunded_minor"] == tenth
    paid = payment_of(sims, tenths)["refunds"]
    assert len(paid) == 10 and len({p["key"] for p in paid}) == 10
    assert [p["amount_minor"] for p in paid] == [tenth] * 10
    assert sum(p["amount_minor"] for p in paid) == payment_of(sims, tenths)["captured_minor"]
    assert [p["amount_minor"] for p in payment_of(sims, replayed)["refunds"]] == [tenth]
    statuses = await pgc.fetch(
        "SELECT status, count(*) FROM order_changes WHERE order_id = $1 GROUP BY 1", tenths
    )
    assert {r["status"]: r["count"] for r in statuses} == {"applied": 10}
