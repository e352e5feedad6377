"""Returns that must wait or pick up where they stopped, through the gateway, the simulators, the
saga, Redis and PostgreSQL: units a supplier that reports its shipments has not shipped cannot
come back (409, nothing written); a restock whose adjust Redis made but whose reply was lost, and
one whose request died holding the claim, are finished by a replay: the units back once."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx
import pytest

from flashsale.engine import Engine, Settings
from flashsale.engine.errors import EngineUnavailable
from flashsale.gateway.app import create_app
from tests.after_sale_support import (
    ADMIN,
    audit_ok,
    confirm,
    open_sale,
    sale_body,
    until_changes_done,
    until_status,
)
from tests.saga_support import Sims, reconciler
from tests.shipment_support import post_signed, reporting_supplier, shipment_doc

pytest_plugins = ("tests.order_change_fixtures",)  # the simulators, a gateway, their database


def back(qty: int) -> dict[str, Any]:
    return {"lines": [{"sku": "X", "qty": qty, "condition": "restockable"}], "reason": "r"}


async def post(admin_api: httpx.AsyncClient, order_id: str, key: str, qty: int) -> httpx.Response:
    return await admin_api.post(
        f"/v1/admin/orders/{order_id}/returns", json=back(qty), headers={"Idempotency-Key": key}
    )


async def p1(engine: Engine, sale_id: str) -> tuple[int, int]:
    """(available, adjusted) of X at P1 in Redis."""
    state = await engine.stock(sale_id)
    assert state is not None
    s = next(s for s in state.sku("X").suppliers if s.supplier == "P1")
    return s.available, s.adjusted


async def written(pgc: asyncpg.Connection, order_id: str) -> tuple[Any, ...]:
    returned = await pgc.fetch("SELECT * FROM return_lines WHERE order_id = $1", order_id)
    changes = await pgc.fetch("SELECT id FROM order_changes WHERE order_id = $1", order_id)
    return [dict(r) for r in returned], [r["id"] for r in changes]


async def test_unshipped_units_of_a_reporting_supplier_cannot_come_back(
    sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    admin_api: httpx.AsyncClient,
    sale_id: str,
) -> None:
    sims.reset()
    sims.supplier("P1", stock={"X": 100})
    await reporting_supplier(admin_api, "P1")
    try:
        await open_sale(admin_api, sale_id, sale_body({"X": (1000, [("P1", 40, 400)])}))
        order = await confirm(sengine, sale_id, "c1", [("X", 3)])
        async with reconciler(ssettings, sengine):
            await until_status(pgc, [order], {"CONFIRMED"})  # captured, waiting to ship
            before = await written(pgc, order)
            refused = await post(admin_api, order, "early", 1)
            assert (refused.status_code, refused.json()["code"]) == (409, "RETURN_NOT_SHIPPED")
            assert refused.headers["content-type"] == "application/problem+json"
            assert await written(pgc, order) == before

            sent = await post_signed(admin_api, "P1", shipment_doc(order, "s1", {"X": 2}))
            assert sent.status_code in (200, 201), sent.text
            for qty in (3, 2):  # more than shipped, then what shipped
                reply = await post(admin_api, order, f"after-{qty}", qty)
                if qty == 3:
                    assert (reply.status_code, reply.json()["code"]) == (409, "RETURN_NOT_SHIPPED")
                else:
                    assert reply.status_code == 201, reply.text
            again = await post(admin_api, order, "one-more", 1)
            assert (again.status_code, again.json()["code"]) == (409, "RETURN_NOT_SHIPPED")
            # The unit left still ships, once; nothing is left to ship after it.
            last = await post_signed(admin_api, "P1", shipment_doc(order, "s2", {"X": 1}))
            assert last.status_code in (200, 201), last.text
            extra = await post_signed(admin_api, "P1", shipment_doc(order, "s3", {"X": 1}))
            assert (extra.status_code, extra.json()["code"]) == (422, "SHIPMENT_EXCEEDS_ORDER")
            await until_changes_done(pgc, [order], 1)
            await audit_ok(sengine, pgc, sale_id)
    finally:
        await reporting_supplier(admin_api, "P1", flag=False)
    row = await pgc.fetchrow(
        "SELECT shipped_qty, refunded_qty FROM order_allocations WHERE order_id = $1", order
    )
    assert (row["shipped_qty"], row["refunded_qty"]) == (3, 2)
    assert [r["amount_minor"] for r in sims.authorizations()[order]["refunds"]] == [2000]


Adjust = Callable[..., Awaitable[Any]]


async def test_an_interrupted_restock_is_finished_once(
    sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    admin_api: httpx.AsyncClient,
    sale_id: str,
    service_urls: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An in-process gateway whose engine's adjust the test controls: Redis makes the change,
    then the reply is lost (EngineUnavailable), or the request dies (an uncaught error)."""
    sims.reset()
    sims.supplier("P1", stock={"X": 100})
    await open_sale(admin_api, sale_id, sale_body({"X": (1000, [("P1", 40, 400)])}))
    orders = [await confirm(sengine, sale_id, f"c{i}", [("X", 3)]) for i in range(2)]
    async with reconciler(ssettings, sengine):
        await until_status(pgc, orders, {"FULFILLED"})
        start = await p1(sengine, sale_id)
        # The tests' Redis database, as the gateway processes are given it.
        local = dataclasses.replace(ssettings, redis_url=service_urls["FLASHSALE_REDIS_URL"])
        app = create_app(local)
        async with app.router.lifespan_context(app):
            engine = app.state.gateway.engine
            real: Adjust = engine.adjust
            keys: list[str] = []

            def failing(error: BaseException) -> Adjust:
                async def adjust(*args: Any, **kwargs: Any) -> Any:
                    await real(*args, **kwargs)  # Redis makes the change...
                    keys.append(kwargs.get("once", ""))
                    raise error  # ...but this request never learns it

                return adjust

            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://gw", headers=ADMIN, timeout=30
            ) as inproc:
                monkeypatch.setattr(engine, "adjust", failing(EngineUnavailable("reply lost")))
                lost = await post(inproc, orders[0], "lost", 2)
                assert (lost.status_code, lost.json()["code"]) == (503, "UNAVAILABLE"), lost.text
                monkeypatch.setattr(engine, "adjust", failing(RuntimeError("the worker died")))
                died = await post(inproc, orders[1], "died", 1)
                assert died.status_code == 500, died.text
                monkeypatch.setattr(engine, "adjust", real)
            assert await p1(sengine, sale_id) == (start[0] + 3, start[1] + 3)  # made in Redis

        # The first is pending again: a replay finishes it, the once-key answering Redis's
        # first change. The second is claimed by a request that is gone: once its claim is
        # stale (written here as an old claim), a replay takes it over.
        states = await pgc.fetch(
            "SELECT order_id, restock FROM returns WHERE sale_id = $1 ORDER BY id", sale_id
        )
        assert [(r["order_id"], r["restock"]) for r in states] == [
            (orders[0], "pending"),
            (orders[1], "restocking"),
        ]
        await pgc.execute(
            "UPDATE returns SET restock_claimed_at = now() - interval '1 hour' WHERE order_id = $1",
            orders[1],
        )
        for order_id, key, qty in ((orders[0], "lost", 2), (orders[1], "died", 1)):
            replay = await post(admin_api, order_id, key, qty)
            assert replay.status_code == 201, replay.text
            doc = replay.json()
            assert (doc["restock"], doc["lines"][0]["restocked_qty"]) == ("done", qty)
        assert await p1(sengine, sale_id) == (start[0] + 3, start[1] + 3)  # not twice
        await until_changes_done(pgc, orders, 2)
        await audit_ok(sengine, pgc, sale_id)

    ids = [
        r["id"]
        for r in await pgc.fetch("SELECT id FROM returns WHERE sale_id = $1 ORDER BY id", sale_id)
    ]
    assert keys == [f"return-{i}-X-P1" for i in ids]
    moves = await pgc.fetch(
        "SELECT qty FROM stock_movements WHERE sale_id = $1 AND kind = 'adjust' ORDER BY qty",
        sale_id,
    )
    assert [m["qty"] for m in moves] == [1, 2]  # one ledger row per line
    auths = sims.authorizations()
    assert [[r["amount_minor"] for r in auths[o]["refunds"]] for o in orders] == [[2000], [1000]]
