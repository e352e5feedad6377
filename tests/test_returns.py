"""Returns through a real gateway, the simulators, the saga, Redis and PostgreSQL: restockable
units back in the sale's stock (an adjust naming the return) and the refund paid once; damaged
ones written off; a sale that is over keeps them in the return's record; over-returns, replays
and bad input change nothing; ten concurrent returns of one unit on a five-unit line."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx

from flashsale.engine import Engine, Settings, keys
from flashsale.loadtests.gateway_process import Gateway
from flashsale.reconciler.audit import audit
from tests.after_sale_support import (
    audit_ok,
    confirm,
    drained,
    open_sale,
    sale_body,
    until_changes_done,
    until_status,
)
from tests.saga_support import Sims, reconciler

pytest_plugins = ("tests.order_change_fixtures",)  # the simulators, a gateway, their database


async def p1_stock(engine: Engine, sale_id: str) -> tuple[int, int, int]:
    """(available, adjusted, sold) of X at P1 in Redis."""
    state = await engine.stock(sale_id)
    assert state is not None
    s = next(s for s in state.sku("X").suppliers if s.supplier == "P1")
    return s.available, s.adjusted, s.sold


async def snapshot(pgc: asyncpg.Connection, engine: Engine, sale_id: str) -> tuple[Any, ...]:
    """What a refused return must leave as it was."""
    returned = await pgc.fetch("SELECT * FROM return_lines ORDER BY return_id, sku")
    changes = await pgc.fetch("SELECT id, order_id, amount_minor FROM order_changes ORDER BY id")
    orders = await pgc.fetch("SELECT order_id, status, refunded_minor FROM orders ORDER BY 1")
    return (
        [dict(r) for r in returned],
        [dict(r) for r in changes],
        [dict(r) for r in orders],
        await p1_stock(engine, sale_id),
    )


def line(qty: int, condition: str = "restockable", sku: str = "X") -> dict[str, Any]:
    return {"sku": sku, "qty": qty, "condition": condition}


async def post(
    admin_api: httpx.AsyncClient, order_id: str, key: str | None, body: Any
) -> httpx.Response:
    headers = {} if key is None else {"Idempotency-Key": key}
    return await admin_api.post(f"/v1/admin/orders/{order_id}/returns", json=body, headers=headers)


async def test_returns_restock_refund_and_refuse(
    sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    admin_api: httpx.AsyncClient,
    saga_gw: Gateway,
    sale_id: str,
) -> None:
    sims.reset()
    sims.supplier("P1", stock={"X": 1000})
    await open_sale(admin_api, sale_id, sale_body({"X": (1000, [("P1", 40, 400)])}))
    a = await confirm(sengine, sale_id, "c1", [("X", 5)])
    b = await confirm(sengine, sale_id, "c2", [("X", 2)])
    c = await confirm(sengine, sale_id, "c3", [("X", 5)])
    d = await confirm(sengine, sale_id, "c4", [("X", 1)], token="decline_me")
    async with reconciler(ssettings, sengine):
        await until_status(pgc, [a, b, c], {"FULFILLED"})
        await until_status(pgc, [d], {"PAYMENT_FAILED"})
        await drained(sengine, sale_id)
        start = await p1_stock(sengine, sale_id)
        assert start == (40 - 12, 0, 12)

        # Two restockable units of a: back on sale at once, the refund asked once.
        asked = {"lines": [line(2)], "reason": "did not fit"}
        first = await post(admin_api, a, "r1", asked)
        assert first.status_code == 201, first.text
        doc = first.json()
        assert doc["lines"] == [
            {
                "sku": "X",
                "hold_supplier": "P1",
                "qty": 2,
                "condition": "restockable",
                "destination": "sale_stock",
                "restocked_qty": 2,
                "refund_minor": 2000,
            }
        ]
        assert (doc["restock"], doc["refund"]["amount_minor"]) == ("done", 2000)
        assert await p1_stock(sengine, sale_id) == (start[0] + 2, 2, 12)
        # The same key and body: the same answer, nothing done twice.
        again = await post(admin_api, a, "r1", asked)
        assert (again.status_code, again.json()) == (201, doc)
        assert again.headers["idempotent-replayed"] == "true"
        assert await p1_stock(sengine, sale_id) == (start[0] + 2, 2, 12)
        # The same key with another body is refused.
        other = await post(admin_api, a, "r1", {"lines": [line(1)], "reason": "did not fit"})
        assert (other.status_code, other.json()["code"]) == (422, "IDEMPOTENCY_CONFLICT")

        # Five requests at once with one key and body: one return, one unit back, one answer.
        same = {"lines": [line(1)], "reason": "same"}
        replies = await asyncio.gather(*(post(admin_api, b, "r-same", same) for _ in range(5)))
        assert {r.status_code for r in replies} == {201}
        assert len({r.text for r in replies}) == 1, [r.text for r in replies]
        assert replies[0].json()["lines"][0]["restocked_qty"] == 1
        assert sum(r.headers.get("idempotent-replayed") == "true" for r in replies) == 4
        assert await p1_stock(sengine, sale_id) == (start[0] + 3, 3, 12)

        # A damaged unit of b: refunded, never back on sale.
        damaged = await post(
            admin_api, b, "r2", {"lines": [line(1, "damaged")], "reason": "broken"}
        )
        assert damaged.status_code == 201, damaged.text
        assert [(x["destination"], x["restocked_qty"]) for x in damaged.json()["lines"]] == [
            ("written_off", 0)
        ]
        assert damaged.json()["restock"] == "none"
        assert await p1_stock(sengine, sale_id) == (start[0] + 3, 3, 12)

        await until_changes_done(pgc, [a, b, c], 3)  # the saga paid them back
        before = await snapshot(pgc, sengine, sale_id)
        await refused_returns_change_nothing(admin_api, saga_gw, a, d)
        assert await snapshot(pgc, sengine, sale_id) == before

        # Ten concurrent returns of one unit on c's five: exactly five are taken.
        replies = await asyncio.gather(
            *(post(admin_api, c, f"c-{i}", {"lines": [line(1)]}) for i in range(10))
        )
        codes = sorted(r.status_code for r in replies)
        assert codes == [201] * 5 + [409] * 5, [r.text for r in replies]
        assert {r.json()["code"] for r in replies if r.status_code == 409} == {
            "RETURN_EXCEEDS_ORDER"
        }
        assert await p1_stock(sengine, sale_id) == (start[0] + 8, 8, 12)

        await until_changes_done(pgc, [a, b, c], 8)
        await until_status(pgc, [a], {"FULFILLED"})
        await until_status(pgc, [b, c], {"REFUNDED"})  # everything captured came back
        await audit_ok(sengine, pgc, sale_id)

        # The sale is over: a restockable unit stays in the return's record.
        closed = await admin_api.post(f"/v1/admin/sales/{sale_id}/close")
        assert closed.status_code == 200, closed.text
        late = await post(admin_api, a, "r3", {"lines": [line(1)], "reason": "late"})
        assert late.status_code == 201, late.text
        assert [(x["destination"], x["restocked_qty"]) for x in late.json()["lines"]] == [
            ("ledger", 0)
        ]
        assert await p1_stock(sengine, sale_id) == (start[0] + 8, 8, 12)
        await until_changes_done(pgc, [a, b, c], 9)
        await audit_ok(sengine, pgc, sale_id)

    # The payment provider: each return's refund once, at its amount.
    auths = sims.authorizations()
    assert sorted(r["amount_minor"] for r in auths[a]["refunds"]) == [1000, 2000]
    assert [r["amount_minor"] for r in auths[b]["refunds"]] == [1000, 1000]
    assert [r["amount_minor"] for r in auths[c]["refunds"]] == [1000] * 5
    for order_id, refunded in ((a, 3000), (b, 2000), (c, 5000)):
        assert auths[order_id]["refunded_minor"] == refunded
        assert len({r["key"] for r in auths[order_id]["refunds"]}) == len(
            auths[order_id]["refunds"]
        )
        row = await pgc.fetchrow("SELECT refunded_minor FROM orders WHERE order_id = $1", order_id)
        assert row["refunded_minor"] == refunded
    assert auths[d]["refunds"] == []
    keys_asked = await pgc.fetch(
        "SELECT c.idempotency_key, r.id FROM order_changes c JOIN returns r "
        "ON r.refund_change_id = c.id ORDER BY r.id"
    )
    assert [k["idempotency_key"] for k in keys_asked] == [f"return:{k['id']}" for k in keys_asked]
    assert len(keys_asked) == 9

    # The ledger: one adjust per restocking return, naming it; the audit accepts them.
    moves = await pgc.fetch(
        "SELECT qty, reason FROM stock_movements WHERE sale_id = $1 AND kind = 'adjust'", sale_id
    )
    assert sorted(m["qty"] for m in moves) == [1] * 6 + [2]
    assert all(m["reason"].startswith("return ") for m in moves)

    # The audit still catches a real mismatch: a unit Redis offers that no ledger row explains.
    stock_key = keys.stock(sale_id, "X")
    await sengine.client.hincrby(stock_key, "avail:P1", 1)
    await sengine.client.hincrby(stock_key, "available", 1)
    try:
        found = await audit(sengine, pgc, sale_id, strict=True)
        assert not found.ok
    finally:
        await sengine.client.hincrby(stock_key, "avail:P1", -1)
        await sengine.client.hincrby(stock_key, "available", -1)
    assert (await audit(sengine, pgc, sale_id, strict=True)).ok


async def refused_returns_change_nothing(
    admin_api: httpx.AsyncClient, saga_gw: Gateway, a: str, declined: str
) -> None:
    """Each a clear problem with a stable code; the caller checks that nothing changed."""
    cases: list[tuple[str, str | None, Any, int, str]] = [
        (a, "r9", {"lines": [line(4)]}, 409, "RETURN_EXCEEDS_ORDER"),  # 3 left
        (a, "r9", {"lines": [line(2), line(2, "damaged")]}, 409, "RETURN_EXCEEDS_ORDER"),
        (a, "r9", {"lines": [line(1, sku="Z")]}, 409, "RETURN_EXCEEDS_ORDER"),
        ("no-such-order", "r9", {"lines": [line(1)]}, 404, "NOT_FOUND"),
        (declined, "r9", {"lines": [line(1)]}, 409, "ORDER_NOT_CAPTURED"),
        (a, None, {"lines": [line(1)]}, 422, "INVALID_REQUEST"),
        (a, "a key", {"lines": [line(1)]}, 422, "INVALID_REQUEST"),
        (a, "r9", {"lines": []}, 422, "INVALID_REQUEST"),
        (
            a,
            "r9",
            {"lines": [{"sku": "X", "qty": "1", "condition": "damaged"}]},
            422,
            "INVALID_REQUEST",
        ),
        (a, "r9", {"lines": [line(0)]}, 422, "INVALID_REQUEST"),
        (a, "r9", {"lines": [line(1, "broken")]}, 422, "INVALID_REQUEST"),
        (a, "r9", {"lines": [line(1)], "reason": 7}, 422, "INVALID_REQUEST"),
        (a, "r9", {"lines": [line(1)], "extra": 1}, 422, "INVALID_REQUEST"),
        (a, "r9", [line(1)], 422, "INVALID_REQUEST"),
    ]
    for order_id, key, body, status, code in cases:
        reply = await post(admin_api, order_id, key, body)
        assert (reply.status_code, reply.json()["code"]) == (status, code), (body, reply.text)
        assert reply.headers["content-type"] == "application/problem+json"
    malformed = await admin_api.post(
        f"/v1/admin/orders/{a}/returns",
        content=b'{"lines": [',
        headers={"Idempotency-Key": "r9", "content-type": "application/json"},
    )
    assert (malformed.status_code, malformed.json()["code"]) == (400, "MALFORMED_JSON")
    async with httpx.AsyncClient(base_url=saga_gw.url) as anonymous:
        reply = await anonymous.post(
            f"/v1/admin/orders/{a}/returns",
            json={"lines": [line(1)]},
            headers={"Idempotency-Key": "r9"},
        )
        assert (reply.status_code, reply.json()["code"]) == (401, "UNAUTHORIZED")
