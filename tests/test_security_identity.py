"""Hostile tests of who the customer is, against a real gateway in production mode: a ticket, a
hold and an order belong to the customer the shop's token names, and to nobody who merely
knows a customer id or a hold id."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from flashsale.engine.connection import RedisClient
from flashsale.engine.settings import Settings
from flashsale.loadtests.gateway_process import Gateway
from flashsale.store.db import Connection
from tests.gateway_helpers import assert_problem, client, new_sale_id, sale_body
from tests.helpers import eventually, snapshot
from tests.security_helpers import Shop, now_s, production_gateway, room_opened, seed_order
from tests.waiting_room_helpers import room_body, room_snapshot


@pytest.fixture(scope="module")
def prod(settings: Settings, service_urls: dict[str, str]) -> Iterator[tuple[Gateway, Shop]]:
    with production_gateway(settings, service_urls) as running:
        yield running


@pytest.fixture
async def http(prod: tuple[Gateway, Shop]) -> AsyncIterator[httpx.AsyncClient]:
    async with client(prod[0]) as c:
        yield c


async def _sale(http: httpx.AsyncClient, shop: Shop, body: dict[str, object]) -> str:
    sale = new_sale_id("sec")
    assert (await http.put(f"/v1/admin/sales/{sale}", json=body, headers=shop.admin)).is_success
    assert (await http.post(f"/v1/admin/sales/{sale}/open", headers=shop.admin)).is_success
    return sale


async def test_a_ticket_is_the_token_customers_not_the_body_ids(
    prod: tuple[Gateway, Shop], http: httpx.AsyncClient, redis_client: RedisClient
) -> None:
    """Before: POST queue {"customer_id": "alice"} handed anyone Alice's ticket."""
    shop = prod[1]
    sale = await _sale(http, shop, room_body(10, rate=1))
    join = f"/v1/sales/{sale}/queue"
    await room_opened(redis_client, sale)
    before = await room_snapshot(redis_client, sale)
    anonymous = await http.post(join, json={"customer_id": "alice"})
    assert_problem(anonymous, 401, "CUSTOMER_UNAUTHENTICATED")
    as_mallory = await http.post(
        join, json={"customer_id": "alice"}, headers=shop.as_customer("mallory")
    )
    assert_problem(as_mallory, 403, "CUSTOMER_MISMATCH")
    assert await room_snapshot(redis_client, sale) == before  # no ticket for anyone
    alice = await http.post(join, json={}, headers=shop.as_customer("alice"))
    assert alice.status_code == 201, alice.text
    mallory = await http.post(join, json={}, headers=shop.as_customer("mallory"))
    assert mallory.status_code == 201 and mallory.json()["ticket"] != alice.json()["ticket"]
    again = await http.post(join, headers=shop.as_customer("alice"))  # no body at all
    assert again.status_code == 200 and again.json()["ticket"] == alice.json()["ticket"]


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("not-a-jwt", "not a JWT"),
        ("e30.e30.e30", "signed with HS256, not None"),
        ("expired", "expired"),
        ("wrong-key", "signature does not verify"),
        ("wrong-audience", "not for audience"),
        ("no-exp", "no exp"),
        ("not-yet", "not valid yet"),
        ("bad-sub", "sub is not a customer id"),
    ],
)
async def test_every_bad_customer_token_is_refused_saying_why(
    prod: tuple[Gateway, Shop],
    http: httpx.AsyncClient,
    redis_client: RedisClient,
    token: str,
    why: str,
) -> None:
    shop, now = prod[1], now_s()
    aud = shop.settings.customer_audience
    made = {
        "expired": shop.signed({"sub": "alice", "aud": aud, "exp": now - 3600}),
        "wrong-key": shop.signed({"sub": "alice", "aud": aud, "exp": now + 600}, key="x" * 40),
        "wrong-audience": shop.signed({"sub": "alice", "aud": "elsewhere", "exp": now + 600}),
        "no-exp": shop.signed({"sub": "alice", "aud": aud}),
        "not-yet": shop.signed({"sub": "alice", "aud": aud, "exp": now + 900, "nbf": now + 600}),
        "bad-sub": shop.signed({"sub": "al ice/..", "aud": aud, "exp": now + 600}),
    }
    sale = await _sale(http, shop, sale_body())
    before = await snapshot(redis_client, sale)
    headers = {"X-Customer-Token": made.get(token, token)}
    body = {"items": [{"sku": "A", "qty": 1}]}
    reply = await http.post(f"/v1/sales/{sale}/holds", json=body, headers=headers)
    doc = assert_problem(reply, 401, "CUSTOMER_UNAUTHENTICATED")
    assert why in doc["detail"]
    assert await snapshot(redis_client, sale) == before


