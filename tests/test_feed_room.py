"""store/saga/feed_room.py on a real PostgreSQL: the room a feed level leaves, claimed by many
allocation steps at once, given back, closed, and forgotten by a newer level."""

from __future__ import annotations

import asyncio

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints

from flashsale.engine import Engine
from flashsale.store.db import Connection
from flashsale.store.feed_intake import receive
from flashsale.store.saga.feed_room import NO_LEVEL, FeedRoom
from tests.feed_helpers import at, configure, delivery, supplier_id


async def allocated_since(conn: Connection, supplier: str) -> int:
    found = await conn.fetchval(
        "SELECT allocated_since FROM feed_levels WHERE supplier_id = $1 AND sku = 'A'", supplier
    )
    return int(found)


async def test_fifty_concurrent_claims_on_a_room_of_17_grant_exactly_17(
    test_url: str, conn: Connection, live_engine: Engine
) -> None:
    p = supplier_id("p")
    await configure(conn, p, {"P-A": "A"})
    await receive(conn, live_engine, delivery(p, "level", ("P-A", 17), as_of=at(0)))
    pool = await asyncpg.create_pool(test_url, min_size=10, max_size=50)
    try:
        room = FeedRoom(pool)
        answers = await asyncio.gather(*(room.claim(p, "A", 1) for _ in range(50)))
        granted = [a.claim for a in answers if a.claim is not None]
        assert len(granted) == 17
        assert sum(not a.ask for a in answers) == 33  # FEED_SHORT: not asked at all
        assert await allocated_since(conn, p) == 17
        await asyncio.gather(*(room.give_back(c) for c in granted[:5]))  # 5 refused
        assert await allocated_since(conn, p) == 12
        again = await asyncio.gather(*(room.claim(p, "A", 2) for _ in range(10)))
        assert sum(a.claim is not None for a in again) == 2  # 5 units left: two lines of 2
        assert await allocated_since(conn, p) == 16
        await room.close(granted[5])  # OUT_OF_STOCK: the level's room is gone
        assert await allocated_since(conn, p) == 17
        assert not (await room.claim(p, "A", 1)).ask
        await receive(conn, live_engine, delivery(p, "newer", ("P-A", 4), as_of=at(60)))
        assert await allocated_since(conn, p) == 0  # a newer level forgets old claims
        await room.give_back(granted[6])  # a claim of the old level changes nothing now
        assert await allocated_since(conn, p) == 0
        assert await room.claim(supplier_id("unfed"), "A", 1) == NO_LEVEL
    finally:
        await pool.close()
