"""store/feed_intake.py against a real PostgreSQL and a real Redis: idempotent deliveries,
newest as_of wins across deliveries, quarantine and replay, health counters, the ledger, and
deliveries racing each other over many connections."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any, cast

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import pytest

from flashsale.engine import Engine, keys
from flashsale.engine.errors import EngineUnavailable, InvalidInput
from flashsale.engine.events import AdjustEvent, decode
from flashsale.engine.feeds import FeedChange, FeedRef, FeedRow, Thresholds
from flashsale.store import feeds
from flashsale.store.db import Connection
from flashsale.store.feed_intake import (
    DeliveryNotFound,
    apply_to_sale,
    receive,
    replay,
)
from flashsale.store.flush import flush
from flashsale.store.sales import set_status
from tests.feed_helpers import T0_MS, at, configure, delivery, stored_sale, supplier_id
from tests.helpers import assert_sound, sku_stock
from tests.saga_support import confirm_orders


async def offer(engine: Engine, sale_id: str, sku: str, sup: str) -> int:
    stock = await sku_stock(engine, sale_id, sku)
    return next(s.available for s in stock.suppliers if s.supplier == sup)


async def test_a_delivery_sets_the_offer_once(
    conn: Connection, live_engine: Engine, sale_id: str
) -> None:
    p = supplier_id("p")
    await stored_sale(conn, live_engine, sale_id, {"A": [(p, 60)], "B": [(p, 10)]})
    await configure(conn, p, {"P-A": "A", "P-B6": ("B", 6)})
    first = await receive(conn, live_engine, delivery(p, "d1", ("P-A", 7), ("P-B6", 1), ("X", 3)))
    assert (first.duplicate, first.applied, first.unknown, first.sales) == (False, 2, 1, 1)
    assert await offer(live_engine, sale_id, "A", p) == 7
    assert await offer(live_engine, sale_id, "B", p) == 6
    again = await receive(conn, live_engine, delivery(p, "d1", ("P-A", 50)))
    assert again.duplicate and again.counts() == dict.fromkeys(again.counts(), 0)
    assert await offer(live_engine, sale_id, "A", p) == 7
    h = await feeds.health(conn, p)
    assert h is not None
    assert dict(h.deliveries) == {"accepted": 1, "duplicate": 1}
    assert dict(h.records) == {
        "applied": 2,
        "stale": 0,
        "quarantined": 0,
        "unknown": 1,
        "duplicate": 0,
    }
    assert h.last_applied_ms is not None and h.last_as_of_ms is not None
    assert h.last_lag_ms is not None and h.last_lag_ms > 0
    await assert_sound(live_engine, sale_id)


async def test_the_ledger_names_the_feed_the_delivery_and_as_of(
    conn: Connection, live_engine: Engine, sale_id: str
) -> None:
    p = supplier_id("p")
    await stored_sale(conn, live_engine, sale_id, {"A": [(p, 60)]})
    await configure(conn, p, {"P-A": "A"})
    await receive(conn, live_engine, delivery(p, "cut-1", ("P-A", 15), as_of=at(5)))
    entries = cast(list[Any], await live_engine.client.xrange(keys.events(sale_id)))
    await flush(conn, sale_id, decode([(str(i), dict(f)) for i, f in entries]).events)
    row = await conn.fetchrow(
        "SELECT qty, reason FROM stock_movements WHERE sale_id = $1 AND kind = 'adjust'", sale_id
    )
    assert row["qty"] == -45
    assert row["reason"].startswith("feed webhook delivery cut-1 as_of_ms ")
    level = await conn.fetchval(
        "SELECT adjusted FROM stock_levels WHERE sale_id = $1 AND supplier_id = $2", sale_id, p
    )
    assert level == -45


async def test_an_older_delivery_arriving_late_is_stale(
    conn: Connection, live_engine: Engine, sale_id: str
) -> None:
    p = supplier_id("p")
    await stored_sale(conn, live_engine, sale_id, {"A": [(p, 60)]})
    await configure(conn, p, {"P-A": "A"})
    newer = await receive(conn, live_engine, delivery(p, "d2", ("P-A", 30), as_of=at(60)))
    older = await receive(conn, live_engine, delivery(p, "d1", ("P-A", 5), as_of=at(0)))
    assert (newer.applied, older.applied, older.stale) == (1, 0, 1)
    assert await offer(live_engine, sale_id, "A", p) == 30


async def test_quarantine_is_listed_and_a_replay_applies_it_once(
    conn: Connection, live_engine: Engine, sale_id: str
) -> None:
    p = supplier_id("p")
    await stored_sale(conn, live_engine, sale_id, {"A": [(p, 100)], "B": [(p, 100)]})
    spiky = Thresholds(max_spike_pct=100, max_drop_pct=50, min_base_units=10)
    await configure(conn, p, {"P-A": "A", "P-B": "B"}, thresholds=spiky)
    await receive(conn, live_engine, delivery(p, "base", ("P-A", 20), ("P-B", 20)))
    wild = f"wild-{p}"  # delivery ids are unique per supplier; replay may name only the id
    held = await receive(
        conn, live_engine, delivery(p, wild, ("P-A", 90), ("P-B", "-4"), as_of=at(10))
    )
    assert (held.applied, held.quarantined) == (0, 2)
    listed = await feeds.open_quarantine(conn, p)
    assert sorted((r["supplier_sku"], r["reason"], r["on_hand"]) for r in listed) == [
        ("P-A", "spike", "90"),
        ("P-B", "negative", "-4"),
    ]
    assert await offer(live_engine, sale_id, "A", p) == 20
    done = await replay(conn, live_engine, wild)
    assert (done.applied, done.quarantined) == (1, 1)  # the negative stays held
    assert await offer(live_engine, sale_id, "A", p) == 90
    assert [r["reason"] for r in await feeds.open_quarantine(conn, p)] == ["negative"]
    for _ in range(3):  # the negative is still held, not held anew: listed and counted once
        again = await replay(conn, live_engine, wild, p)
        assert (again.applied, again.quarantined) == (0, 1)
    rows = await conn.fetch(
        "SELECT supplier_sku, status FROM feed_quarantine WHERE supplier_id = $1 "
        "AND delivery_id = $2 ORDER BY supplier_sku",
        p,
        wild,
    )
    assert [(r["supplier_sku"], r["status"]) for r in rows] == [
        ("P-A", "replayed"),
        ("P-B", "open"),
    ]
    h = await feeds.health(conn, p)
    assert h is not None and (h.records["quarantined"], h.quarantine_open) == (2, 1)
    assert h.records["applied"] == 3  # the base's two and the reviewed spike
    with pytest.raises(DeliveryNotFound):
        await replay(conn, live_engine, "never-sent")
    other = supplier_id("o")  # the same delivery id at another supplier: name the supplier
    await configure(conn, other, {"O-A": "A"})
    await receive(conn, live_engine, delivery(other, wild, ("O-A", 1)))
    with pytest.raises(InvalidInput):
        await replay(conn, live_engine, wild)
    await assert_sound(live_engine, sale_id)


async def test_a_far_future_record_does_not_freeze_the_feed(
    conn: Connection, live_engine: Engine, sale_id: str
) -> None:
    p = supplier_id("p")
    await stored_sale(conn, live_engine, sale_id, {"A": [(p, 60)]})
    await configure(conn, p, {"P-A": "A"})
    wrong = await receive(
        conn, live_engine, delivery(p, "clock-skew", ("P-A", 50), as_of="2062-01-01T00:00:00Z")
    )
    assert (wrong.applied, wrong.quarantined) == (0, 1)
    assert [r["reason"] for r in await feeds.open_quarantine(conn, p)] == ["future as_of"]
    real = await receive(conn, live_engine, delivery(p, "real", ("P-A", 12), as_of=at(0)))
    assert (real.applied, real.stale) == (1, 0)
    assert await offer(live_engine, sale_id, "A", p) == 12


class Broken:
    """Redis that fails on the apply."""

    async def apply_feed(
        self, sale_id: str, rows: Sequence[FeedRow], ref: FeedRef
    ) -> list[FeedChange]:
        raise EngineUnavailable("down")


async def test_redis_failing_stores_nothing_and_the_same_delivery_comes_again(
    conn: Connection, live_engine: Engine, sale_id: str
) -> None:
    p = supplier_id("p")
    await stored_sale(conn, live_engine, sale_id, {"A": [(p, 60)]})
    await configure(conn, p, {"P-A": "A"})
    with pytest.raises(EngineUnavailable):
        await receive(conn, Broken(), delivery(p, "d1", ("P-A", 9)))
    assert (
        await conn.fetchval("SELECT count(*) FROM feed_deliveries WHERE supplier_id = $1", p) == 0
    )
    assert await conn.fetchval("SELECT count(*) FROM feed_levels WHERE supplier_id = $1", p) == 0
    done = await receive(conn, live_engine, delivery(p, "d1", ("P-A", 9)))
    assert (done.duplicate, done.applied) == (False, 1)
    assert await offer(live_engine, sale_id, "A", p) == 9


class AppliedThenLost:
    """Redis is written, then PostgreSQL fails before the commit (the connection drops)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def apply_feed(
        self, sale_id: str, rows: Sequence[FeedRow], ref: FeedRef
    ) -> list[FeedChange]:
        await self.engine.apply_feed(sale_id, rows, ref)
        raise ConnectionResetError("the commit never came")


