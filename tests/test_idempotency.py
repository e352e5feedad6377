"""One idempotency key gives at most one hold and the same answer, also when sent concurrently."""

from __future__ import annotations

import asyncio

from flashsale.engine import Code, Engine
from tests.helpers import assert_sound, open_sale, sale_config, sku_stock, snapshot


async def test_same_key_twice_gives_the_same_hold(engine: Engine, sale_id: str) -> None:
    await open_sale(engine, sale_config(sale_id))
    first = await engine.reserve(sale_id, "c1", [("A", 2)], "key-1")
    again = await engine.reserve(sale_id, "c1", [("A", 2)], "key-1")
    assert first.ok and again.ok and again.replay and not first.replay
    assert (again.hold_id, again.expires_at_ms, again.allocations) == (
        first.hold_id,
        first.expires_at_ms,
        first.allocations,
    )
    sku = await sku_stock(engine, sale_id, "A")
    assert sku.reserved == 2


async def test_same_key_other_cart_is_a_conflict_and_changes_nothing(
    engine: Engine, sale_id: str
) -> None:
    await open_sale(engine, sale_config(sale_id))
    first = await engine.reserve(sale_id, "c1", [("A", 1)], "key-1")
    before = await snapshot(engine.client, sale_id)
    other = await engine.reserve(sale_id, "c1", [("A", 2)], "key-1")
    assert other.code is Code.IDEMPOTENCY_CONFLICT and other.detail == first.hold_id
    assert await snapshot(engine.client, sale_id) == before


async def test_keys_are_scoped_per_customer(engine: Engine, sale_id: str) -> None:
    """Another shopper's client picking the same key gets its own hold, not a conflict that
    would reveal the first shopper's hold id."""
    await open_sale(engine, sale_config(sale_id))
    first = await engine.reserve(sale_id, "c1", [("A", 1)], "key-1")
    second = await engine.reserve(sale_id, "c2", [("A", 1)], "key-1")
    assert first.ok and second.ok and not second.replay
    assert first.hold_id != second.hold_id
    await assert_sound(engine, sale_id)


async def test_replay_after_confirm_still_answers_the_first_hold(
    engine: Engine, sale_id: str
) -> None:
    await open_sale(engine, sale_config(sale_id))
    first = await engine.reserve(sale_id, "c1", [("A", 1)], "key-1")
    assert (await engine.confirm(sale_id, first.hold_id)).code is Code.OK
    again = await engine.reserve(sale_id, "c1", [("A", 1)], "key-1")
    assert again.replay and again.hold_id == first.hold_id
    twice = await engine.confirm(sale_id, first.hold_id)
    assert twice.code is Code.OK and twice.replay and twice.status == "confirmed"
    await assert_sound(engine, sale_id)


async def test_concurrent_same_key_makes_exactly_one_hold(engine: Engine, sale_id: str) -> None:
    await open_sale(engine, sale_config(sale_id, limit=0))
    results = await asyncio.gather(
        *(engine.reserve(sale_id, "c1", [("A", 1)], "key-1") for _ in range(200))
    )
    assert {r.code for r in results} == {Code.OK}
    assert len({r.hold_id for r in results}) == 1
    assert sum(not r.replay for r in results) == 1
    sku = await sku_stock(engine, sale_id, "A")
    assert (sku.reserved, sku.available) == (1, 99)
    await assert_sound(engine, sale_id)
