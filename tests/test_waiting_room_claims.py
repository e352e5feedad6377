"""Ghosts found by the polls they were told to make, admissions nobody picks up taken back (their
credit and their slot returned), and places that come back let in first: against fakeredis, a
real Redis and the 3-master cluster, with real concurrent claims racing the admission loop."""

from __future__ import annotations

import asyncio
import dataclasses
import random

import pytest

from flashsale.engine import Code, Engine, keys
from flashsale.engine.connection import RedisClient
from flashsale.engine.room_invariants import open_sessions
from flashsale.engine.settings import Settings
from flashsale.engine.waiting_room import (
    Admission,
    Beat,
    RoomConfig,
    TickResult,
    TokenUse,
    WaitingRoom,
)
from tests.helpers import open_sale
from tests.waiting_room_helpers import assert_room_sound, room_config, room_snapshot

# Told to poll every 200 ms, a place may stay silent 3 x 200 + 100 (one flush) = 700 ms.
QUICK = {"queue_poll_ms": 200, "queue_beat_flush_ms": 100, "queue_ghost_after_ms": 0}
SILENCE_MS = 700
CONFIG = RoomConfig(
    admit_rate_per_s=10, max_active=100_000, session_ms=60_000, ghost_after_ms=SILENCE_MS,
    claim_ms=1000,
)  # fmt: skip


@pytest.fixture
def room(backend: RedisClient, settings: Settings) -> WaitingRoom:
    return WaitingRoom(Engine(backend, dataclasses.replace(settings, **QUICK)))  # type: ignore[arg-type]


async def tick(room: WaitingRoom, sale_id: str, config: RoomConfig = CONFIG) -> TickResult:
    result = await room.queue_admit(sale_id, "loop", config)
    assert result.code is Code.OK, result
    return result


async def opened_with(room: WaitingRoom, sale_id: str, n: int, config: RoomConfig = CONFIG) -> None:
    """An open room (no pre-queue) with tickets 1..n, places 1..n."""
    await open_sale(room.engine, room_config(sale_id))
    await tick(room, sale_id, config)
    joins = await asyncio.gather(*(room.queue_join(sale_id, f"c{i}") for i in range(1, n + 1)))
    assert sorted(j.ticket for j in joins) == list(range(1, n + 1))


async def test_a_place_is_a_ghost_once_it_missed_the_polls_it_was_told_to_make(
    room: WaitingRoom, sale_id: str
) -> None:
    await opened_with(room, sale_id, 4)  # each may stay silent 700 ms from its join
    room.engine.advance_clock(500)
    # 2 polls every 200 ms (600 ms more), 3 was told to poll 5 times slower (the room was
    # sold out): 3 x 1000 + 100.
    await room.queue_beat(sale_id, {2: Beat(SILENCE_MS, 200), 3: Beat(3100, 1000)})
    room.engine.advance_clock(1000)  # 1 and 4 silent 1.5 s, 2 for 1 s, 3 for 1 s of its 3.1
    fast = dataclasses.replace(CONFIG, admit_rate_per_s=1000)
    result = await tick(room, sale_id, fast)
    assert (result.admitted, result.skipped) == ((3,), 3)
    await assert_room_sound(room.engine, sale_id)


async def test_an_admission_nobody_picks_up_is_taken_back_with_its_slot(
    room: WaitingRoom, sale_id: str
) -> None:
    capped = dataclasses.replace(CONFIG, max_active=5)
    await opened_with(room, sale_id, 20, capped)
    engine = room.engine
    engine.advance_clock(600)  # everyone joined 600 ms ago: silent for 100 ms more at most
    assert (await tick(room, sale_id, capped)).admitted == (1, 2, 3, 4, 5)
    for place in (1, 2):
        claim = await room.queue_claim(sale_id, place, place)
        assert claim is not None and claim.outcome == "ADMITTED"
    await room.queue_beat(sale_id, dict.fromkeys(range(6, 21), Beat(10_000, 200)))
    engine.advance_clock(800)  # the deadline to pick up: 1000 ms after the admission
    assert (await tick(room, sale_id, capped)).admitted == ()  # the cap is full
    engine.advance_clock(200)
    taken = await tick(room, sale_id, capped)
    assert (taken.released, taken.admitted) == (3, (6, 7, 8))  # their slots went on at once
    state = await room.queue_state(sale_id)
    assert state is not None
    assert (state.admitted, state.released, state.abandoned, state.active) == (8, 3, 3, 5)
    record = await room.queue_ticket(sale_id, 3, 3)
    assert record is not None and record.admission is None and record.release is not None
    assert 1000 <= record.release.released_at_ms - record.release.admitted_at_ms < 1200
    # A picked-up admission checks out; one taken back cannot (it was never given a token).
    token = TokenUse(1, 3, state.now_ms + 60_000)
    assert (await engine.reserve(sale_id, "c1", [("A", 1)], token=token)).ok
    await assert_room_sound(engine, sale_id, max_active=5)