async def test_redis_written_then_postgresql_failing_a_retry_changes_nothing(
    conn: Connection, live_engine: Engine, sale_id: str
) -> None:
    """The offer is an absolute value computed in Redis: the retried delivery computes the same
    one and changes nothing, and the ledger (written from the stream) holds the one change."""
    p = supplier_id("p")
    await stored_sale(conn, live_engine, sale_id, {"A": [(p, 60)]})
    await configure(conn, p, {"P-A": "A"})
    with pytest.raises(ConnectionResetError):
        await receive(conn, AppliedThenLost(live_engine), delivery(p, "d1", ("P-A", 15)))
    assert await offer(live_engine, sale_id, "A", p) == 15  # Redis has it
    assert await conn.fetchval("SELECT count(*) FROM feed_levels WHERE supplier_id = $1", p) == 0
    done = await receive(conn, live_engine, delivery(p, "d1", ("P-A", 15)))
    assert (done.duplicate, done.applied, done.sales) == (False, 1, 1)
    assert await offer(live_engine, sale_id, "A", p) == 15
    entries = cast(list[Any], await live_engine.client.xrange(keys.events(sale_id)))
    events = decode([(str(i), dict(f)) for i, f in entries]).events
    assert sum(isinstance(e, AdjustEvent) for e in events) == 1  # the retry moved nothing
    await flush(conn, sale_id, events)
    moved = await conn.fetch(
        "SELECT qty FROM stock_movements WHERE sale_id = $1 AND kind = 'adjust'", sale_id
    )
    assert [r["qty"] for r in moved] == [-45]
    level = await conn.fetchval(
        "SELECT adjusted FROM stock_levels WHERE sale_id = $1 AND supplier_id = $2", sale_id, p
    )
    stock = await sku_stock(live_engine, sale_id, "A")
    assert level == -45 == next(s.adjusted for s in stock.suppliers if s.supplier == p)
    await assert_sound(live_engine, sale_id)


