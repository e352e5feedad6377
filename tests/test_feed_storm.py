"""A reserve storm on one hot SKU over 100 real connections while both of its suppliers' feeds
cut and restore their stock through the webhook: nothing is oversold against the latest feed,
every answer is a hold or SOLD_OUT, and the invariants hold with exact counts."""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import AsyncExitStack

import httpx

from flashsale.engine import Engine
from flashsale.engine.invariants import check_sale
from flashsale.loadtests.gateway_process import Gateway
from flashsale.store.db import Connection
from tests.feed_helpers import at, signed, supplier_id, webhook_body
from tests.gateway_helpers import (
    ADMIN,
    PAYMENT,
    admin_view,
    checkout_body,
    client,
    create_sale,
    new_sale_id,
    sale_body,
    supplier_counts,
)

SECRET = "storm-feed-secret-0123456789abcdef0123"
SHOPPERS = 2400
CONNECTIONS = 100
# Each supplier's feed in order (as_of one second apart); the last one is what must hold.
LEVELS = {"p": [40, 5, 100, 0, 60, 25], "q": [100, 10, 0, 80, 3, 10]}


async def feed_supplier(http: httpx.AsyncClient, supplier: str) -> None:
    body = {
        "name": supplier,
        "feed": {
            "kind": "webhook",
            "secret": SECRET,
            "sku_map": [{"supplier_sku": "HOT", "sku": "A"}],
        },
    }
    reply = await http.put(f"/v1/admin/suppliers/{supplier}", json=body, headers=ADMIN)
    assert reply.status_code == 201, reply.text


async def test_a_storm_against_cutting_and_restoring_feeds(
    gw: Gateway, http: httpx.AsyncClient, gateway_db: Connection, live_engine: Engine
) -> None:
    p, q = supplier_id("p"), supplier_id("q")
    ids = {"p": p, "q": q}
    sale = new_sale_id("storm")
    await create_sale(http, sale, sale_body([(p, 100), (q, 100)]))
    for s in (p, q):
        await feed_supplier(http, s)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(SHOPPERS):
        queue.put_nowait(i)
    answers: Counter[str] = Counter()
    confirmed = 0
    storm_on = asyncio.Event()  # 50 answers in: the feeds start

    async def shopper(c: httpx.AsyncClient) -> None:
        nonlocal confirmed
        while not queue.empty():
            i = queue.get_nowait()
            r = await c.post(f"/v1/sales/{sale}/holds", json=checkout_body(f"storm-{i}"))
            answers[str(r.status_code) + ("" if r.status_code == 201 else r.json()["code"])] += 1
            if sum(answers.values()) >= 50:
                storm_on.set()
            if r.status_code == 201 and i % 2 == 0:
                hold = r.json()["hold_id"]
                done = await c.post(f"/v1/sales/{sale}/holds/{hold}/confirm", json=PAYMENT)
                assert done.status_code == 200, done.text
                confirmed += 1

    seen_at_feed: list[int] = []  # answers received when each round of deliveries went out

    async def feeds() -> None:
        await storm_on.wait()
        for n in range(len(LEVELS["p"])):
            seen_at_feed.append(sum(answers.values()))
            for name, supplier in ids.items():
                body = webhook_body(
                    f"d{n}", [{"supplier_sku": "HOT", "on_hand": LEVELS[name][n]}], as_of=at(n)
                )
                reply = await http.post(
                    f"/v1/feeds/{supplier}", content=body, headers=signed(SECRET, body)
                )
                assert (reply.status_code, reply.json()["applied"]) == (202, 1), reply.text
            await asyncio.sleep(0.02)

    async with AsyncExitStack() as stack:
        fleet = [
            await stack.enter_async_context(client(gw, max_connections=1, timeout_s=60))
            for _ in range(CONNECTIONS)
        ]
        await asyncio.gather(feeds(), *(shopper(c) for c in fleet))

    assert seen_at_feed[-1] < SHOPPERS, seen_at_feed  # the last feed came mid-storm
    won = answers["201"]
    assert won + answers["409SOLD_OUT"] == SHOPPERS, answers
    counts = supplier_counts(await admin_view(http, sale))
    taken = {s: counts[s]["reserved"] + counts[s]["sold"] for s in (p, q)}
    assert sum(taken.values()) == won
    assert sum(counts[s]["sold"] for s in (p, q)) == confirmed
    for name, supplier in ids.items():
        last = LEVELS[name][-1]
        # What the last delivery found short (units taken before it), from its record.
        short = await gateway_db.fetchval(
            "SELECT shortfall FROM feed_deliveries WHERE supplier_id = $1 AND delivery_id = $2",
            supplier,
            f"d{len(LEVELS[name]) - 1}",
        )
        c = counts[supplier]
        # Oversold against the latest feed: 0. Offered + held + sold is what it allowed.
        assert c["available"] + taken[supplier] == last + short, (name, c, short)
        if short:
            assert c["available"] == 0
    assert await check_sale(live_engine, sale) == []
