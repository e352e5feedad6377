"""The batcher: one answer per caller, a failure confined to its own calls, a flushed script cache
healed without the callers noticing."""

from __future__ import annotations

import asyncio

import pytest

from flashsale.engine import Code, Engine, EngineUnavailable, keys
from flashsale.engine.connection import RedisClient, connect
from flashsale.engine.settings import Settings
from tests.helpers import assert_sound, open_sale, sale_config, sku_stock


@pytest.mark.parametrize("batching", [True, False])
async def test_flushed_script_cache_heals(
    redis_client: RedisClient, settings: Settings, sale_id: str, batching: bool
) -> None:
    engine = Engine(redis_client, settings, batching=batching)
    await open_sale(engine, sale_config(sale_id))
    assert (await engine.reserve(sale_id, "c1", [("A", 1)])).ok
    await redis_client.script_flush()
    results = await asyncio.gather(
        *(engine.reserve(sale_id, f"c{i}", [("A", 1)]) for i in range(20))
    )
    assert all(r.ok for r in results)
    assert (await sku_stock(engine, sale_id, "A")).reserved == 21
    await assert_sound(engine, sale_id)


@pytest.mark.cluster
async def test_flushed_script_cache_heals_on_cluster(
    cluster_client: RedisClient, settings: Settings, sale_id: str
) -> None:
    engine = Engine(cluster_client, settings)
    await open_sale(engine, sale_config(sale_id))
    await cluster_client.script_flush()  # every primary forgets every script
    results = await asyncio.gather(
        *(engine.reserve(sale_id, f"c{i}", [("A", 1)]) for i in range(20))
    )
    assert all(r.ok for r in results)
    await assert_sound(engine, sale_id)


async def test_a_failing_call_fails_alone(
    redis_client: RedisClient, settings: Settings, sale_id: str
) -> None:
    engine = Engine(redis_client, settings)
    broken, healthy = sale_id + "-broken", sale_id + "-ok"
    await open_sale(engine, sale_config(broken))
    await open_sale(engine, sale_config(healthy))
    # A corrupt stock hash makes reserve.lua raise a script error for that sale only.
    await redis_client.hset(keys.stock(broken, "A"), "available", "not-a-number")
    calls = [engine.reserve(broken if i % 2 else healthy, f"c{i}", [("A", 1)]) for i in range(40)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    failed = results[1::2]
    passed = results[0::2]
    assert all(isinstance(r, EngineUnavailable) for r in failed), failed
    assert all(not isinstance(r, BaseException) and r.code is Code.OK for r in passed)
    assert engine.batcher is not None and engine.batcher.batches < 40  # they did share batches
    assert (await sku_stock(engine, healthy, "A")).reserved == 20
    await assert_sound(engine, healthy)
    with pytest.raises(EngineUnavailable):  # corrupt state is an infrastructure error
        await engine.stock(broken)
    await engine.forget_sale(broken)


@pytest.mark.parametrize("batching", [True, False])
async def test_unreachable_redis_is_an_error_not_a_hang(settings: Settings, batching: bool) -> None:
    client = connect("redis://127.0.0.1:1/0")  # nothing listens on port 1
    engine = Engine(client, settings, batching=batching)
    try:
        calls = [engine.reserve("s", f"c{i}", [("A", 1)]) for i in range(10)]
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
        assert all(isinstance(r, EngineUnavailable) for r in results), results
    finally:
        await client.aclose()


async def test_a_bug_in_the_batch_fails_its_calls_not_hangs_them(
    redis_client: RedisClient, settings: Settings, sale_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: only Redis-like failures settled the callers; any other exception left them
    waiting for ever."""
    engine = Engine(redis_client, settings)
    await open_sale(engine, sale_config(sale_id))
    assert engine.batcher is not None

    async def broken(batch: object) -> list[object]:
        raise ValueError("a bug")

    monkeypatch.setattr(engine.batcher, "_execute", broken)
    calls = [engine.reserve(sale_id, f"c{i}", [("A", 1)]) for i in range(20)]
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
    assert all(isinstance(r, EngineUnavailable) and "a bug" in str(r) for r in results), results
    monkeypatch.undo()
    assert (await engine.reserve(sale_id, "after", [("A", 1)])).code is Code.OK
    await assert_sound(engine, sale_id)
