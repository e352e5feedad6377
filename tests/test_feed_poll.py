"""The poller against the feed simulator over real HTTP, with a real PostgreSQL and Redis: a
200 applied, a 304 nothing, errors recorded and backed off, and three pollers racing for one
supplier making exactly one fetch per interval."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest

from flashsale.engine import Engine
from flashsale.engine.feeds import (
    FeedApplier,
    FeedChange,
    FeedConfig,
    FeedRef,
    FeedRow,
    SkuMapping,
    Thresholds,
)
from flashsale.reconciler.intake.poll import PollConfig, Poller, PollResult, retry_ms
from flashsale.store import feeds
from flashsale.store.db import Connection
from tests import feed_sim_helpers as sims
from tests.feed_helpers import LOOSE, stored_sale, supplier_id
from tests.feed_sim_helpers import sim_feed, sim_records
from tests.helpers import sku_stock

feed_sim, sim_http = sims.feed_sim, sims.sim_http  # the simulator's fixtures, for this module


POLLED: list[str] = []


@pytest.fixture(autouse=True)
async def retire_polled(conn: Connection) -> AsyncIterator[None]:
    """This module's poll feeds become file feeds after each test, so the reconcilers other
    tests start on this database do not poll a simulator that has gone."""
    yield
    while POLLED:
        await conn.execute(
            "UPDATE supplier_feeds SET kind = 'file', url = '', interval_s = 0 "
            "WHERE supplier_id = $1",
            POLLED.pop(),
        )


async def polled_sale(
    conn: Connection,
    engine: Engine,
    sale_id: str,
    feed_sim: str,
    interval_s: int = 1,
    thresholds: Thresholds = LOOSE,
) -> str:
    p = supplier_id("poll")
    await stored_sale(conn, engine, sale_id, {"A": [(p, 100)], "B": [(p, 100)]})
    url = f"{feed_sim}/feeds/{p}/stock"
    mapping = {"P-A": SkuMapping("A"), "P-B": SkuMapping("B", 2)}
    config = FeedConfig("poll", url, interval_s, "json", mapping, thresholds)
    await feeds.save_feed(conn, p, p, config, None)
    POLLED.append(p)
    return p


def poller(
    test_url: str, engine: FeedApplier, client: httpx.AsyncClient, supplier: str, **changes: Any
) -> Poller:
    config = PollConfig(test_url, 2.0, 1_000_000, 4_000, 100, tick_s=0.02)
    config = dataclasses.replace(config, only=frozenset({supplier}), **changes)
    return Poller(config, engine, client)


async def offers(engine: Engine, sale_id: str) -> tuple[int, int]:
    a, b = [await sku_stock(engine, sale_id, sku) for sku in "AB"]
    return a.available, b.available


async def wait_due(conn: Connection, supplier: str) -> None:
    """Until the lease says the next poll is due (the test waits the schedule out, no tricks)."""
    wait_s = await conn.fetchval(
        "SELECT extract(epoch FROM due_at - now()) FROM feed_poll_leases WHERE supplier_id = $1",
        supplier,
    )
    await asyncio.sleep(max(0.0, float(wait_s or 0)) + 0.01)  # no row yet: due now


async def test_a_200_is_applied_and_a_304_changes_nothing(
    conn: Connection, live_engine: Engine, sale_id: str, feed_sim: str, sim_http: Any, test_url: str
) -> None:
    p = await polled_sale(conn, live_engine, sale_id, feed_sim)
    await sim_feed(sim_http, p, stock={"P-A": 7, "P-B": 4})
    async with httpx.AsyncClient() as client:
        worker = poller(test_url, live_engine, client, p)
        (first,) = await worker.tick()
        assert first.status == "applied" and first.run is not None
        assert first.run.counts["applied"] == 2
        assert await offers(live_engine, sale_id) == (7, 8)  # P-B comes in packs of 2
        assert await worker.tick() == []  # not due before the interval has passed

        await wait_due(conn, p)
        (second,) = await worker.tick()
        assert second.status == "not_modified"
        await sim_http.post(f"/_sim/feeds/{p}/stock", json={"stock": {"P-A": 3}})
        await wait_due(conn, p)
        (third,) = await worker.tick()
        assert third.status == "applied"
        assert await offers(live_engine, sale_id) == (3, 8)
        await worker.close()
    seen = (await sim_records(sim_http, p))["fetches"]
    assert [f["status"] for f in seen] == [200, 304, 200]
    assert seen[0]["if_none_match"] is None and seen[1]["if_none_match"]
    kept = await conn.fetchval("SELECT count(*) FROM feed_deliveries WHERE supplier_id = $1", p)
    assert kept == 2  # the 304 handed nothing in
    state = await feeds.poll_state(conn, p)
    assert state is not None and state.etag and state.errors == 0


async def test_errors_are_recorded_backed_off_and_a_recovery_resets(
    conn: Connection, live_engine: Engine, sale_id: str, feed_sim: str, sim_http: Any, test_url: str
) -> None:
    p = await polled_sale(conn, live_engine, sale_id, feed_sim, interval_s=1)
    async with httpx.AsyncClient() as client:
        worker = poller(test_url, live_engine, client, p, timeout_s=0.3, max_bytes=2_000)
        outcomes: list[PollResult] = []
        cases: list[tuple[dict[str, Any], str]] = [
            ({"fail_share": 1.0}, "HTTP 503"),
            ({"delay_ms": 1000}, "ReadTimeout"),
            ({"stock": {f"P-{i}": i for i in range(200)}}, "larger than 2000 bytes"),
            ({"stock": {"P-A": 5}, "truncate_bytes": 30}, "FeedFileError"),  # a cut body
        ]
        for n, (config, why) in enumerate(cases, 1):
            await sim_feed(sim_http, p, **config)
            await wait_due(conn, p)
            (outcome,) = await worker.tick()
            outcomes.append(outcome)
            assert outcome.status == "error" and why in outcome.detail, outcome
            failures = await conn.fetchval(
                "SELECT failures FROM feed_poll_leases WHERE supplier_id = $1", p
            )
            assert failures == n
        state = await feeds.poll_state(conn, p)
        assert state is not None and state.errors == 4 and "FeedFileError" in state.last_error
        assert await offers(live_engine, sale_id) == (100, 100)  # nothing applied on the way

        await sim_feed(sim_http, p, stock={"P-A": 5})
        await wait_due(conn, p)
        (ok,) = await worker.tick()
        assert ok.status == "applied"
        assert await offers(live_engine, sale_id) == (5, 100)
        await worker.close()
    failures = await conn.fetchval(
        "SELECT failures FROM feed_poll_leases WHERE supplier_id = $1", p
    )
    assert failures == 0


async def stale(conn: Connection, supplier: str, sale_id: str) -> tuple[bool, bool]:
    """(the feed's health says stale, the sale's public view says updating)."""
    h = await feeds.health(conn, supplier)
    assert h is not None
    return h.stale, (await feeds.sale_feed_status(conn, sale_id)).updating


async def test_a_feed_answering_304_stays_fresh_and_errors_do_not(
    conn: Connection, live_engine: Engine, sale_id: str, feed_sim: str, sim_http: Any, test_url: str
) -> None:
    """Stock that does not change gets 304s and applies nothing: the supplier is still heard
    from, so the feed stays fresh; failing polls are not heard from."""
    quick = dataclasses.replace(LOOSE, stale_after_s=2)
    p = await polled_sale(conn, live_engine, sale_id, feed_sim, thresholds=quick)
    await sim_feed(sim_http, p, stock={"P-A": 7, "P-B": 4})
    async with httpx.AsyncClient() as client:
        worker = poller(test_url, live_engine, client, p)
        assert [r.status for r in await worker.tick()] == ["applied"]
        await asyncio.sleep(2.2)
        assert await stale(conn, p, sale_id) == (True, True)  # nothing heard for 2 s
        await wait_due(conn, p)
        assert [r.status for r in await worker.tick()] == ["not_modified"]
        assert await stale(conn, p, sale_id) == (False, False)
        await asyncio.sleep(2.2)
        await sim_feed(sim_http, p, fail_share=1.0)
        await wait_due(conn, p)
        assert [r.status for r in await worker.tick()] == ["error"]
        assert await stale(conn, p, sale_id) == (True, True)
        await worker.close()
    h = await feeds.health(conn, p)
    assert h is not None and h.last_poll_ms is not None and h.last_poll_error_ms is not None
    assert h.last_poll_error_ms > h.last_poll_ms and h.poll_errors == 1


class SlowApplier:
    """The engine, after a pause: a body that takes longer to apply than the lease lasts."""

    def __init__(self, engine: Engine, pause_s: float) -> None:
        self.engine, self.pause_s = engine, pause_s

    async def apply_feed(
        self, sale_id: str, rows: Sequence[FeedRow], ref: FeedRef
    ) -> list[FeedChange]:
        await asyncio.sleep(self.pause_s)
        return await self.engine.apply_feed(sale_id, rows, ref)


async def test_a_long_apply_keeps_its_lease_and_no_second_poll_starts(
    conn: Connection, live_engine: Engine, sale_id: str, feed_sim: str, sim_http: Any, test_url: str
) -> None:
    """A lease of 0.6 s (timeout 0.3 s + 0.3 s to apply), an apply of 1.5 s: the lease is
    renewed every 0.2 s, so a second poller finds nothing to claim until the first is done."""
    p = await polled_sale(conn, live_engine, sale_id, feed_sim)
    await sim_feed(sim_http, p, stock={"P-A": 7})
    short = {"timeout_s": 0.3, "apply_margin_ms": 300}
    async with httpx.AsyncClient() as client:
        slow = poller(test_url, SlowApplier(live_engine, 1.5), client, p, **short)
        other = poller(test_url, live_engine, client, p, **short)
        first = asyncio.create_task(slow.tick())
        claimed = []
        for _ in range(12):  # 1.2 s of looking, twice the lease
            await asyncio.sleep(0.1)
            claimed += await other.tick()
        assert [r.status for r in await first] == ["applied"]
        assert claimed == []
        await slow.close()
        await other.close()
    assert len((await sim_records(sim_http, p))["fetches"]) == 1
    assert (await offers(live_engine, sale_id))[0] == 7


def test_the_wait_after_failures_doubles_up_to_the_cap_with_full_jitter() -> None:
    assert [retry_ms(f, 1, 30_000, lambda: 1.0) for f in (1, 2, 3, 6, 20)] == [
        1000, 2000, 4000, 30_000, 30_000
    ]  # fmt: skip
    assert retry_ms(3, 1, 30_000, lambda: 0.0) == 0  # anywhere down to nothing
    assert retry_ms(20, 120, 30_000, lambda: 1.0) == 120_000  # never capped below the interval


async def test_three_pollers_racing_make_one_fetch_per_interval(
    conn: Connection, live_engine: Engine, sale_id: str, feed_sim: str, sim_http: Any, test_url: str
) -> None:
    p = await polled_sale(conn, live_engine, sale_id, feed_sim, interval_s=1)
    await sim_feed(sim_http, p, stock={"P-A": 9, "P-B": 1})
    stop = asyncio.Event()
    async with httpx.AsyncClient() as client:
        racers = [poller(test_url, live_engine, client, p) for _ in range(3)]
        running = [asyncio.create_task(r.run(stop)) for r in racers]
        await asyncio.sleep(4.5)
        stop.set()
        await asyncio.gather(*running)
    seen = (await sim_records(sim_http, p))["fetches"]
    times = [f["at"] for f in seen]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(seen) in (4, 5), seen
    assert all(0.9 <= gap <= 1.4 for gap in gaps), gaps  # one fetch per interval, none doubled
    assert [f["status"] for f in seen] == [200] + [304] * (len(seen) - 1)
    assert await offers(live_engine, sale_id) == (9, 2)
