"""lua/apply_feed.lua through the engine: the offer math, the events, the invariants, and
concurrent reserves racing the feed, on fakeredis, a real Redis and the cluster."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from flashsale.engine import Engine, keys
from flashsale.engine.connection import RedisClient
from flashsale.engine.errors import InvalidInput
from flashsale.engine.feeds import FeedChange, FeedRef, FeedRow
from tests.helpers import assert_sound, open_sale, sale_config, sku_stock

REF = FeedRef("webhook", "d-1", 1_790_000_000_000)


async def feed(engine: Engine, sale_id: str, *rows: FeedRow) -> list[FeedChange]:
    return await engine.apply_feed(sale_id, list(rows), REF)


async def supplier(engine: Engine, sale_id: str, sku: str, sup: str) -> tuple[int, int, int, int]:
    s = next(x for x in (await sku_stock(engine, sale_id, sku)).suppliers if x.supplier == sup)
    return s.available, s.reserved, s.sold, s.adjusted


async def test_a_cut_and_a_restore_up_to_what_was_loaded(engine: Engine, sale_id: str) -> None:
    await open_sale(engine, sale_config(sale_id))  # A: p 60, q 40
    [cut] = await feed(engine, sale_id, FeedRow("A", "p", 10, 0))
    assert cut == FeedChange("A", "p", "OK", 60, 10, 0)
    assert await supplier(engine, sale_id, "A", "p") == (10, 0, 0, -50)
    [back] = await feed(engine, sale_id, FeedRow("A", "p", 500, 0))
    assert (back.before, back.after) == (10, 60)  # never above what was loaded
    assert await supplier(engine, sale_id, "A", "p") == (60, 0, 0, 0)
    assert (await sku_stock(engine, sale_id, "A")).available == 100
    await assert_sound(engine, sale_id)


async def test_sold_and_held_units_come_off_the_on_hand(engine: Engine, sale_id: str) -> None:
    await open_sale(engine, sale_config(sale_id, limit=10))
    bought = await engine.reserve(sale_id, "c1", [("A", 3)])
    assert (await engine.confirm(sale_id, bought.hold_id)).code == "OK"
    assert (await engine.reserve(sale_id, "c2", [("A", 2)])).ok  # held at p
    # 3 sold and not allocated, 2 held: 10 on hand leaves 5 to offer.
    [row] = await feed(engine, sale_id, FeedRow("A", "p", 10, 0))
    assert (row.after, row.shortfall) == (5, 0)
    # Once the 3 sold units are allocated at p (settled), p's on_hand no longer counts them.
    [row] = await feed(engine, sale_id, FeedRow("A", "p", 10, 3))
    assert (row.after, row.shortfall) == (8, 0)
    # Below what is sold and held: nothing on offer, the shortfall is what the saga reroutes.
    [row] = await feed(engine, sale_id, FeedRow("A", "p", 2, 0))
    assert (row.after, row.shortfall) == (0, 3)
    # Settled beyond sold (allocations written before the stream's confirmations): no credit.
    [row] = await feed(engine, sale_id, FeedRow("A", "p", 4, 9))
    assert (row.after, row.shortfall) == (2, 0)
    # The ceiling: loaded 60 - 2 held - 3 sold.
    [row] = await feed(engine, sale_id, FeedRow("A", "p", 10_000, 0))
    assert row.after == 55
    assert await supplier(engine, sale_id, "A", "p") == (55, 2, 3, 0)
    await assert_sound(engine, sale_id)


async def test_each_change_is_one_event_naming_the_delivery(
    engine: Engine, sale_id: str, backend: RedisClient
) -> None:
    await open_sale(engine, sale_config(sale_id, {"A": [("p", 5), ("q", 5)], "B": [("p", 5)]}))
    changes = await feed(
        engine,
        sale_id,
        FeedRow("A", "p", 1, 0),
        FeedRow("A", "q", 5, 0),  # unchanged: no event
        FeedRow("B", "p", 0, 0),
        FeedRow("B", "zz", 3, 0),
        FeedRow("Z", "p", 3, 0),
    )
    assert [c.code for c in changes] == ["OK", "OK", "OK", "UNKNOWN_SUPPLIER", "UNKNOWN_SKU"]
    entries = cast(list[Any], await backend.xrange(keys.events(sale_id)))
    events = [f for _, f in entries if f["type"] == "adjusted"]
    assert [(e["sku"], e["supplier"], e["applied"]) for e in events] == [
        ("A", "p", "-4"),
        ("B", "p", "-5"),
    ]
    assert events[0]["reason"] == f"feed webhook delivery d-1 as_of_ms {REF.as_of_ms}"
    assert events[0]["delivery"] == "d-1"
    await assert_sound(engine, sale_id)


async def test_bad_rows_are_refused_before_redis(engine: Engine, sale_id: str) -> None:
    await open_sale(engine, sale_config(sale_id))
    for row in (FeedRow("A", "p", -1, 0), FeedRow("A b", "p", 1, 0), FeedRow("A", "p", 1, -2)):
        with pytest.raises(InvalidInput):
            await feed(engine, sale_id, row)
    with pytest.raises(InvalidInput):
        await engine.apply_feed(sale_id, [FeedRow("A", "p", 1, 0)], FeedRef("x", "d", 1))
    assert await supplier(engine, sale_id, "A", "p") == (60, 0, 0, 0)


@pytest.mark.parametrize("backend", ["redis", "cluster"], indirect=True)
async def test_reserves_racing_cuts_never_oversell_the_latest_feed(
    engine: Engine, sale_id: str
) -> None:
    """200 single-unit reserves race a feed that cuts p to 5, restores it to 60 and ends at 12;
    q has no feed. Whatever the interleaving, what p holds and sold after the last feed is
    exactly what that feed allowed: 12, or what was already taken (its shortfall) and none
    more; and every reserve that won holds a unit."""
    await open_sale(engine, sale_config(sale_id, {"A": [("p", 60), ("q", 40)]}, limit=1))
    last: list[FeedChange] = []

    async def shopper(i: int) -> bool:
        return (await engine.reserve(sale_id, f"c{i}", [("A", 1)])).ok

    async def feeds() -> None:
        for on_hand in (5, 60, 30, 5, 60, 12):
            last[:] = await feed(engine, sale_id, FeedRow("A", "p", on_hand, 0))
            await asyncio.sleep(0)

    results = await asyncio.gather(*(shopper(i) for i in range(200)), feeds())
    won = sum(1 for r in results[:200] if r)
    avail, resv, sold, _ = await supplier(engine, sale_id, "A", "p")
    q_avail, q_resv, _, _ = await supplier(engine, sale_id, "A", "q")
    [final] = last
    assert avail + resv + sold == 12 + final.shortfall
    if final.shortfall:
        assert avail == 0
    assert won == resv + q_resv
    assert q_avail + q_resv == 40
    assert won == min(200, 40 + resv)
    await assert_sound(engine, sale_id)