async def test_a_place_that_comes_back_is_let_in_first_and_marked(
    room: WaitingRoom, sale_id: str
) -> None:
    await opened_with(room, sale_id, 10)
    room.engine.advance_clock(500)
    await room.queue_beat(sale_id, dict.fromkeys(range(4, 11), Beat(5000, 200)))
    room.engine.advance_clock(500)  # 1-3 silent for 1 s: ghosts
    fast = dataclasses.replace(CONFIG, admit_rate_per_s=1000)
    assert (await tick(room, sale_id, fast)).admitted == tuple(range(4, 11))
    back = []
    for place in (2, 1, 2):  # in the order they came back (a tie would go by place)
        room.engine.advance_clock(10)
        back.append(await room.queue_claim(sale_id, place, place))
    assert [(c.outcome, c.ahead) for c in back if c] == [("BACK", 0), ("BACK", 1), ("BACK", 0)]
    before = await room_snapshot(room.engine.client, sale_id)
    over = await room.queue_claim(sale_id, 3, 3, may_return=False)  # e.g. the sale is over
    assert over is not None and over.outcome == "PASSED"
    assert await room_snapshot(room.engine.client, sale_id) == before
    state = await room.queue_state(sale_id)
    assert state is not None and (state.coming_back, state.abandoned) == (2, 3)
    room.engine.advance_clock(100)
    again = await tick(room, sale_id, fast)
    assert (again.admitted, again.readmitted) == ((2, 1), 2)
    claim = await room.queue_claim(sale_id, 2, 2)
    assert claim is not None and claim.admission is not None and claim.admission.returned
    state = await room.queue_state(sale_id)
    assert state is not None
    assert (state.admitted, state.skipped, state.returned, state.abandoned) == (9, 3, 2, 1)
    await assert_room_sound(room.engine, sale_id)


async def test_given_back_credit_lets_others_in_but_used_admissions_keep_to_the_rate(
    room: WaitingRoom, sale_id: str
) -> None:
    """Every other admitted place never picks its admission up: the credit comes back, so the
    places that do pick up still come at the full rate, and never above it."""
    await opened_with(room, sale_id, 600)
    engine, claimed, seconds = room.engine, set[int](), 20
    for _ in range(seconds * 10):
        engine.advance_clock(100)
        await room.queue_beat(sale_id, dict.fromkeys(range(1, 601), Beat(SILENCE_MS, 0)))
        result = await tick(room, sale_id)
        for place in (p for p in result.admitted if p % 2 == 0):
            claim = await room.queue_claim(sale_id, place, place)
            assert claim is not None and claim.outcome == "ADMITTED"
            claimed.add(place)
    records = await engine.client.hgetall(keys.room_admitted(sale_id))
    released = await engine.client.hgetall(keys.room_released(sale_id))
    state = await room.queue_state(sale_id)
    assert state is not None
    # Odd places were taken back 1 s after their admission: exactly those admitted 1 s or more
    # before the last tick (each tick here admits, so writes its time).
    last_tick_ms = int(await engine.client.hget(keys.room(sale_id), "tick_ms") or 0)
    odd_admitted = {int(p): int(str(v).split(":")[0]) for p, v in released.items()}
    odd_admitted |= {int(p): int(str(v).split(":")[0]) for p, v in records.items() if int(p) % 2}
    assert set(map(int, released)) == {
        p for p, at in odd_admitted.items() if at + 1000 <= last_tick_ms
    }
    assert state.released == len(released)
    # Picked-up admissions: at most the rate (and the first second's credit), nearly all of it.
    assert len(claimed) == sum(1 for p in records if int(p) % 2 == 0)
    elapsed_s = (state.now_ms - state.opened_at_ms) / 1000  # >= seconds: real time runs too
    assert seconds * 10 * 0.9 <= len(claimed) <= elapsed_s * 10 + 10, (len(claimed), elapsed_s)
    # Without the credit given back, half the admissions would have gone for nothing.
    assert state.admitted > elapsed_s * 10 * 1.5
    await assert_room_sound(engine, sale_id)