async def test_holds_answer_only_their_owner_and_the_admin(
    prod: tuple[Gateway, Shop], http: httpx.AsyncClient, redis_client: RedisClient
) -> None:
    """Before: anyone with a hold's id could read, release, extend or confirm it."""
    shop = prod[1]
    sale = await _sale(http, shop, sale_body())
    placed = await http.post(
        f"/v1/sales/{sale}/holds",
        json={"items": [{"sku": "A", "qty": 1}]},
        headers=shop.as_customer("alice"),
    )
    assert placed.status_code == 201, placed.text
    hold = f"/v1/sales/{sale}/holds/{placed.json()['hold_id']}"
    before = await snapshot(redis_client, sale)
    mallory = shop.as_customer("mallory")
    pay = {"payment": {"method": "card", "token": "tok_x"}}
    assert_problem(await http.get(hold, headers=mallory), 404, "NOT_FOUND")
    assert_problem(await http.post(hold + "/confirm", json=pay, headers=mallory), 404, "NOT_FOUND")
    assert_problem(await http.post(hold + "/release", headers=mallory), 404, "NOT_FOUND")
    assert_problem(await http.post(hold + "/extend", headers=mallory), 404, "NOT_FOUND")
    assert_problem(await http.get(hold), 401, "CUSTOMER_UNAUTHENTICATED")
    assert await snapshot(redis_client, sale) == before
    assert (await http.get(hold, headers=shop.admin)).json()["customer_id"] == "alice"
    confirmed = await http.post(hold + "/confirm", json=pay, headers=shop.as_customer("alice"))
    assert confirmed.status_code == 200 and confirmed.json()["status"] == "confirmed"


async def test_an_idempotent_replay_needs_the_admission_too(
    prod: tuple[Gateway, Shop], http: httpx.AsyncClient, redis_client: RedisClient
) -> None:
    """Before: reserve.lua answered a known Idempotency-Key before checking the admission, so
    whoever knew the key (the page used the ticket id) got the hold back without any token."""
    shop = prod[1]
    sale = await _sale(http, shop, room_body(10, rate=50))
    alice = shop.as_customer("alice")
    joined = (await http.post(f"/v1/sales/{sale}/queue", headers=alice)).json()

    async def let_in() -> dict[str, Any]:
        doc: dict[str, Any] = (await http.get(f"/v1/sales/{sale}/queue/{joined['ticket']}")).json()
        assert doc["status"] == "admitted", doc
        return doc

    status = await eventually(let_in)
    body = {"items": [{"sku": "A", "qty": 1}]}
    admitted = {**alice, "Authorization": f"Bearer {status['token']}", "Idempotency-Key": "k1"}
    first = await http.post(f"/v1/sales/{sale}/holds", json=body, headers=admitted)
    assert first.status_code == 201, first.text
    before = await snapshot(redis_client, sale)
    bare = await http.post(
        f"/v1/sales/{sale}/holds", json=body, headers={**alice, "Idempotency-Key": "k1"}
    )
    assert_problem(bare, 403, "NOT_ADMITTED")
    assert await snapshot(redis_client, sale) == before
    replay = await http.post(f"/v1/sales/{sale}/holds", json=body, headers=admitted)
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.json()["hold_id"] == first.json()["hold_id"]


async def test_orders_answer_only_their_owner(
    prod: tuple[Gateway, Shop], http: httpx.AsyncClient, gateway_db: Connection
) -> None:
    """GET /v1/orders/{order} of another customer is a 404, as a missing order is."""
    shop = prod[1]
    sale = await _sale(http, shop, sale_body())
    order_id = new_sale_id("ord")
    await seed_order(gateway_db, sale, order_id, "alice")
    path = f"/v1/orders/{order_id}"
    assert (await http.get(path, headers=shop.as_customer("alice"))).status_code == 200
    assert_problem(await http.get(path, headers=shop.as_customer("mallory")), 404, "NOT_FOUND")
    assert_problem(await http.get(path), 401, "CUSTOMER_UNAUTHENTICATED")
    assert (await http.get(path, headers=shop.admin)).status_code == 200
