"""The operator console's routes over real HTTP: the page and its headers, the sales list, the
dead-lettered saga steps and their retry against the simulators (a payment provider answering
503 until the step is dead, then healed), and every bad input answered with problem+json and
nothing changed."""

from __future__ import annotations

import asyncio
import re
from collections import Counter

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx
import pytest

from flashsale.engine import Engine, Settings
from flashsale.engine.invariants import check_sale
from flashsale.gateway.console import CSP
from flashsale.loadtests.gateway_process import Gateway
from flashsale.reconciler.audit import audit
from tests.admin_console_helpers import (
    ADMIN,
    MAX_ATTEMPTS,
    cengine,
    cgw,
    console_url,
    cpg,
    csettings,
    csims,
    dead_at,
    order_row,
)
from tests.reconciler_support import create_sale, record
from tests.saga_support import Sims, confirm_orders, reconciler, wait_final

__all__ = ["cengine", "cgw", "console_url", "cpg", "csettings", "csims"]  # the fixtures

HAPPY = ["AUTHORIZED", "ALLOCATED", "CONFIRMED", "FULFILLED"]


def problem(reply: httpx.Response, status: int, code: str) -> None:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["code"] == code, reply.json()


# --- the page ------------------------------------------------------------------------------------


async def test_the_page_is_served_with_a_strict_policy_and_no_inline_code(cgw: Gateway) -> None:
    async with httpx.AsyncClient(base_url=cgw.url) as http:
        page = await http.get("/admin/")
        assets = {
            name: await http.get(f"/admin/assets/{name}") for name in ("admin.js", "admin.css")
        }
        missing = await http.get("/admin/assets/secrets.txt")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for reply in (page, *assets.values()):
        assert reply.headers["content-security-policy"] == CSP
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert reply.headers["referrer-policy"] == "no-referrer"
    assert "script-src 'self';" in CSP and "unsafe" not in CSP
    html = page.text
    # Every script is a file; no style element or attribute, no inline handler.
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/admin/assets/admin.js" defer>']
    assert "<style" not in html and " style=" not in html and not re.search(r" on\w+=", html)
    assert assets["admin.js"].headers["content-type"].startswith("text/javascript")
    assert assets["admin.css"].headers["content-type"].startswith("text/css")
    assert "innerHTML" not in assets["admin.js"].text
    problem(missing, 404, "NOT_FOUND")


async def test_admin_routes_of_the_console_need_the_key(cgw: Gateway) -> None:
    calls = [
        ("GET", "/v1/admin/sales"),
        ("GET", "/v1/admin/orders?dead=true"),
        ("POST", "/v1/admin/orders/some-order/retry"),
    ]
    async with httpx.AsyncClient(base_url=cgw.url) as http:
        for method, path in calls:
            for headers in ({}, {"Authorization": "Bearer not-the-key"}):
                reply = await http.request(method, path, headers=headers)
                problem(reply, 401, "UNAUTHORIZED")


# --- the sales list and the live view ------------------------------------------------------------


async def test_sales_list_and_live_view_with_room_figures(
    cgw: Gateway, cengine: Engine, cpg: asyncpg.Connection, sale_id: str
) -> None:
    await create_sale(cengine, cpg, record(sale_id, {"A": [("P1", 7), ("P2", 3)]}))
    async with httpx.AsyncClient(base_url=cgw.url, headers=ADMIN) as http:
        listed = (await http.get("/v1/admin/sales")).json()["sales"]
        live = (await http.get(f"/v1/admin/sales/{sale_id}")).json()
        problem(await http.get("/v1/admin/sales?status=open"), 422, "INVALID_REQUEST")
    mine = [s for s in listed if s["sale_id"] == sale_id]
    assert mine == [
        {
            "sale_id": sale_id,
            "name": f"Sale {sale_id}",
            "status": "open",
            "starts_at": "1970-01-01T00:00:00.000Z",
            "loaded": True,
        }
    ]
    assert live["waiting_room"] is None  # the sale has no room
    assert live["reconciler"]["stream_length"] >= 0
    assert [(p["supplier"], p["available"]) for p in live["skus"][0]["suppliers"]] == [
        ("P1", 7),
        ("P2", 3),
    ]


