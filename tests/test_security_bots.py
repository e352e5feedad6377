"""Hostile tests of the crowd a bot can fake, against a real gateway in production mode: new
customer ids cost a bot nothing unless the shop signs them, and one subscriber's IPv6 /64 is
one client address."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from flashsale.engine import Engine
from flashsale.engine.connection import RedisClient
from flashsale.engine.settings import Settings
from flashsale.loadtests.gateway_process import Gateway
from tests.gateway_helpers import assert_problem, client, crowd_post, new_sale_id
from tests.security_helpers import Shop, production_gateway, room_opened
from tests.waiting_room_helpers import assert_room_sound, room_body, room_snapshot

JOINS = 10_000


@pytest.fixture(scope="module")
def prod(settings: Settings, service_urls: dict[str, str]) -> Iterator[tuple[Gateway, Shop]]:
    # Locust and proxies in front of the shop: believe X-Forwarded-For from loopback.
    extra = {"FLASHSALE_TRUSTED_PROXIES": "127.0.0.1"}
    with production_gateway(settings, service_urls, **extra) as running:
        yield running


async def _room_sale(gw: Gateway, shop: Shop, rate_limit: dict[str, int] | None = None) -> str:
    sale = new_sale_id("bots")
    body = room_body(10, rate=1)
    if rate_limit:
        body["rate_limit"] = rate_limit
    async with client(gw) as http:
        assert (await http.put(f"/v1/admin/sales/{sale}", json=body, headers=shop.admin)).is_success
        assert (await http.post(f"/v1/admin/sales/{sale}/open", headers=shop.admin)).is_success
    return sale


async def _tickets(redis_client: RedisClient, sale: str) -> int:
    return int(await redis_client.hlen(f"wr:{{{sale}}}:tickets"))


async def test_ten_thousand_new_ids_without_a_token_get_no_ticket(
    prod: tuple[Gateway, Shop], redis_client: RedisClient
) -> None:
    """Before: a bot that joined 10,000 times with new customer ids got 10,000 tickets."""
    gw, shop = prod
    sale = await _room_sale(gw, shop)
    await room_opened(redis_client, sale)
    before = await room_snapshot(redis_client, sale)
    bodies = [{"customer_id": f"bot-{i}"} for i in range(JOINS)]
    replies = await crowd_post(gw, f"/v1/sales/{sale}/queue", bodies)
    codes = Counter((r.status_code, r.json()["code"]) for r in replies)
    assert codes == {(401, "CUSTOMER_UNAUTHENTICATED"): JOINS}
    assert await _tickets(redis_client, sale) == 0
    assert await room_snapshot(redis_client, sale) == before


async def test_one_token_with_ten_thousand_body_ids_gets_one_ticket(
    prod: tuple[Gateway, Shop], redis_client: RedisClient, live_engine: Engine
) -> None:
    gw, shop = prod
    sale = await _room_sale(gw, shop)
    bodies = [{"customer_id": "alice"}] + [{"customer_id": f"bot-{i}"} for i in range(JOINS - 1)]
    headers = shop.as_customer("alice")
    replies = await crowd_post(gw, f"/v1/sales/{sale}/queue", bodies, headers=headers)
    codes = Counter(r.status_code for r in replies)
    assert codes == {201: 1, 403: JOINS - 1}, codes
    assert all(r.json()["code"] == "CUSTOMER_MISMATCH" for r in replies if r.status_code == 403)
    assert await _tickets(redis_client, sale) == 1
    await assert_room_sound(live_engine, sale)


async def test_an_ipv6_64_is_one_client_address(prod: tuple[Gateway, Shop]) -> None:
    """Before: each IPv6 address had buckets of its own, and a subscriber holds 2^64 of them."""
    gw, shop = prod
    limit = {"per_client_per_s": 1, "burst": 3, "per_sale_per_s": 0}
    sale = await _room_sale(gw, shop, limit)
    join = f"/v1/sales/{sale}/queue"
    async with client(gw) as http:
        statuses = []
        for i in range(6):  # six customers, six addresses, one /64: its burst is 3
            headers = shop.as_customer(f"v6-{i}", **{"X-Forwarded-For": f"2001:db8:7:7::{i + 1}"})
            reply = await http.post(join, headers=headers)
            statuses.append(reply.status_code)
            if reply.status_code == 429:
                assert_problem(reply, 429, "RATE_LIMITED")
                assert int(reply.headers["Retry-After"]) >= 1
        assert statuses[:3] == [201, 201, 201] and 429 in statuses[3:], statuses
        other = shop.as_customer("v6-other", **{"X-Forwarded-For": "2001:db8:7:8::1"})
        assert (await http.post(join, headers=other)).status_code == 201