async def test_an_unconfigured_supplier_is_refused(conn: Connection, live_engine: Engine) -> None:
    with pytest.raises(feeds.FeedNotConfigured):
        await receive(conn, live_engine, delivery(supplier_id("nobody"), "d1", ("X", 1)))
    polled = supplier_id("polled")
    await configure(conn, polled, {"X": "A"}, kind="poll")
    with pytest.raises(feeds.FeedNotConfigured):  # a webhook delivery to a poll feed
        await receive(conn, live_engine, delivery(polled, "d1", ("X", 1)))
    assert (
        await conn.fetchval("SELECT count(*) FROM feed_deliveries WHERE supplier_id = $1", polled)
        == 0
    )


async def test_closed_sales_are_left_alone_and_new_ones_take_the_level(
    conn: Connection, live_engine: Engine, sale_id: str
) -> None:
    p = supplier_id("p")
    closed, later = f"{sale_id}-closed", f"{sale_id}-later"
    await stored_sale(conn, live_engine, closed, {"A": [(p, 60)]})
    await set_status(conn, closed, "closed")
    await configure(conn, p, {"P-A": "A"})
    done = await receive(conn, live_engine, delivery(p, "d1", ("P-A", 4)))
    assert done.sales == 0
    assert await offer(live_engine, closed, "A", p) == 60
    await stored_sale(conn, live_engine, later, {"A": [(p, 60)]})
    assert await offer(live_engine, later, "A", p) == 60  # the store alone loads what it is given
    assert await apply_to_sale(conn, live_engine, later) == 1  # what PUT sale does next
    assert await offer(live_engine, later, "A", p) == 4