# --- bad input -----------------------------------------------------------------------------------


async def test_dead_list_refuses_bad_queries(cgw: Gateway) -> None:
    async with httpx.AsyncClient(base_url=cgw.url, headers=ADMIN) as http:
        for query in ("", "?dead=false", "?dead=1", "?dead=true&limit=0", "?dead=true&limit=x"):
            problem(await http.get(f"/v1/admin/orders{query}"), 422, "INVALID_REQUEST")
        problem(await http.get("/v1/admin/orders?dead=true&limit=1001"), 422, "INVALID_REQUEST")
        problem(await http.get("/v1/admin/orders?dead=true&status=x"), 422, "INVALID_REQUEST")
        ok = await http.get("/v1/admin/orders?dead=true&limit=5")
    assert ok.status_code == 200 and set(ok.json()) == {"orders"}


async def test_retry_refuses_bad_input_and_changes_nothing(
    cgw: Gateway,
    csims: Sims,
    cengine: Engine,
    cpg: asyncpg.Connection,
    csettings: Settings,
    sale_id: str,
) -> None:
    """A malformed body, fields, a wrong type, a bad id, an unknown order, an order with nothing
    dead: each a problem, and the dead order's row stays exactly as it was."""
    await create_sale(cengine, cpg, record(sale_id, {"A": [("P1", 10)]}))
    csims.payment(fail_share=1.0)
    held = await confirm_orders(cengine, sale_id, [[("A", 1)]])
    (order_id,) = held
    async with reconciler(csettings, cengine):
        await dead_at(cpg, [order_id], "payment.authorize")
    # The saga is stopped from here on: a retry makes the step due, nothing runs it.
    before = await order_row(cpg, order_id)
    path = f"/v1/admin/orders/{order_id}/retry"
    json_type = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=cgw.url, headers=ADMIN) as http:
        problem(await http.post(path, content=b"{nope", headers=json_type), 400, "MALFORMED_JSON")
        problem(await http.post(path, content=b"[]", headers=json_type), 422, "INVALID_REQUEST")
        problem(await http.post(path, json={"step": "x"}), 422, "INVALID_REQUEST")
        plain = {"Content-Type": "text/plain"}
        problem(await http.post(path, content=b"{}", headers=plain), 415, "UNSUPPORTED_MEDIA_TYPE")
        problem(
            await http.post(path, content=b"x" * 5000, headers=json_type), 413, "PAYLOAD_TOO_LARGE"
        )
        problem(await http.post("/v1/admin/orders/bad%20id/retry"), 422, "INVALID_REQUEST")
        problem(await http.post("/v1/admin/orders/no-such-order/retry"), 404, "NOT_FOUND")
        problem(await http.get(path), 405, "METHOD_NOT_ALLOWED")
        assert await order_row(cpg, order_id) == before
        # The dead letter is listed as it is.
        listed = (await http.get("/v1/admin/orders?dead=true")).json()["orders"]
        assert [(d["order_id"], d["step"], d["status"]) for d in listed] == [
            (order_id, "payment.authorize", before["status"])
        ]
        # Taken once (an empty object is the same as no body); a replay finds nothing dead.
        done = await http.post(path, json={})
        assert done.status_code == 202, done.text
        assert done.json() == {"order_id": order_id, "step": "payment.authorize", "status": "due"}
        after = await order_row(cpg, order_id)
        replay = await http.post(path)
        problem(replay, 409, "NOT_DEAD")
        assert replay.json()["title"] == "The order has no dead-lettered step to retry"
        assert await order_row(cpg, order_id) == after
        assert (await http.get("/v1/admin/orders?dead=true")).json() == {"orders": []}
    assert (after["next_step"], after["dead_step"]) == ("payment.authorize", None)
    await cpg.execute("UPDATE orders SET next_step = NULL WHERE order_id = $1", order_id)


