"""A feed that cuts a supplier below what was sold and not yet allocated there: the saga sends
those lines to the alternate at once, without asking the primary (its simulator records no
allocation call for them), before any allocation is refused. Real simulators over HTTP, real
Redis, a PostgreSQL database of its own."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import pytest

from flashsale.engine import Engine, Settings
from flashsale.engine.connection import RedisClient
from flashsale.engine.feeds import iso_of_ms
from flashsale.engine.invariants import check_sale
from flashsale.reconciler.audit import audit, render
from flashsale.store.feed_intake import apply_to_sale, receive
from tests.feed_helpers import at, configure, delivery, supplier_id
from tests.reconciler_support import create_sale, record
from tests.saga_support import (
    Sims,
    confirm_orders,
    free_base,
    fresh_database,
    quiet_saga_db,
    reconciler,
    saga_settings,
    simulators,
    wait_final,
)


@pytest.fixture(scope="module")
def feed_saga_url(service_urls: dict[str, str]) -> str:
    admin = service_urls["FLASHSALE_DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
    return asyncio.run(fresh_database(admin, "flashsale_feed_saga_test"))


@pytest.fixture(scope="module")
def ssettings(
    settings: Settings, feed_saga_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    base = free_base()
    return saga_settings(settings, base, feed_saga_url, str(tmp_path_factory.mktemp("sim")))


@pytest.fixture(scope="module")
def sims(ssettings: Settings) -> Iterator[Sims]:
    with simulators(ssettings):
        yield Sims(ssettings)


@pytest.fixture
async def pgc(feed_saga_url: str) -> AsyncIterator[asyncpg.Connection]:
    async with quiet_saga_db(feed_saga_url) as conn:
        yield conn


@pytest.fixture
def sengine(redis_client: RedisClient, ssettings: Settings) -> Engine:
    return Engine(redis_client, dataclasses.replace(ssettings, test_clock=False))


async def test_a_cut_reroutes_sold_lines_before_the_primary_is_asked(
    sims: Sims, sengine: Engine, pgc: asyncpg.Connection, ssettings: Settings, sale_id: str
) -> None:
    sims.reset()
    p, q = supplier_id("P"), supplier_id("Q")
    await create_sale(sengine, pgc, record(sale_id, {"A": [(p, 20), (q, 20)]}))
    await configure(pgc, p, {"P-A": "A"})
    sims.supplier(p, stock={"A": 3})  # the primary truly has 3 left: the feed says so
    sims.supplier(q, stock={"A": 100})
    held = await confirm_orders(sengine, sale_id, [[("A", 1)]] * 10)
    assert all(lines == [("A", p, 1)] for lines in held.values())  # all sold from p
    # 10 sold from p and not allocated; p now has 3: its offer goes to 0, 7 units short.
    cut = await receive(pgc, sengine, delivery(p, "cut", ("P-A", 3), as_of=at(0)))
    assert (cut.applied, cut.sales, cut.shortfall) == (1, 1, 7)
    state = await sengine.stock(sale_id)
    assert state is not None
    assert {s.supplier: s.available for s in state.sku("A").suppliers} == {p: 0, q: 20}

    async with reconciler(ssettings, sengine):
        final = await wait_final(pgc, sale_id, 10)
    assert set(final.values()) == {"FULFILLED"}
    calls = Counter((a["supplier_id"], a["code"]) for a in sims.allocation_requests())
    assert calls == {(p, "LOCKED"): 3, (q, "LOCKED"): 7}  # p never asked for the 7 it lacks
    lines = await pgc.fetch(
        "SELECT l.supplier_id, l.refused_by FROM order_allocations l JOIN orders o "
        "USING (order_id) WHERE o.sale_id = $1",
        sale_id,
    )
    assert Counter(r["supplier_id"] for r in lines) == {p: 3, q: 7}
    refusals = Counter(tuple(r["refused_by"]) for r in lines)
    assert refusals == {(): 3, (f"{p}:FEED_SHORT",): 7}  # no OUT_OF_STOCK anywhere
    room = await pgc.fetchrow(
        "SELECT on_hand, allocated_since FROM feed_levels WHERE supplier_id = $1", p
    )
    assert (room["on_hand"], room["allocated_since"]) == (3, 3)
    # A level dated before those 3 allocations still counts them: they are its room taken.
    late = await receive(pgc, sengine, delivery(p, "late", ("P-A", 5), as_of=at(60)))
    assert late.applied == 1
    room = await pgc.fetchrow(
        "SELECT on_hand, allocated_since FROM feed_levels WHERE supplier_id = $1", p
    )
    assert (room["on_hand"], room["allocated_since"]) == (5, 3)
    state = await sengine.stock(sale_id)
    assert state is not None
    assert {s.supplier: s.available for s in state.sku("A").suppliers} == {p: 2, q: 20}
    # A level dated after them no longer counts them, and the room is whole again.
    now = iso_of_ms(int(time.time() * 1000))
    back = await receive(pgc, sengine, delivery(p, "back", ("P-A", 5), as_of=now))
    assert back.applied == 1
    room = await pgc.fetchrow(
        "SELECT on_hand, allocated_since FROM feed_levels WHERE supplier_id = $1", p
    )
    assert (room["on_hand"], room["allocated_since"]) == (5, 0)
    state = await sengine.stock(sale_id)
    assert state is not None
    # 10 sold from p, 10 settled (3 allocated there, 7 rerouted): 5 on hand are offered again.
    assert {s.supplier: s.available for s in state.sku("A").suppliers} == {p: 5, q: 20}
    assert await check_sale(sengine, sale_id) == []
    found = await audit(sengine, pgc, sale_id)
    assert found.ok, found
    text = render(found, sale_id, 0)
    assert f"feed {p}: fresh, last update " in text
    assert (
        f"A/{p}: on_hand 5 - 0 allocated since; offered 5 + held 0 + sold not allocated 0" in text
    )


async def test_out_of_stock_closes_the_level_until_a_newer_one(
    sims: Sims, sengine: Engine, pgc: asyncpg.Connection, ssettings: Settings, sale_id: str
) -> None:
    """The feed says 10 but the supplier has 3: the 4th line hears OUT_OF_STOCK, and from then
    on the level has no room, so the 6 lines after it go to the alternate without asking the
    primary again (one saga step at a time, so the count is exact). A sale loaded again then
    takes nothing from the level either."""
    sims.reset()
    p, q = supplier_id("P"), supplier_id("Q")
    await create_sale(sengine, pgc, record(sale_id, {"A": [(p, 20), (q, 20)]}))
    await configure(pgc, p, {"P-A": "A"})
    sims.supplier(p, stock={"A": 3})
    sims.supplier(q, stock={"A": 100})
    await confirm_orders(sengine, sale_id, [[("A", 1)]] * 10)
    told = await receive(pgc, sengine, delivery(p, "told", ("P-A", 10), as_of=at(0)))
    assert (told.applied, told.shortfall) == (1, 0)

    one_at_a_time = dataclasses.replace(ssettings, saga_concurrency=1)
    async with reconciler(one_at_a_time, sengine):
        final = await wait_final(pgc, sale_id, 10)
    assert set(final.values()) == {"FULFILLED"}
    calls = Counter((a["supplier_id"], a["code"]) for a in sims.allocation_requests())
    assert calls == {(p, "LOCKED"): 3, (p, "OUT_OF_STOCK"): 1, (q, "LOCKED"): 7}
    lines = await pgc.fetch(
        "SELECT l.refused_by FROM order_allocations l JOIN orders o USING (order_id) "
        "WHERE o.sale_id = $1",
        sale_id,
    )
    assert Counter(tuple(r["refused_by"]) for r in lines) == {
        (): 3,
        (f"{p}:OUT_OF_STOCK",): 1,
        (f"{p}:FEED_SHORT",): 6,
    }
    room = await pgc.fetchrow(
        "SELECT on_hand, allocated_since FROM feed_levels WHERE supplier_id = $1", p
    )
    assert (room["on_hand"], room["allocated_since"]) == (10, 10)
    assert await apply_to_sale(pgc, sengine, sale_id) == 1
    state = await sengine.stock(sale_id)
    assert state is not None
    assert {s.supplier: s.available for s in state.sku("A").suppliers}[p] == 0
    assert await check_sale(sengine, sale_id) == []
