"""Hostile tests of the limits: a flood of one route class cannot starve another, unknown sale
ids cost no PostgreSQL query, a limit that cannot be read is counted, the admission token's
expiry is Redis's to judge, and a room's keys do not outlive their sale for ever."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterator

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx
import pytest
from prometheus_client import REGISTRY

from flashsale.engine import Code, Engine, keys
from flashsale.engine.connection import RedisClient
from flashsale.engine.rate_limit import RateLimiter
from flashsale.engine.settings import Settings
from flashsale.engine.waiting_room import RoomConfig, TokenUse, WaitingRoom
from flashsale.gateway.metrics import render
from flashsale.gateway.rate_limits import RateLimits
from flashsale.gateway.sale_records import SaleRecords
from flashsale.loadtests.gateway_process import Gateway
from flashsale.store.db import Connection
from tests.gateway_helpers import assert_problem, client, crowd_post, new_sale_id
from tests.helpers import eventually, open_sale, sku_stock, snapshot
from tests.saga_support import fresh_database
from tests.security_helpers import Shop, production_gateway, seed_order
from tests.waiting_room_helpers import assert_room_sound, room_body, room_config

UNKNOWN = 2_000


@pytest.fixture(scope="module")
def prod(settings: Settings, service_urls: dict[str, str]) -> Iterator[tuple[Gateway, Shop]]:
    with production_gateway(settings, service_urls) as running:
        yield running


async def _admitted(gw: Gateway, shop: Shop, sale: str, customer: str) -> str:
    """The customer's admission token, once the room lets them in."""
    async with client(gw) as http:
        joined = await http.post(f"/v1/sales/{sale}/queue", headers=shop.as_customer(customer))
        ticket = joined.json()["ticket"]

        async def admitted() -> str:
            doc = (await http.get(f"/v1/sales/{sale}/queue/{ticket}")).json()
            return str(doc.get("token") or "")

        return await eventually(admitted)


async def test_a_join_flood_does_not_lock_out_the_checkout(
    prod: tuple[Gateway, Shop], redis_client: RedisClient, live_engine: Engine
) -> None:
    """Before: join and checkout took from the same buckets, so a customer (or a flood from
    their address) that used up the joins could no longer check out."""
    gw, shop = prod
    sale = new_sale_id("flood")
    body = room_body(100, rate=50, rate_limit={"per_client_per_s": 1, "burst": 2})
    async with client(gw) as http:
        assert (await http.put(f"/v1/admin/sales/{sale}", json=body, headers=shop.admin)).is_success
        assert (await http.post(f"/v1/admin/sales/{sale}/open", headers=shop.admin)).is_success
    token = await _admitted(gw, shop, sale, "alice")
    flood = await crowd_post(
        gw, f"/v1/sales/{sale}/queue", [{}] * 30, connections=10, headers=shop.as_customer("alice")
    )
    assert sum(r.status_code == 429 for r in flood) >= 25
    async with client(gw) as http:
        headers = {**shop.as_customer("alice"), "Authorization": f"Bearer {token}"}
        hold = await http.post(
            f"/v1/sales/{sale}/holds", json={"items": [{"sku": "A", "qty": 1}]}, headers=headers
        )
    assert hold.status_code == 201, hold.text
    assert await redis_client.hlen(f"wr:{{{sale}}}:tickets") == 1  # the flood made no ticket
    assert (await sku_stock(live_engine, sale, "A")).reserved == 1
    await assert_room_sound(live_engine, sale)


async def _transactions(url: str) -> int:
    db = await asyncpg.connect(url)
    try:
        return int(
            await db.fetchval(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database "
                "WHERE datname = current_database()"
            )
        )
    finally:
        await db.close()


async def _settled_transactions(url: str) -> int:
    """PostgreSQL publishes its counters within about a second: read until they stop moving
    but for the gateway's own loops (which look for waiting rooms once a second)."""
    last = await _transactions(url)
    while True:
        await asyncio.sleep(1.2)
        now = await _transactions(url)
        if now - last < 20:
            return now
        last = now