@pytest.mark.parametrize("backend", ["redis", "cluster"], indirect=True)
async def test_claims_race_the_take_back_and_returns_race_the_tick(
    room: WaitingRoom, sale_id: str
) -> None:
    """400 places: 100 ghosts (skipped), 300 admitted. At their deadline 400 shoppers poll at
    once, again and again, while the loop ticks, and check out once let in: each admission is
    either picked up (it stands) or taken back (the place comes back and is let in again),
    never both, never lost, and never more open sessions than the cap."""
    n, cap = 400, 350
    capped = dataclasses.replace(CONFIG, admit_rate_per_s=5000, max_active=cap, claim_ms=1000)
    await opened_with(room, sale_id, n, capped)
    engine = room.engine
    ghosts = set(random.Random(7).sample(range(1, n + 1), 100))
    engine.advance_clock(500)
    await room.queue_beat(sale_id, {p: Beat(500, 200) for p in range(1, n + 1) if p not in ghosts})
    engine.advance_clock(400)  # ghosts silent 900 ms > 700
    first = await tick(room, sale_id, capped)
    assert first.skipped == 100 and len(first.admitted) == 300
    engine.advance_clock(1000)  # every admission is due to be picked up now
    outcomes: dict[int, list[str]] = {p: [] for p in range(1, n + 1)}
    admissions: dict[int, Admission] = {}

    async def shopper(place: int) -> None:
        await asyncio.sleep(random.uniform(0, 0.05))
        while place not in admissions:
            claim = await room.queue_claim(sale_id, place, place)
            assert claim is not None
            outcomes[place].append(claim.outcome)
            if claim.admission is not None:
                admissions[place] = claim.admission
                token = TokenUse(place, 3, claim.admission.session_end_ms)
                held = await engine.reserve(sale_id, f"c{place}", [("A", 1)], token=token)
                assert held.ok, held  # a hold ends the session: its slot goes on
            await asyncio.sleep(0.005)

    async def loop() -> None:
        await asyncio.sleep(0.025)  # amid the first polls
        while len(admissions) < n:
            await tick(room, sale_id, capped)
            assert await open_sessions(engine, sale_id) <= cap
            await asyncio.sleep(0.002)

    await asyncio.wait_for(asyncio.gather(loop(), *(shopper(p) for p in outcomes)), 60)
    first_claim_won = {p for p in outcomes if outcomes[p][0] == "ADMITTED"}
    assert 0 < len(first_claim_won) < 300  # both sides of the race were taken
    state = await room.queue_state(sale_id)
    assert state is not None
    came_back = set(outcomes) - first_claim_won
    assert ghosts <= came_back and len(came_back) == state.returned == n - len(first_claim_won)
    assert state.released == len(came_back) - len(ghosts)  # the take-backs that won their race
    assert all(admissions[p].returned for p in came_back)
    assert not any(admissions[p].returned for p in first_claim_won)
    assert all(o == ["ADMITTED"] for p, o in outcomes.items() if p in first_claim_won)
    assert (state.admitted, state.abandoned, state.coming_back) == (n + state.released, 0, 0)
    print(f"{len(first_claim_won)} picked up before the take-back, {state.released} after")
    await assert_room_sound(engine, sale_id, max_active=cap)


async def test_a_prequeue_admission_waits_for_a_poll_at_the_lines_interval(
    room: WaitingRoom, sale_id: str
) -> None:
    """Places drawn at the opening were never heard from in line: told to poll every 2 s, their
    admissions wait that long and then the claim window before they are taken back, not the
    claim window alone (which took the opening's admissions from shoppers polling on time)."""
    engine = room.engine
    await open_sale(engine, room_config(sale_id, starts_at_ms=4_000_000_000_000))
    await engine.set_status(sale_id, "scheduled")
    await asyncio.gather(*(room.queue_join(sale_id, f"c{i}") for i in range(1, 6)))
    await engine.set_status(sale_id, "open")
    line = dataclasses.replace(CONFIG, unheard_poll_ms=2000)
    assert (await tick(room, sale_id, line)).admitted == ()  # opens: no credit yet
    engine.advance_clock(500)  # 5 admissions' credit, within the 700 ms a silent place has
    assert (await tick(room, sale_id, line)).admitted == (1, 2, 3, 4, 5)
    engine.advance_clock(2900)  # claim window alone (1 s) long past; a 2 s poller not late
    assert (await tick(room, sale_id, line)).released == 0
    claim = await room.queue_claim(sale_id, 1, 1)
    assert claim is not None and claim.outcome == "ADMITTED"
    engine.advance_clock(200)  # 2 s + 1 s after the admissions: the other four are ghosts
    assert (await tick(room, sale_id, line)).released == 4
    await assert_room_sound(engine, sale_id)
