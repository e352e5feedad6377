"""Exact counts under contention: 2,000 concurrent reservations for 100 units, then their end."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from flashsale.engine import Code, Engine
from flashsale.engine.connection import RedisClient, connect
from flashsale.engine.results import ReserveResult, SkuStock
from flashsale.engine.settings import Settings
from tests.helpers import assert_sound, open_sale, sale_config

CUSTOMERS = 1000
UNITS = 100  # supplier p 60, supplier q 40


async def _contend(engines: list[Engine], sale_id: str) -> list[ReserveResult]:
    """Every customer makes two attempts at once: even ones ask 2 then 1 unit, odd ones 1 and 1."""
    rng = random.Random(7)
    attempts = []
    for c in range(CUSTOMERS):
        for qty in (2, 1) if c % 2 == 0 else (1, 1):
            attempts.append((f"cust-{c}", qty))
    rng.shuffle(attempts)
    calls = [
        engines[i % len(engines)].reserve(sale_id, cust, [("A", qty)])
        for i, (cust, qty) in enumerate(attempts)
    ]
    return await asyncio.gather(*calls)


async def _lifecycle(engines: list[Engine], sale_id: str) -> None:
    engine = engines[0]
    await open_sale(engine, sale_config(sale_id, limit=2))
    results = await _contend(engines, sale_id)

    codes = Counter(r.code for r in results)
    held = [r for r in results if r.ok]
    assert len(results) == 2 * CUSTOMERS
    assert sum(a.qty for r in held for a in r.allocations) == UNITS
    assert set(codes) <= {Code.OK, Code.SOLD_OUT, Code.LIMIT_EXCEEDED}
    per_customer: Counter[str] = Counter()
    for r in held:
        hold = await engine.get_hold(sale_id, r.hold_id)
        assert hold is not None
        per_customer[hold.customer_id] += sum(a.qty for a in hold.allocations)
    assert max(per_customer.values()) <= 2
    state = await engine.stock(sale_id)
    assert state is not None
    sku = state.sku("A")
    assert (sku.available, sku.reserved, sku.sold) == (0, UNITS, 0)
    assert {s.supplier: s.reserved for s in sku.suppliers} == {"p": 60, "q": 40}
    await assert_sound(engine, sale_id)

    # Confirm a third, release a third (concurrently), let the rest expire.
    third = len(held) // 3
    confirmed, released, left = held[:third], held[third : 2 * third], held[2 * third :]
    outcomes = await asyncio.gather(
        *(engines[i % len(engines)].confirm(sale_id, r.hold_id) for i, r in enumerate(confirmed)),
        *(engines[i % len(engines)].release(sale_id, r.hold_id) for i, r in enumerate(released)),
    )
    assert all(o.code is Code.OK and not o.replay for o in outcomes)
    sold_units = sum(a.qty for r in confirmed for a in r.allocations)
    released_units = sum(a.qty for r in released for a in r.allocations)
    sku = await _stock(engine, sale_id)
    assert (sku.available, sku.sold) == (released_units, sold_units)
    assert sku.reserved == UNITS - sold_units - released_units
    await assert_sound(engine, sale_id)

    for e in engines:
        e.advance_clock(61_000)
    swept = await engine.sweep(sale_id)
    assert (swept.expired, swept.more) == (len(left), False)
    sku = await _stock(engine, sale_id)
    assert (sku.available, sku.reserved, sku.sold) == (UNITS - sold_units, 0, sold_units)
    late = await engine.confirm(sale_id, left[0].hold_id)
    assert late.code is Code.HOLD_EXPIRED
    await assert_sound(engine, sale_id)


async def _stock(engine: Engine, sale_id: str) -> SkuStock:
    state = await engine.stock(sale_id)
    assert state is not None
    return state.sku("A")


async def test_contention_on_redis(
    service_urls: dict[str, str], settings: Settings, sale_id: str
) -> None:
    clients = [connect(service_urls["FLASHSALE_REDIS_URL"]) for _ in range(4)]
    try:
        await _lifecycle([Engine(c, settings) for c in clients], sale_id)
    finally:
        for c in clients:
            await c.aclose()


@pytest.mark.cluster
async def test_contention_on_cluster(
    service_urls: dict[str, str], settings: Settings, sale_id: str
) -> None:
    clients = [connect(service_urls["FLASHSALE_REDIS_CLUSTER_URL"], cluster=True) for _ in range(4)]
    try:
        await _lifecycle([Engine(c, settings) for c in clients], sale_id)
    finally:
        for c in clients:
            await c.aclose()


async def test_contention_without_batching(
    redis_client: RedisClient, settings: Settings, sale_id: str
) -> None:
    """The unbatched path (one EVALSHA per call) gives the same exact count."""
    engine = Engine(redis_client, settings, batching=False)
    await open_sale(engine, sale_config(sale_id, limit=2))
    results = await _contend([engine], sale_id)
    assert sum(a.qty for r in results if r.ok for a in r.allocations) == UNITS
    await assert_sound(engine, sale_id)