async def test_unknown_sale_ids_cost_no_postgres_query(
    settings: Settings, service_urls: dict[str, str], redis_client: RedisClient
) -> None:
    """Before: every unknown sale id cost a PostgreSQL query (the sale's rate limits), so a
    flood of invented ids saturated the pool. The gateway gets a database of its own, so that
    every transaction counted there is its own."""
    url = await fresh_database(service_urls["FLASHSALE_DATABASE_URL"], "flashsale_sec_unknown")
    own = {**service_urls, "FLASHSALE_DATABASE_URL": url}
    limited = {"FLASHSALE_RATE_PER_CLIENT_PER_S": "5"}  # limits on: buckets would be written
    with production_gateway(settings, own, **limited) as (gw, shop):
        before = await _settled_transactions(url)
        paths = [f"/v1/sales/nope-{i}/holds" for i in range(UNKNOWN)]
        body = {"items": [{"sku": "A", "qty": 1}]}
        gate = asyncio.Semaphore(50)  # as many in flight as connections: no pool queue

        async def post(http: httpx.AsyncClient, i: int, path: str) -> httpx.Response:
            async with gate:
                return await http.post(path, json=body, headers=shop.as_customer(f"c{i}"))

        async with client(gw, max_connections=50) as http:
            replies = await asyncio.gather(*(post(http, i, p) for i, p in enumerate(paths)))
        assert all(r.status_code == 404 and r.json()["code"] == "NOT_FOUND" for r in replies)
        spent = await _settled_transactions(url) - before
    assert spent < UNKNOWN // 10, f"{spent} PostgreSQL transactions for {UNKNOWN} unknown ids"
    written = [k async for k in redis_client.scan_iter(match="*{nope-*")]
    assert written == [], f"keys written for unknown sales: {written[:3]}"