# --- a dead step retried against the simulators ------------------------------------------------


async def test_dead_steps_listed_and_retried_once_against_the_payment_provider(
    cgw: Gateway,
    csims: Sims,
    cengine: Engine,
    cpg: asyncpg.Connection,
    csettings: Settings,
    sale_id: str,
) -> None:
    """The provider answers 503 until three orders are dead at payment.authorize; healed, 20
    concurrent retries of one order take it once (19 NOT_DEAD), and it completes with one
    authorisation and one capture; the other two follow after their own retry."""
    sims = csims
    sims.reset()
    sims.payment(fail_share=1.0)
    await create_sale(cengine, cpg, record(sale_id, {"A": [("P1", 10)], "B": [("P1", 10)]}))
    held = await confirm_orders(cengine, sale_id, [[("A", 1), ("B", 2)]] * 3)
    first, *others = sorted(held)
    async with reconciler(csettings, cengine):
        await dead_at(cpg, list(held), "payment.authorize")
        async with httpx.AsyncClient(base_url=cgw.url, headers=ADMIN, timeout=30) as http:
            listed = (await http.get("/v1/admin/orders?dead=true")).json()["orders"]
            assert sorted(d["order_id"] for d in listed) == sorted(held)
            for d in listed:
                assert (d["sale_id"], d["step"], d["status"]) == (
                    sale_id,
                    "payment.authorize",
                    "PENDING",
                )
                assert d["attempts"] == MAX_ATTEMPTS and "503" in d["last_error"]
                assert d["at"].endswith("Z")
            assert sims.authorizations() == {}  # a 503 did nothing at the provider
            sims.payment(fail_share=0.0)
            path = f"/v1/admin/orders/{first}/retry"
            replies = await asyncio.gather(*(http.post(path) for _ in range(20)))
            assert Counter(r.status_code for r in replies) == {202: 1, 409: 19}
            assert {r.json()["code"] for r in replies if r.status_code == 409} == {"NOT_DEAD"}
            view = (await http.get(f"/v1/admin/orders/{first}")).json()
            left = (await http.get("/v1/admin/orders?dead=true")).json()["orders"]
            assert sorted(d["order_id"] for d in left) == sorted(others)
            for order_id in others:
                assert (await http.post(f"/v1/admin/orders/{order_id}/retry")).status_code == 202
        statuses = await wait_final(cpg, sale_id, 3)
    assert statuses == {order_id: "FULFILLED" for order_id in held}
    causes = [t["cause"] for t in view["transitions"]]
    assert causes.count("step payment.authorize retried by an operator over the admin API") == 1
    auths = sims.authorizations()
    total = 1000 + 2 * 1100
    for order_id in held:
        a = auths[order_id]
        assert (a["status"], a["amount_minor"], a["captured_minor"], a["captures"]) == (
            "captured",
            total,
            total,
            1,
        )
    steps = await cpg.fetch(
        "SELECT attempts, round FROM saga_steps WHERE order_id = $1 AND step = 'payment.authorize'",
        first,
    )
    assert [(s["attempts"], s["round"]) for s in steps] == [(1, 1)]  # counted anew after the retry
    moves = await cpg.fetch(
        "SELECT to_status FROM order_transitions WHERE order_id = $1 AND from_status <> to_status "
        "ORDER BY id",
        first,
    )
    assert [m["to_status"] for m in moves] == HAPPY
    assert await check_sale(cengine, sale_id) == []
    assert (await audit(cengine, cpg, sale_id, strict=True)).ok


@pytest.fixture(autouse=True)
def _heal(csims: Sims) -> None:
    """Each test starts with a provider that answers."""
    csims.payment(fail_share=0.0)
