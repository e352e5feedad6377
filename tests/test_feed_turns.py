"""gateway/feed_turns.py: one webhook delivery per supplier at a time in a gateway worker, queued
before a PostgreSQL connection is taken, the queue bounded in length and time; on a real
gateway, a burst from one supplier leaves the pool to the other routes."""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx
import pytest

from flashsale.gateway.feed_turns import SupplierTurns
from flashsale.gateway.problems import Problem
from flashsale.store.feeds import FEED_LOCK
from tests.feed_helpers import at, signed, supplier_id, webhook_body
from tests.feed_webhook_helpers import SECRET, fed_sale, health, offer, post
from tests.gateway_helpers import ADMIN, assert_problem


async def test_a_burst_of_one_supplier_leaves_the_pool_to_the_other_routes(
    http: httpx.AsyncClient, gateway_db: asyncpg.Connection
) -> None:
    """80 deliveries of one supplier at once: each gateway worker runs one at a time and queues
    the rest without a PostgreSQL connection, so at most one connection per worker waits on the
    supplier's advisory lock (without the queue: the whole pool of each worker), while another
    route keeps answering. A delivery refused for a full queue (503, Retry-After) stored
    nothing; sent again, it is applied once."""
    sale, p, _ = await fed_sale(http)
    other = supplier_id("other")
    reply = await http.put(
        f"/v1/admin/suppliers/{other}", json={"name": "O", "feed": {"kind": "file"}}, headers=ADMIN
    )
    assert reply.status_code == 201, reply.text
    bodies = {
        k: webhook_body(f"burst-{k}", [{"supplier_sku": "P-A", "on_hand": k % 50}], as_of=at(k))
        for k in range(80)
    }
    waiting: list[int] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            waiting.append(
                await gateway_db.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND classid = $1 AND NOT granted",
                    FEED_LOCK,
                )
            )
            await asyncio.sleep(0.002)

    async def other_route() -> list[int]:
        seen = []
        while not done.is_set():
            got = await http.get(f"/v1/admin/suppliers/{other}", headers=ADMIN)
            seen.append(got.status_code)
        return seen

    async def send(k: int) -> httpx.Response:
        return await post(http, p, bodies[k], signed(SECRET, bodies[k]))

    watcher, reader = asyncio.create_task(watch()), asyncio.create_task(other_route())
    replies = await asyncio.gather(*(send(k) for k in range(80)))
    done.set()
    await watcher
    statuses = await reader
    assert max(waiting) <= 1, Counter(waiting)  # 2 workers: one holds the lock, one may wait
    assert statuses and set(statuses) == {200}
    refused = [k for k, r in zip(range(80), replies, strict=True) if r.status_code != 202]
    for k in refused:
        assert_problem(replies[k], 503, "UNAVAILABLE")
        assert replies[k].headers["retry-after"] == "1"
    stored = await gateway_db.fetchval(
        "SELECT count(*) FROM feed_deliveries WHERE supplier_id = $1", p
    )
    assert stored == 80 - len(refused)
    for k in refused:  # the supplier's retry
        assert (await send(k)).status_code == 202
    assert (await health(http, p))["deliveries"] == {"accepted": 80, "duplicate": 0}
    assert await offer(http, sale, p) == 79 % 50  # the newest as_of won


async def test_a_supplier_queue_is_bounded_in_length_and_time() -> None:
    turns = SupplierTurns(max_queued=1, wait_s=0.2)
    entered = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:
        async with turns.turn("p"):
            entered.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    await entered.wait()
    waiter = asyncio.create_task(turns.turn("p").__aenter__())
    await asyncio.sleep(0.01)
    with pytest.raises(Problem) as full:  # one running, one waiting: the queue is full
        async with turns.turn("p"):
            pass
    assert (full.value.status, full.value.code) == (503, "UNAVAILABLE")
    async with turns.turn("q"):  # another supplier is not held up
        pass
    with pytest.raises(Problem) as slow:
        await waiter  # no turn within 0.2 s
    assert "within 0.2 s" in slow.value.detail
    release.set()
    await holder
    assert turns.users("p") == 0 and turns.users("q") == 0