async def test_a_limit_that_cannot_be_read_is_counted_and_logged(
    fake_client: RedisClient, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: when PostgreSQL could not say a sale's limits, they were skipped in silence."""
    engine = Engine(fake_client, settings)
    sale = new_sale_id("unread")
    await open_sale(engine, room_config(sale))
    pool = await asyncpg.create_pool("postgresql://nobody@127.0.0.1:1/none", min_size=0)
    before = REGISTRY.get_sample_value("flashsale_rate_limit_unreadable_total") or 0
    limits = RateLimits(settings, RateLimiter(engine), SaleRecords(pool))
    scope = {"type": "http", "client": ("203.0.113.5", 1), "headers": []}
    with caplog.at_level(logging.WARNING, logger="flashsale.rate_limits"):
        await limits.take(scope, sale, "checkout", "alice")
    await pool.close()
    assert REGISTRY.get_sample_value("flashsale_rate_limit_unreadable_total") == before + 1
    assert b"flashsale_rate_limit_unreadable_total" in render([], {})
    assert "rate limits of" in caplog.text


async def test_an_admission_token_expires_by_redis_time(engine: Engine) -> None:
    """Before: reserve.lua took the gateway's word for the token's expiry."""
    sale = new_sale_id("expiry")
    await open_sale(engine, room_config(sale))
    state = await engine.stock(sale)
    assert state is not None
    lapsed = TokenUse(place=1, max_attempts=5, expires_at_ms=state.now_ms - 1)
    before = await snapshot(engine.client, sale)
    result = await engine.reserve(sale, "alice", [("A", 1)], "k1", token=lapsed)
    assert result.code is Code.TOKEN_EXPIRED
    assert await snapshot(engine.client, sale) == before
    fresh = dataclasses.replace(lapsed, expires_at_ms=state.now_ms + 60_000)
    assert (await engine.reserve(sale, "alice", [("A", 1)], "k1", token=fresh)).ok


async def test_room_keys_expire_after_the_sale(engine: Engine, settings: Settings) -> None:
    """Before: a room's tickets and admissions stayed in Redis for ever."""
    retention_ms = settings.room_retention_s * 1000
    with_end = new_sale_id("ends")
    config = room_config(with_end)
    await open_sale(engine, config)
    state = await engine.stock(with_end)
    assert state is not None
    ends = dataclasses.replace(config, version=2, ends_at_ms=state.now_ms + 3_600_000)
    assert (await engine.load_sale(ends)).code == "OK"
    room = WaitingRoom(engine)
    assert (await room.queue_join(with_end, "alice")).code is Code.OK
    room_keys = (keys.room(with_end), keys.room_tickets(with_end), keys.room_who(with_end))
    for key in room_keys:
        left_ms = await engine.client.pttl(key)
        assert 3_600_000 + retention_ms - 60_000 < left_ms <= 3_600_000 + retention_ms, key
    # The end moves out by an hour after the last join: the next admission tick follows it.
    later = dataclasses.replace(ends, version=3, ends_at_ms=ends.ends_at_ms + 3_600_000)
    assert (await engine.load_sale(later)).code == "OK"
    tick = RoomConfig(admit_rate_per_s=1, max_active=1, session_ms=60_000, ghost_after_ms=60_000)
    await room.queue_admit(with_end, "test-loop", tick)
    for key in room_keys:
        left_ms = await engine.client.pttl(key)
        assert 7_200_000 + retention_ms - 60_000 < left_ms <= 7_200_000 + retention_ms, key
    assert 0 < await engine.client.pttl(keys.room_lease(with_end)) <= tick.lease_ms
    no_end = new_sale_id("noend")
    await open_sale(engine, room_config(no_end))
    assert (await room.queue_join(no_end, "bob")).code is Code.OK
    assert await engine.client.pttl(keys.room_tickets(no_end)) == -1  # open-ended: kept
    code, _ = await engine.set_status(no_end, "closed")
    assert code is Code.OK
    for key in (keys.room(no_end), keys.room_tickets(no_end), keys.room_who(no_end)):
        assert 0 < await engine.client.pttl(key) <= retention_ms, key
    await engine.client.pexpire(keys.room(no_end), 5_000)  # as if most of the time had passed
    assert (await engine.set_status(no_end, "closed"))[0] is Code.OK  # closing again...
    assert await engine.client.pttl(keys.room(no_end)) <= 5_000  # ...gives no more time


async def test_every_route_of_an_unknown_sale_answers_404(prod: tuple[Gateway, Shop]) -> None:
    gw, shop = prod
    alice = shop.as_customer("alice")
    body = {"items": [{"sku": "A", "qty": 1}]}
    async with client(gw) as http:
        assert_problem(await http.post("/v1/sales/nope-x/queue", headers=alice), 404, "NOT_FOUND")
        checkout = await http.post("/v1/sales/nope-x/holds", json=body, headers=alice)
        assert_problem(checkout, 404, "NOT_FOUND")
        release = await http.post("/v1/sales/nope-x/holds/h1/release", headers=alice)
        assert_problem(release, 404, "NOT_FOUND")


async def test_status_polls_are_limited_per_address(
    settings: Settings, service_urls: dict[str, str]
) -> None:
    """The status poll costs no Redis call; its bucket is per address, in each worker."""
    extra = {
        "FLASHSALE_RATE_STATUS_PER_S": "1",
        "FLASHSALE_RATE_STATUS_BURST": "3",
        "FLASHSALE_TRUSTED_PROXIES": "127.0.0.1",
    }
    with production_gateway(settings, service_urls, **extra) as (gw, shop):
        sale = new_sale_id("polls")
        async with client(gw, max_connections=1) as http:  # one connection: one worker
            body = room_body(10, rate=1)
            put = await http.put(f"/v1/admin/sales/{sale}", json=body, headers=shop.admin)
            assert put.is_success
            joined = await http.post(f"/v1/sales/{sale}/queue", headers=shop.as_customer("a"))
            status = joined.json()["status_url"]
            here = {"X-Forwarded-For": "198.51.100.7"}
            polls = [(await http.get(status, headers=here)).status_code for _ in range(6)]
            assert polls[:3] == [200, 200, 200] and 429 in polls[3:], polls
            there = {"X-Forwarded-For": "198.51.100.8"}
            assert (await http.get(status, headers=there)).status_code == 200


async def test_order_views_are_limited_per_customer(
    prod: tuple[Gateway, Shop], gateway_db: Connection
) -> None:
    """Every order view reads PostgreSQL: one customer cannot make it do so without end."""
    gw, shop = prod
    async with client(gw, max_connections=1) as http:  # one connection: one worker's bucket
        sale = new_sale_id("views")
        body = room_body(10, room=False)
        assert (await http.put(f"/v1/admin/sales/{sale}", json=body, headers=shop.admin)).is_success
        order_id = new_sale_id("ord")
        await seed_order(gateway_db, sale, order_id, "alice")
        alice = shop.as_customer("alice")
        views = [(await http.get(f"/v1/orders/{order_id}", headers=alice)) for _ in range(15)]
        codes = [v.status_code for v in views]
        assert codes[:10] == [200] * 10 and 429 in codes[10:], codes
        assert int(next(v for v in views if v.status_code == 429).headers["Retry-After"]) >= 1
        bob = await http.get(f"/v1/orders/{order_id}", headers=shop.as_customer("bob"))
        assert_problem(bob, 404, "NOT_FOUND")  # bob's own bucket; alice's order is not his
