"""The waiting room's scripts against fakeredis, a real Redis and the 3-master cluster: one ticket
per customer, admission strictly in order, the reproducible shuffle, ghosts, sold out, the cap,
the lease, the token buckets and the per-token attempt counter."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections.abc import Sequence
from typing import Any

import pytest
from redis.commands.core import AsyncScript
from redis.crc import key_slot

from flashsale.engine import Code, Engine, InvalidInput, keys
from flashsale.engine.rate_limit import Bucket, RateLimiter
from flashsale.engine.room_invariants import open_sessions
from flashsale.engine.waiting_room import Beat, RoomConfig, TickResult, TokenUse, WaitingRoom
from tests.helpers import open_sale
from tests.waiting_room_helpers import (
    assert_room_sound,
    independent_order,
    room_config,
    room_snapshot,
)

CROWD = 5000
FAST = RoomConfig(
    admit_rate_per_s=1000, max_active=100_000, session_ms=600_000, ghost_after_ms=600_000
)
FUTURE_MS = 4_000_000_000_000  # year 2096


@pytest.fixture
def room(engine: Engine) -> WaitingRoom:
    return WaitingRoom(engine)


async def admit_all(room: WaitingRoom, sale_id: str, config: RoomConfig = FAST) -> list[int]:
    """Ticks one test-clock second apart until the line is empty; the places admitted, in order."""
    places: list[int] = []
    for _ in range(100):
        tick = await room.queue_admit(sale_id, "loop", config)
        assert tick.code is Code.OK, tick
        places += tick.admitted
        if tick.serving == tick.seq:
            return places
        room.engine.advance_clock(1000)
    raise AssertionError("the line never emptied")


async def join_crowd(room: WaitingRoom, sale_id: str, n: int) -> dict[str, int]:
    joins = await asyncio.gather(*(room.queue_join(sale_id, f"c{i}") for i in range(n)))
    assert all(j.code is Code.OK and j.new for j in joins)
    return {f"c{i}": j.ticket for i, j in enumerate(joins)}


async def tick(room: WaitingRoom, sale_id: str, config: RoomConfig = FAST) -> TickResult:
    result = await room.queue_admit(sale_id, "loop", config)
    assert result.code is Code.OK, result
    return result


async def test_one_ticket_per_customer_under_concurrent_joins(
    engine: Engine, room: WaitingRoom, sale_id: str
) -> None:
    await open_sale(engine, room_config(sale_id))
    joins = await asyncio.gather(*(room.queue_join(sale_id, f"c{i % 300}") for i in range(900)))
    by_customer: dict[str, set[int]] = {}
    for i, join in enumerate(joins):
        assert join.code is Code.OK
        by_customer.setdefault(f"c{i % 300}", set()).add(join.ticket)
    assert all(len(t) == 1 for t in by_customer.values())
    assert sorted(t for (t,) in by_customer.values()) == list(range(1, 301))
    assert sum(j.new for j in joins) == 300
    await assert_room_sound(engine, sale_id)


@pytest.mark.parametrize("backend", ["redis", "cluster"], indirect=True)
async def test_5000_concurrent_tickets_are_admitted_in_ticket_order(
    engine: Engine, room: WaitingRoom, sale_id: str
) -> None:
    await open_sale(engine, room_config(sale_id))
    assert (await tick(room, sale_id)).admitted == ()  # opens the room: no pre-queue
    tickets = await join_crowd(room, sale_id, CROWD)
    assert sorted(tickets.values()) == list(range(1, CROWD + 1))
    places = await admit_all(room, sale_id)
    assert places == list(range(1, CROWD + 1))  # every place, strictly in order, once
    state = await room.queue_state(sale_id)
    assert state is not None and state.prequeue == 0
    assert [state.place_of(t) for t in range(1, CROWD + 1)] == places
    await assert_room_sound(engine, sale_id)
    await room.forget_room(sale_id)


@pytest.mark.parametrize("backend", ["redis", "cluster"], indirect=True)
async def test_prequeue_shuffle_is_a_permutation_anyone_can_recompute(
    engine: Engine, room: WaitingRoom, sale_id: str
) -> None:
    await open_sale(engine, room_config(sale_id, starts_at_ms=FUTURE_MS))
    await engine.set_status(sale_id, "scheduled")
    tickets = await join_crowd(room, sale_id, CROWD)
    before = await room.queue_state(sale_id)
    assert before is not None and not before.opened and before.seed == ""
    assert (await room.queue_admit(sale_id, "loop", FAST)).code is Code.SALE_NOT_OPEN
    assert before.place_of(1) is None  # no place before the draw

    await engine.set_status(sale_id, "open")
    places = await admit_all(room, sale_id)
    after = await room.queue_state(sale_id)
    assert after is not None and after.prequeue == CROWD
    assert after.seed_sha256 == before.seed_sha256  # the commitment did not move
    assert hashlib.sha256(after.seed.encode()).hexdigest() == before.seed_sha256
    order = independent_order(after.seed, CROWD)  # place p holds ticket order[p - 1]
    assert sorted(order) == list(range(1, CROWD + 1)) and order != sorted(order)
    assert places == list(range(1, CROWD + 1))
    assert [after.place_of(t) for t in order] == places
    number_of = {v: k for k, v in tickets.items()}
    record = await room.queue_ticket(sale_id, order[0], 1)
    assert record is not None and record.customer_id == number_of[order[0]]
    await assert_room_sound(engine, sale_id)
    await room.forget_room(sale_id)


async def test_ghosts_are_skipped_and_polling_tickets_admitted(
    engine: Engine, room: WaitingRoom, sale_id: str
) -> None:
    await open_sale(engine, room_config(sale_id))
    ghostly = dataclasses.replace(FAST, ghost_after_ms=5000)
    await tick(room, sale_id, ghostly)
    await join_crowd(room, sale_id, 10)  # each may stay silent 7 s (3 polls of 2 s, a flush)
    engine.advance_clock(3000)
    assert await room.queue_beat(sale_id, dict.fromkeys([2, 4, 6, 8, 10], Beat(5000, 2000))) == 5
    engine.advance_clock(4500)  # odd places 0.5 s past their deadline, even ones 0.5 s before
    result = await tick(room, sale_id, ghostly)
    assert (result.admitted, result.skipped, result.serving) == ((2, 4, 6, 8, 10), 5, 10)
    for place in (1, 3):
        record = await room.queue_ticket(sale_id, place, place)
        assert record is not None and record.admission is None
    assert await room.queue_beat(sale_id, {1: Beat(5000, 2000)}) == 0  # passed: no heartbeat
    await assert_room_sound(engine, sale_id)


async def test_sold_out_reaches_the_tail_without_admitting_it(
    engine: Engine, room: WaitingRoom, sale_id: str
) -> None:
    await open_sale(engine, room_config(sale_id, {"A": [("p", 3)]}))
    await tick(room, sale_id)
    await join_crowd(room, sale_id, 10)
    engine.advance_clock(1000)
    assert (await tick(room, sale_id)).admitted == (1, 2, 3)
    state = await room.queue_state(sale_id)
    assert state is not None and state.free_units == 0  # the waiting tail is told at once
    held = []
    for place in (1, 2, 3):
        token = TokenUse(place, 3, state.now_ms + 60_000)
        reply = await engine.reserve(sale_id, f"c{place - 1}", [("A", 1)], token=token)
        assert reply.ok, reply
        held.append(reply.hold_id)
    for _ in range(3):
        engine.advance_clock(1000)
        assert (await tick(room, sale_id)).admitted == ()
    state = await room.queue_state(sale_id)
    assert state is not None and (state.units_left, state.active, state.admitted) == (0, 0, 3)
    await engine.release(sale_id, held[0])  # a unit comes back: the next place gets its turn
    engine.advance_clock(1000)
    assert (await tick(room, sale_id)).admitted == (4,)
    await assert_room_sound(engine, sale_id)


async def test_open_sessions_never_exceed_the_cap(
    engine: Engine, room: WaitingRoom, sale_id: str
) -> None:
    await open_sale(engine, room_config(sale_id))
    capped = dataclasses.replace(FAST, max_active=5, session_ms=30_000)
    await tick(room, sale_id, capped)
    await join_crowd(room, sale_id, 40)
    engine.advance_clock(1000)
    assert (await tick(room, sale_id, capped)).admitted == (1, 2, 3, 4, 5)
    engine.advance_clock(1000)
    assert (await tick(room, sale_id, capped)).admitted == ()
    state = await room.queue_state(sale_id)
    assert state is not None
    for place in (1, 2):  # a hold ends the session: its slot is free again
        token = TokenUse(place, 3, state.now_ms + 30_000)
        assert (await engine.reserve(sale_id, f"c{place - 1}", [("A", 1)], token=token)).ok
    assert (await tick(room, sale_id, capped)).admitted == (6, 7)
    engine.advance_clock(31_000)  # every session lapses
    assert (await tick(room, sale_id, capped)).admitted == (8, 9, 10, 11, 12)
    assert await open_sessions(engine, sale_id) == 5
    await assert_room_sound(engine, sale_id, max_active=5)


async def test_the_admission_rate_carries_fractions_and_caps_credit(
    engine: Engine, room: WaitingRoom, sale_id: str
) -> None:
    await open_sale(engine, room_config(sale_id))
    slow = dataclasses.replace(FAST, admit_rate_per_s=4)
    await tick(room, sale_id, slow)
    await join_crowd(room, sale_id, 100)
    admitted = 0
    for _ in range(20):  # 20 x 150 ms = 3 s at 4/s
        engine.advance_clock(150)
        admitted += len((await tick(room, sale_id, slow)).admitted)
    assert admitted in (11, 12)
    engine.advance_clock(60_000)  # a long pause earns at most one second of credit
    assert len((await tick(room, sale_id, slow)).admitted) == 4
    await assert_room_sound(engine, sale_id)


async def test_only_the_lease_holder_admits(
    engine: Engine, room: WaitingRoom, sale_id: str
) -> None:
    await open_sale(engine, room_config(sale_id))
    short = dataclasses.replace(FAST, lease_ms=300)
    assert (await room.queue_admit(sale_id, "A", short)).code is Code.OK
    refused = await room.queue_admit(sale_id, "B", short)
    assert (refused.code, refused.detail) == (Code.NOT_LEADER, "A")
    await asyncio.sleep(0.4)  # the lease is Redis's own key expiry: real time
    assert (await room.queue_admit(sale_id, "B", short)).code is Code.OK
    assert (await room.queue_admit(sale_id, "A", short)).code is Code.NOT_LEADER


async def test_joining_a_sale_without_a_room_or_closed_is_refused(
    engine: Engine, room: WaitingRoom, sale_id: str
) -> None:
    await open_sale(engine, dataclasses.replace(room_config(sale_id), waiting_room=False))
    assert (await room.queue_join(sale_id, "c1")).code is Code.NO_WAITING_ROOM
    assert (await room.queue_join(sale_id + "x", "c1")).code is Code.UNKNOWN_SALE
    other = sale_id[:50] + "-room"
    await open_sale(engine, room_config(other))
    first = await room.queue_join(other, "c1")
    await engine.set_status(other, "closed")
    assert (await room.queue_join(other, "c2")).code is Code.SALE_NOT_OPEN
    assert await room.queue_join(other, "c1") == dataclasses.replace(first, new=False)


async def test_token_buckets_refuse_with_a_wait_and_take_all_or_nothing(
    engine: Engine, sale_id: str
) -> None:
    limiter = RateLimiter(engine)
    a = Bucket(keys.rate_bucket(sale_id, "c", "alice"), 2, 3)
    s = Bucket(keys.rate_bucket(sale_id, "s", "all"), 1, 1)
    assert [(await limiter.rate_limit([a])).allowed for _ in range(4)] == [True] * 3 + [False]
    refused = await limiter.rate_limit([a])
    assert refused.code is Code.RATE_LIMITED and 0 < refused.retry_after_ms <= 500
    engine.advance_clock(500)
    assert (await limiter.rate_limit([s])).allowed
    before = await room_snapshot(engine.client, sale_id)
    engine.advance_clock(500)  # a has a token again, s does not: nothing may be taken
    both = await limiter.rate_limit([a, s])
    assert (both.code, both.bucket) == (Code.RATE_LIMITED, s.key)
    assert await room_snapshot(engine.client, sale_id) == before
    engine.advance_clock(500)
    assert (await limiter.rate_limit([a, s])).allowed


async def test_a_token_has_a_limited_number_of_attempts(engine: Engine, sale_id: str) -> None:
    await open_sale(engine, room_config(sale_id, limit=1))
    token = TokenUse(1, 3, int(time.time() * 1000) + 60_000)
    first = await engine.reserve(sale_id, "c1", [("A", 1)], "k1", token=token)
    assert first.ok
    for _ in range(2):  # refused attempts count too
        again = await engine.reserve(sale_id, "c1", [("A", 1)], token=token)
        assert again.code is Code.LIMIT_EXCEEDED
    replay = await engine.reserve(sale_id, "c1", [("A", 1)], "k1", token=token)
    assert replay.ok and replay.replay  # a replay is not an attempt
    before = await room_snapshot(engine.client, sale_id)
    spent = await engine.reserve(sale_id, "c1", [("A", 1)], "k2", token=token)
    assert spent.code is Code.TOKEN_EXHAUSTED
    assert await room_snapshot(engine.client, sale_id) == before
    assert (await engine.reserve(sale_id, "c2", [("A", 1)])).code is Code.NOT_ADMITTED


BAD_CALLS: dict[str, Any] = {
    "join sale id": lambda r, s: r.queue_join("bad sale", "c1"),
    "join customer id": lambda r, s: r.queue_join(s, "c 1"),
    "join customer 65 chars": lambda r, s: r.queue_join(s, "c" * 65),
    "tick sale id": lambda r, s: r.queue_admit("a{b}", "loop", FAST),
    "state sale id": lambda r, s: r.queue_state(""),
    "ticket number 0": lambda r, s: r.queue_ticket(s, 0, 1),
    "ticket place bool": lambda r, s: r.queue_ticket(s, 1, True),
    "beat sale id": lambda r, s: r.queue_beat("x" * 65, {1: Beat(1000, 100)}),
    "beat place 0": lambda r, s: r.queue_beat(s, {0: Beat(1000, 100)}),
    "beat negative allowance": lambda r, s: r.queue_beat(s, {1: Beat(-1, 100)}),
    "beat poll not an int": lambda r, s: r.queue_beat(s, {1: Beat(1000, 0.5)}),  # type: ignore[arg-type]
    "claim ticket 0": lambda r, s: r.queue_claim(s, 0, 1),
    "claim place str": lambda r, s: r.queue_claim(s, 1, "1"),
    "bucket rate 0": lambda r, s: RateLimiter(r.engine).rate_limit(
        [Bucket(keys.rate_bucket(s, "c", "x"), 0, 1)]
    ),
}


@pytest.mark.parametrize("call", list(BAD_CALLS.values()), ids=list(BAD_CALLS))
async def test_bad_input_is_refused_before_redis(
    engine: Engine, room: WaitingRoom, sale_id: str, call: Any
) -> None:
    await open_sale(engine, room_config(sale_id))
    await room.queue_join(sale_id, "c1")
    before = await room_snapshot(engine.client, sale_id)
    with pytest.raises(InvalidInput):
        await call(room, sale_id)
    assert await room_snapshot(engine.client, sale_id) == before


class RecordingEngine(Engine):
    """Remembers the KEYS of every script call it makes."""

    calls: list[list[str]]

    async def _run(self, script: AsyncScript, keys_: Sequence[str], args: Sequence[Any]) -> Any:
        self.calls.append(list(keys_))
        return await super()._run(script, keys_, args)


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_every_room_key_is_in_the_sale_slot(engine: Engine, sale_id: str) -> None:
    recording = RecordingEngine(engine.client, engine.settings)
    recording.calls = []
    room = WaitingRoom(recording)
    await open_sale(recording, room_config(sale_id, limit=1))
    await room.queue_admit(sale_id, "loop", FAST)
    await room.queue_join(sale_id, "c1")
    recording.advance_clock(1000)
    await room.queue_admit(sale_id, "loop", FAST)
    await room.queue_beat(sale_id, {1: Beat(5000, 2000)})
    await room.queue_claim(sale_id, 1, 1)
    await room.queue_state(sale_id)
    await room.queue_ticket(sale_id, 1, 1)
    await recording.reserve(sale_id, "c1", [("A", 1)], token=TokenUse(1, 3, 2**41))
    await RateLimiter(recording).rate_limit([Bucket(keys.rate_bucket(sale_id, "a", "::1"), 1, 1)])
    slot = key_slot(f"{{{sale_id}}}".encode())
    assert len(recording.calls) >= 9
    for script_keys in recording.calls:
        assert {key_slot(k.encode()) for k in script_keys} == {slot}
    written = await room_snapshot(engine.client, sale_id)
    room_keys = {k.split("}:", 1)[1] for k in written if k.startswith("wr:")}
    assert room_keys == {"room", "tickets", "who", "admitted", "tries:1", "rl:a:::1"}
    assert {key_slot(k.encode()) for k in written} == {slot}
