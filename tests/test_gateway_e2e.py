"""End to end over real HTTP: a crowd on one sale, idempotency, the hold lifecycle, expiry."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx

from flashsale.engine import Engine
from flashsale.engine.invariants import check_sale
from flashsale.loadtests.gateway_process import Gateway
from tests.gateway_helpers import (
    PAYMENT,
    admin_view,
    assert_problem,
    checkout,
    checkout_body,
    create_sale,
    crowd_post,
    hold_id_of,
    new_sale_id,
    sale_body,
    sku_view,
    supplier_counts,
)
from tests.helpers import snapshot

CROWD = 3000
UNITS = {"p": 60, "q": 40}


def _supplier_of(hold: dict[str, Any]) -> str:
    (line,) = hold["lines"]
    (allocation,) = line["allocations"]
    assert (line["sku"], line["qty"], allocation["qty"]) == ("A", 1, 1), hold
    supplier: str = allocation["supplier"]
    return supplier


def _expected(
    holds: list[dict[str, Any]], confirmed: set[str], released: set[str]
) -> dict[str, dict[str, int]]:
    out = {s: {"loaded": n, "available": n, "reserved": 0, "sold": 0} for s, n in UNITS.items()}
    for hold in holds:
        counts = out[_supplier_of(hold)]
        state = (
            "sold"
            if hold["hold_id"] in confirmed
            else "available"
            if hold["hold_id"] in released
            else "reserved"
        )
        counts["available"] -= 1
        counts[state] += 1
    return out


async def test_a_crowd_takes_exactly_the_stock_then_confirms_and_releases(
    gw: Gateway, http: httpx.AsyncClient, live_engine: Engine
) -> None:
    sale = new_sale_id("crowd")
    await create_sale(http, sale, sale_body(list(UNITS.items()), per_user_limit=1))
    bodies = [checkout_body(f"c{i}") for i in range(CROWD)]
    replies = await crowd_post(gw, f"/v1/sales/{sale}/holds", bodies)

    assert Counter(r.status_code for r in replies) == {201: 100, 409: CROWD - 100}
    for refused in (r for r in replies if r.status_code != 201):
        assert_problem(refused, 409, "SOLD_OUT")
    holds = [r.json() for r in replies if r.status_code == 201]
    assert len({h["hold_id"] for h in holds}) == 100
    assert Counter(_supplier_of(h) for h in holds) == UNITS
    view = await admin_view(http, sale)
    a = sku_view(view)
    assert (a["loaded"], a["reserved"], a["available"], a["sold"]) == (100, 100, 0, 0)
    assert supplier_counts(view) == _expected(holds, set(), set())
    assert await check_sale(live_engine, sale) == []

    ids = [h["hold_id"] for h in holds]
    confirmed, released = set(ids[:50]), set(ids[50:75])
    confirms = [http.post(f"/v1/sales/{sale}/holds/{h}/confirm", json=PAYMENT) for h in confirmed]
    releases = [http.post(f"/v1/sales/{sale}/holds/{h}/release") for h in released]
    answers = await asyncio.gather(*confirms, *releases)
    assert [r.status_code for r in answers] == [200] * 75, [r.text for r in answers if r.is_error]
    assert {r.json()["status"] for r in answers[:50]} == {"confirmed"}
    assert {r.json()["status"] for r in answers[50:]} == {"released"}

    view = await admin_view(http, sale)
    a = sku_view(view)
    assert (a["loaded"], a["available"], a["reserved"], a["sold"]) == (100, 25, 25, 50)
    assert view["open_holds"] == 25
    # One event per hold placed (100), per confirm (50) and per release (25).
    assert view["reconciler"]["stream_length"] == 175
    assert supplier_counts(view) == _expected(holds, confirmed, released)
    assert await check_sale(live_engine, sale) == []


async def test_idempotency_key_replays_the_first_answer(
    http: httpx.AsyncClient, live_engine: Engine
) -> None:
    sale = new_sale_id("idem")
    await create_sale(http, sale, sale_body())
    first = await checkout(http, sale, "c1", 2, key="order-1")
    again = await checkout(http, sale, "c1", 2, key="order-1")
    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert again.json() == first.json()
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"

    before = await snapshot(live_engine.client, sale)
    for qty in (3, 1):
        assert_problem(
            await checkout(http, sale, "c1", qty, key="order-1"), 422, "IDEMPOTENCY_CONFLICT"
        )
    assert await snapshot(live_engine.client, sale) == before
    assert sku_view(await admin_view(http, sale))["reserved"] == 2

    # Keys are scoped per customer (engine/keys.py idem): another shopper's "order-1" is theirs.
    theirs = await checkout(http, sale, "c2", 2, key="order-1")
    assert theirs.status_code == 201, theirs.text
    assert theirs.json()["hold_id"] != first.json()["hold_id"]
    assert "idempotent-replayed" not in theirs.headers
    assert sku_view(await admin_view(http, sale))["reserved"] == 4


async def test_concurrent_requests_with_one_key_make_one_hold(
    http: httpx.AsyncClient, live_engine: Engine
) -> None:
    sale = new_sale_id("idem-crowd")
    await create_sale(http, sale, sale_body())
    replies = await asyncio.gather(*(checkout(http, sale, "c1", 3, key="k-1") for _ in range(50)))
    assert {r.status_code for r in replies} == {201}
    assert len({r.json()["hold_id"] for r in replies}) == 1
    assert sum(r.headers.get("idempotent-replayed") != "true" for r in replies) == 1
    view = await admin_view(http, sale)
    assert (sku_view(view)["reserved"], view["open_holds"]) == (3, 1)
    assert await check_sale(live_engine, sale) == []


async def test_hold_lifecycle_get_extend_confirm_release(
    http: httpx.AsyncClient, live_engine: Engine
) -> None:
    sale = new_sale_id("life")
    await create_sale(http, sale, sale_body(hold_ttl_s=120))
    made = await checkout(http, sale, "c1", 2)
    assert made.status_code == 201, made.text
    hold = made.json()
    url = f"/v1/sales/{sale}/holds/{hold['hold_id']}"

    got = await http.get(url)
    assert got.status_code == 200, got.text
    assert got.json() == {
        **{k: hold[k] for k in ("hold_id", "sale_id", "status", "expires_at", "lines")},
        "customer_id": "c1",
        "extended": False,
    }

    extended = await http.post(url + "/extend")
    assert extended.status_code == 200, extended.text
    assert extended.json()["expires_at"] > hold["expires_at"]
    assert (await http.get(url)).json()["extended"] is True
    assert_problem(await http.post(url + "/extend"), 409, "ALREADY_EXTENDED")

    confirmed = await http.post(url + "/confirm", json=PAYMENT)
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["order_id"] == hold["hold_id"]
    assert confirmed.json()["status"] == "confirmed"
    again = await http.post(url + "/confirm", json=PAYMENT)
    assert (again.status_code, again.json()) == (200, confirmed.json())
    assert_problem(await http.post(url + "/release"), 409, "HOLD_CONFIRMED")
    assert (await http.get(url)).json()["status"] == "confirmed"

    other = await hold_id_of(http, sale, "c2", 3)
    a = sku_view(await admin_view(http, sale))
    assert (a["available"], a["reserved"], a["sold"]) == (95, 3, 2)
    released = await http.post(f"/v1/sales/{sale}/holds/{other}/release")
    assert (released.status_code, released.json()["status"]) == (200, "released"), released.text
    a = sku_view(await admin_view(http, sale))
    assert (a["available"], a["reserved"], a["sold"]) == (98, 0, 2)
    assert await check_sale(live_engine, sale) == []


async def test_an_expired_hold_cannot_be_confirmed_and_its_units_return(
    http: httpx.AsyncClient, live_engine: Engine
) -> None:
    sale = new_sale_id("expiry")
    await create_sale(http, sale, sale_body(hold_ttl_s=1))
    hold = await hold_id_of(http, sale, "c1", 4)
    assert sku_view(await admin_view(http, sale))["available"] == 96
    # Kept: the scripts compare Redis's clock with the hold's expires_at_ms, so any wait longer
    # than the 1 s TTL ends it, however slow the machine. There is no effect to poll for: the
    # stored status changes only when a script (this confirm) or a sweeper meets the hold.
    await asyncio.sleep(1.3)
    late = await http.post(f"/v1/sales/{sale}/holds/{hold}/confirm", json=PAYMENT)
    assert_problem(late, 410, "HOLD_EXPIRED")
    a = sku_view(await admin_view(http, sale))
    assert (a["available"], a["reserved"], a["sold"]) == (100, 0, 0)
    assert (await http.get(f"/v1/sales/{sale}/holds/{hold}")).json()["status"] == "expired"
    assert await check_sale(live_engine, sale) == []


async def test_a_waiting_room_sale_refuses_checkout_without_admission(
    http: httpx.AsyncClient, live_engine: Engine
) -> None:
    sale = new_sale_id("wr")
    await create_sale(http, sale, sale_body(waiting_room={"enabled": True}))
    before = await snapshot(live_engine.client, sale)
    refused = await checkout(http, sale, "c1")
    assert_problem(refused, 403, "NOT_ADMITTED")
    assert await snapshot(live_engine.client, sale) == before
    view = await admin_view(http, sale)
    assert (sku_view(view)["reserved"], sku_view(view)["available"]) == (0, 100)


async def test_confirm_racing_release_has_one_winner_per_hold(
    http: httpx.AsyncClient, live_engine: Engine
) -> None:
    sale = new_sale_id("race")
    await create_sale(http, sale, sale_body())
    holds = [await hold_id_of(http, sale, f"c{i}", 2) for i in range(20)]
    calls = []
    for hold in holds:
        url = f"/v1/sales/{sale}/holds/{hold}"
        calls += [http.post(url + "/confirm", json=PAYMENT), http.post(url + "/release")]
    replies = await asyncio.gather(*calls)
    confirmed = 0
    for confirm, release in zip(replies[::2], replies[1::2], strict=True):
        if confirm.status_code == 200:
            assert confirm.json()["status"] == "confirmed"
            assert_problem(release, 409, "HOLD_CONFIRMED")
            confirmed += 1
        else:
            assert_problem(confirm, 410, "HOLD_RELEASED")
            assert (release.status_code, release.json()["status"]) == (200, "released")
    a = sku_view(await admin_view(http, sale))
    assert (a["sold"], a["reserved"], a["available"]) == (2 * confirmed, 0, 100 - 2 * confirmed)
    assert await check_sale(live_engine, sale) == []


async def test_concurrent_extends_extend_once(http: httpx.AsyncClient) -> None:
    sale = new_sale_id("extend")
    await create_sale(http, sale, sale_body(hold_ttl_s=60))
    hold = await hold_id_of(http, sale, "c1")
    url = f"/v1/sales/{sale}/holds/{hold}/extend"
    replies = await asyncio.gather(*(http.post(url) for _ in range(20)))
    assert sorted(r.status_code for r in replies) == [200] + [409] * 19
    for refused in (r for r in replies if r.status_code == 409):
        assert_problem(refused, 409, "ALREADY_EXTENDED")
    (ok,) = (r for r in replies if r.status_code == 200)
    got = await http.get(f"/v1/sales/{sale}/holds/{hold}")
    assert (got.json()["expires_at"], got.json()["extended"]) == (ok.json()["expires_at"], True)


async def test_the_per_customer_limit_holds_under_concurrency(
    http: httpx.AsyncClient, live_engine: Engine
) -> None:
    sale = new_sale_id("limit")
    await create_sale(http, sale, sale_body(per_user_limit=2))
    replies = await asyncio.gather(*(checkout(http, sale, "greedy") for _ in range(30)))
    assert Counter(r.status_code for r in replies) == {201: 2, 409: 28}
    for refused in (r for r in replies if r.status_code == 409):
        assert_problem(refused, 409, "LIMIT_EXCEEDED")
    assert_problem(await checkout(http, sale, "other", 3), 409, "LIMIT_EXCEEDED")
    assert sku_view(await admin_view(http, sale))["reserved"] == 2
    assert await check_sale(live_engine, sale) == []