async def test_allocations_after_the_level_s_as_of_are_not_counted_twice(
    conn: Connection, live_engine: Engine, sale_id: str
) -> None:
    """10 sold from p; 4 of them allocated at p 10 s after the as_of of a level of 10. That
    snapshot still counts the 4, which no longer wait: p can ship 6 more, exactly what the 6
    waiting lines need, so nothing more is offered. A level dated after the allocations no
    longer counts them: its 10 leave 4 to offer."""
    p = supplier_id("p")
    await stored_sale(conn, live_engine, sale_id, {"A": [(p, 60)]})
    await configure(conn, p, {"P-A": "A"})
    await confirm_orders(live_engine, sale_id, [[("A", 1)]] * 10)
    entries = cast(list[Any], await live_engine.client.xrange(keys.events(sale_id)))
    await flush(conn, sale_id, decode([(str(i), dict(f)) for i, f in entries]).events)
    await conn.execute(
        "UPDATE order_allocations l SET status = 'allocated', supplier_id = hold_supplier, "
        "updated_at = $2 FROM (SELECT l2.order_id FROM order_allocations l2 JOIN orders o "
        "USING (order_id) WHERE o.sale_id = $1 ORDER BY l2.order_id LIMIT 4) four "
        "WHERE l.order_id = four.order_id",
        sale_id,
        feeds.at(T0_MS + 10_000),
    )
    before = await receive(conn, live_engine, delivery(p, "before", ("P-A", 10), as_of=at(0)))
    assert (before.applied, before.shortfall) == (1, 0)
    assert await offer(live_engine, sale_id, "A", p) == 0  # was 4: 4 units counted twice
    room = await conn.fetchval("SELECT allocated_since FROM feed_levels WHERE supplier_id = $1", p)
    assert room == 4
    after = await receive(conn, live_engine, delivery(p, "after", ("P-A", 10), as_of=at(20)))
    assert after.applied == 1
    assert await offer(live_engine, sale_id, "A", p) == 4
    room = await conn.fetchval("SELECT allocated_since FROM feed_levels WHERE supplier_id = $1", p)
    assert room == 0
    assert await apply_to_sale(conn, live_engine, sale_id) == 1  # a reload agrees
    assert await offer(live_engine, sale_id, "A", p) == 4
    await assert_sound(live_engine, sale_id)


async def test_a_level_the_map_no_longer_feeds_is_not_applied_to_a_new_sale(
    conn: Connection, live_engine: Engine, sale_id: str
) -> None:
    p = supplier_id("p")
    await configure(conn, p, {"P-A": "A", "P-B": "B"})
    await receive(conn, live_engine, delivery(p, "d1", ("P-A", 4), ("P-B", 5)))
    await configure(conn, p, {"P-B": "B"})  # A is no longer fed by p
    levels = await conn.fetch("SELECT sku FROM feed_levels WHERE supplier_id = $1", p)
    assert [r["sku"] for r in levels] == ["B"]
    await stored_sale(conn, live_engine, sale_id, {"A": [(p, 60)], "B": [(p, 60)]})
    assert await apply_to_sale(conn, live_engine, sale_id) == 1
    assert await offer(live_engine, sale_id, "A", p) == 60  # loaded, no old level
    assert await offer(live_engine, sale_id, "B", p) == 5


async def test_deliveries_racing_over_many_connections(
    test_url: str, conn: Connection, live_engine: Engine, sale_id: str
) -> None:
    """40 connections send 20 deliveries of one SKU with shuffled as_of, each twice: every
    delivery id is taken exactly once, the newest level wins, the offer follows it."""
    p = supplier_id("p")
    await stored_sale(conn, live_engine, sale_id, {"A": [(p, 1000)]})
    await configure(conn, p, {"P-A": "A"})
    order = list(range(20)) * 2
    random.Random(7).shuffle(order)
    pool = await asyncpg.create_pool(test_url, min_size=10, max_size=40)
    try:

        async def send(n: int) -> tuple[bool, int, int]:
            async with pool.acquire() as c:
                d = delivery(p, f"d{n}", ("P-A", 100 + n), as_of=at(n))
                r = await receive(c, live_engine, d)
                return r.duplicate, r.applied, r.stale

        results = await asyncio.gather(*(send(n) for n in order))
    finally:
        await pool.close()
    fresh = [r for r in results if not r[0]]
    assert len(fresh) == 20
    assert sum(r[1] + r[2] for r in fresh) == 20
    assert await offer(live_engine, sale_id, "A", p) == 119
    level = await conn.fetchrow(
        "SELECT on_hand, delivery_id FROM feed_levels WHERE supplier_id = $1", p
    )
    assert (level["on_hand"], level["delivery_id"]) == (119, "d19")
    h = await feeds.health(conn, p)
    assert h is not None and dict(h.deliveries) == {"accepted": 20, "duplicate": 20}
    await assert_sound(live_engine, sale_id)
