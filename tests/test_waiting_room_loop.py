"""Two gateway processes, each running the admission loops: one loop per room advances it (the
lease), at the configured rate, and open sessions never exceed the cap."""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Iterator

import httpx
import pytest

from flashsale.engine import Code, Engine
from flashsale.engine.room_invariants import open_sessions
from flashsale.engine.waiting_room import RoomState, WaitingRoom
from flashsale.loadtests.gateway_process import Gateway, gateway
from tests.gateway_helpers import checkout_body, client
from tests.helpers import eventually
from tests.waiting_room_helpers import (
    assert_room_sound,
    close_created,
    create_room_sale,
    join,
    poll_until,
    room_body,
)

ENV = {
    "FLASHSALE_QUEUE_GHOST_AFTER_MS": "600000",  # nobody here polls while waiting
    "FLASHSALE_QUEUE_CLAIM_MS": "0",  # nor picks an admission up (the rate counts admissions)
    "FLASHSALE_QUEUE_TICK_MS": "50",
    "FLASHSALE_QUEUE_CACHE_MS": "100",
}
RATE = 40
CAP = 8


@pytest.fixture(scope="module")
def pair(service_urls: dict[str, str]) -> Iterator[tuple[Gateway, Gateway]]:
    env = {**service_urls, **ENV}
    with gateway(env, workers=1) as first, gateway(env, workers=1) as second:
        yield first, second
        alive = next(gw for gw in (first, second) if gw.process.poll() is None)
        close_created(alive.url)  # the last test stops one of them


@pytest.fixture
def room(live_engine: Engine) -> WaitingRoom:
    return WaitingRoom(live_engine)


async def state_when(
    room: WaitingRoom, sale: str, admitted: int, timeout_s: float = 10
) -> RoomState:
    async def admissions_reached() -> RoomState:
        state = await room.queue_state(sale)
        assert state is not None and state.admitted >= admitted, f"admissions stalled at {state}"
        return state

    return await eventually(admissions_reached, timeout_s=timeout_s)


async def opened(room: WaitingRoom, sale: str, timeout_s: float = 10) -> None:
    async def a_loop_opened_the_room() -> bool:
        state = await room.queue_state(sale)
        return state is not None and state.opened

    await eventually(a_loop_opened_the_room, timeout_s=timeout_s)


def leader_flag(gw: Gateway, sale: str) -> int:
    text = httpx.get(gw.url + "/metrics", timeout=10).text
    found = re.search(rf'flashsale_queue_leader{{sale="{sale}"}} (\d)', text)
    return int(found[1]) if found else 0


async def test_the_admit_rate_holds_within_10_percent_with_two_loops(
    pair: tuple[Gateway, Gateway], room: WaitingRoom
) -> None:
    async with client(pair[0]) as http:
        body = room_body(100_000, rate=RATE, max_active=100_000)
        sale = await create_room_sale(http, "wr-rate", body)
    joins = await asyncio.gather(*(room.queue_join(sale, f"c{i}") for i in range(12 * RATE)))
    assert all(j.code is Code.OK for j in joins)
    # The window opens at the first admission after everyone is in line: that tick spends all
    # the credit saved up while the line was filling (up to a second's worth), which would
    # otherwise count as admissions inside the window.
    in_line = await room.queue_state(sale)
    assert in_line is not None
    start = await state_when(room, sale, in_line.admitted + 1)
    # Kept: the measuring window, not a wait for an effect. The rate divides by the room's own
    # clock (now_ms of each read), so a slow machine only makes the window longer.
    await asyncio.sleep(4)
    end = await room.queue_state(sale)
    assert end is not None and end.waiting > 0
    rate = (end.admitted - start.admitted) * 1000 / (end.now_ms - start.now_ms)
    print(f"measured admit rate {rate:.2f}/s")
    assert RATE * 0.9 <= rate <= RATE * 1.1, rate
    assert sorted(leader_flag(gw, sale) for gw in pair) == [0, 1]  # one loop leads, one waits
    await assert_room_sound(room.engine, sale)


async def test_open_sessions_never_exceed_the_cap(
    pair: tuple[Gateway, Gateway], room: WaitingRoom
) -> None:
    peak = 0
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, await open_sessions(room.engine, sale))
            await asyncio.sleep(0.005)  # kept: the sampling interval of the watcher

    async with client(pair[0]) as one, client(pair[1]) as two:
        sale = await create_room_sale(one, "wr-cap", room_body(1000, rate=200, max_active=CAP))
        await opened(room, sale)  # no pre-queue: places follow the join order the shoppers take
        tickets = [
            (f"c{i}", (await join((one, two)[i % 2], sale, f"c{i}"))["ticket"]) for i in range(60)
        ]
        watcher = asyncio.create_task(watch())
        queue = iter(enumerate(tickets))

        async def shopper() -> None:
            for i, (customer, ticket) in queue:
                http = (one, two)[i % 2]
                token = (await poll_until(http, sale, ticket, "admitted"))["token"]
                reply = await http.post(
                    f"/v1/sales/{sale}/holds",
                    json=checkout_body(customer),
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert reply.status_code == 201, reply.text
                await asyncio.sleep(0.02)  # a shopper takes a moment to pay

        await asyncio.gather(*(shopper() for _ in range(3)))
        done.set()
        await watcher
    state = await room.queue_state(sale)
    assert state is not None and state.admitted == 60
    assert peak == CAP, peak  # the cap was reached, never passed
    await assert_room_sound(room.engine, sale, max_active=CAP)


async def test_when_the_leader_stops_the_other_process_takes_over(
    pair: tuple[Gateway, Gateway], room: WaitingRoom
) -> None:
    """Runs last: it stops one of the module's two gateways."""
    async with client(pair[0]) as http:
        body = room_body(100_000, rate=20, max_active=100_000)
        sale = await create_room_sale(http, "wr-failover", body)
    await opened(room, sale)
    await asyncio.gather(*(room.queue_join(sale, f"c{i}") for i in range(400)))
    await state_when(room, sale, 5)
    leader, follower = sorted(pair, key=lambda gw: -leader_flag(gw, sale))
    assert (leader_flag(leader, sale), leader_flag(follower, sale)) == (1, 0)
    leader.process.send_signal(signal.SIGTERM)
    assert leader.process.wait(timeout=20) in (0, -signal.SIGTERM)  # uvicorn re-raises it
    stopped = await room.queue_state(sale)
    assert stopped is not None
    # The lease (3 s) runs out, then the follower's next try (every 1.5 s) takes it.
    await state_when(room, sale, stopped.admitted + 20, timeout_s=10)
    assert leader_flag(follower, sale) == 1
    await assert_room_sound(room.engine, sale)
