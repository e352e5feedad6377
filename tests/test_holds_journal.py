"""The holds journal (store/holds.py): the stream's hold events folded into PostgreSQL's `holds`
table, the same whatever their order, their batches and their replays."""

from __future__ import annotations

import random
from typing import Any, cast

from flashsale.engine import Engine, Settings, keys
from flashsale.engine.connection import RedisClient
from flashsale.engine.events import HoldEvent, decode
from flashsale.engine.results import Allocation
from flashsale.store.db import Connection
from flashsale.store.flush import flush
from flashsale.store.holds import HoldRow, fold, record_holds
from flashsale.store.sales import save_sale
from tests.helpers import open_sale, sale_config
from tests.reconciler_support import record

T0 = 1_700_000_000_000
LINES = (Allocation("A", "p", 2), Allocation("A", "q", 1))


def event(kind: str, hold: str, at_ms: int, **extra: Any) -> HoldEvent:
    return HoldEvent(f"{at_ms}-0", kind, hold, "cust-" + hold, LINES, at_ms, **extra)


def reserved(hold: str, at_ms: int, key: str = "") -> HoldEvent:
    fp = "ab12" if key else ""
    return event(
        "reserved", hold, at_ms, expires_at_ms=at_ms + 60_000, idem_key=key, fingerprint=fp
    )


def histories() -> list[list[HoldEvent]]:
    """Each hold's events in the order Redis wrote them."""
    return [
        [reserved("h1", T0, "k1")],
        [reserved("h2", T0 + 1), event("extended", "h2", T0 + 5, expires_at_ms=T0 + 120_001)],
        [reserved("h3", T0 + 2, "k3"), event("confirmed", "h3", T0 + 9, payment="pay")],
        [
            reserved("h4", T0 + 3, "k4"),
            event("extended", "h4", T0 + 4, expires_at_ms=T0 + 120_003),
            event("confirmed", "h4", T0 + 7),
            event("compensated", "h4", T0 + 20, reason="declined"),
        ],
        [reserved("h5", T0 + 4), event("released", "h5", T0 + 6)],
        [reserved("h6", T0 + 5, "k6"), event("expired", "h6", T0 + 60_005)],
        [event("confirmed", "h7", T0 + 8)],  # placed before the journal existed
    ]


async def journal(conn: Connection, sale_id: str) -> dict[str, tuple[Any, ...]]:
    rows = await conn.fetch(
        "SELECT hold_id, customer_id, lines, status, status_at, idem_key, fingerprint, "
        "created_at, expires_at, extended FROM holds WHERE sale_id = $1",
        sale_id,
    )
    return {r["hold_id"]: tuple(r.values()) for r in rows}


def test_fold_keeps_a_hold_moving_forward_whatever_the_order() -> None:
    h3 = histories()[2]
    for events in (h3, h3[::-1], [*h3, *h3]):
        (row,) = fold(events)
        assert row == HoldRow(
            "h3", "cust-h3", "A:p:2,A:q:1", "confirmed", T0 + 9, "k3", "ab12", T0 + 2,
            T0 + 2 + 60_000, False,
        )  # fmt: skip
    (h4,) = fold(histories()[3][::-1])
    assert (h4.status, h4.status_at_ms, h4.expires_at_ms, h4.extended) == (
        "compensated", T0 + 20, T0 + 120_003, True,
    )  # fmt: skip
    (h7,) = fold(histories()[6])
    assert (h7.status, h7.created_at_ms, h7.expires_at_ms, h7.idem_key) == (
        "confirmed", None, None, "",
    )  # fmt: skip


async def test_any_order_batching_and_replay_gives_the_same_rows(
    conn: Connection, sale_id: str
) -> None:
    await save_sale(conn, record(sale_id, {"A": [("p", 10), ("q", 10)]}))
    in_order = [e for history in histories() for e in history]
    async with conn.transaction():
        assert await record_holds(conn, sale_id, in_order) == 7
    expected = await journal(conn, sale_id)
    assert {h: row[3] for h, row in expected.items()} == {
        "h1": "held", "h2": "held", "h3": "confirmed", "h4": "compensated", "h5": "released",
        "h6": "expired", "h7": "confirmed",
    }  # fmt: skip
    rng = random.Random(15)
    for _ in range(25):
        await conn.execute("DELETE FROM holds WHERE sale_id = $1", sale_id)
        shuffled = rng.sample(in_order, len(in_order))
        cuts = sorted(rng.sample(range(1, len(shuffled)), 3))
        batches = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(shuffled)], strict=True)]
        for batch in batches + rng.sample(batches, 2):  # two batches replayed after the others
            async with conn.transaction():
                await record_holds(conn, sale_id, batch)
        assert await journal(conn, sale_id) == expected


async def test_reserve_and_extend_emit_events_the_flush_keeps(
    redis_client: RedisClient, settings: Settings, conn: Connection, sale_id: str
) -> None:
    """The events' fields as reserve.lua and extend.lua write them, and a `reserved` flushed
    after its `confirmed` (a replay) does not reopen the hold."""
    engine = Engine(redis_client, settings)
    stock = {"A": [("p", 10), ("q", 10)]}
    await save_sale(conn, record(sale_id, stock))
    await open_sale(engine, sale_config(sale_id, stock, limit=0))
    held = await engine.reserve(sale_id, "c1", [("A", 3)], "key-1")
    again = await engine.reserve(sale_id, "c1", [("A", 3)], "key-1")
    assert again.replay
    extended = await engine.extend(sale_id, held.hold_id)
    assert (await engine.confirm(sale_id, held.hold_id, "pay")).code == "OK"
    entries = cast(list[Any], await engine.client.xrange(keys.events(sale_id)))
    kinds = [fields["type"] for _, fields in entries]
    assert kinds == ["reserved", "extended", "confirmed"]  # the replay wrote nothing
    first = {k: v for k, v in entries[0][1].items() if k != "rid"}
    assert first == {
        "type": "reserved", "hold": held.hold_id, "user": "c1", "lines": "A:p:3",
        "at_ms": first["at_ms"], "expires_at_ms": str(held.expires_at_ms), "idem": "key-1",
        "fp": first["fp"],
    }  # fmt: skip
    assert int(first["at_ms"]) + 60_000 == held.expires_at_ms
    assert entries[1][1]["expires_at_ms"] == str(extended.expires_at_ms)
    events = decode([(i, dict(f)) for i, f in entries]).events
    await flush(conn, sale_id, events[2:])  # the confirmation first, then everything again
    await flush(conn, sale_id, events)
    await flush(conn, sale_id, events[:1])
    row = await conn.fetchrow(
        "SELECT status, idem_key, fingerprint, extended, "
        "(extract(epoch FROM expires_at) * 1000)::bigint AS expires_at_ms "
        "FROM holds WHERE sale_id = $1 AND hold_id = $2",
        sale_id,
        held.hold_id,
    )
    assert tuple(row.values()) == (
        "confirmed", "key-1", first["fp"], True, extended.expires_at_ms,
    )  # fmt: skip
    assert await conn.fetchval("SELECT count(*) FROM orders WHERE sale_id = $1", sale_id) == 1
