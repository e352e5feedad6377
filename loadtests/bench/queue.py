"""`flashsale bench queue`: the status route under 50,000 waiting tickets vs GET /healthz of the
same server in the same run (the route should not need Redis per call), and join throughput."""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import time
from pathlib import Path

from flashsale import services
from flashsale.engine import Engine, Settings
from flashsale.engine.connection import connect
from flashsale.engine.waiting_room import WaitingRoom
from flashsale.gateway.room.tokens import KeyRing, Tickets
from flashsale.loadtests.bench.engine import Row
from flashsale.loadtests.bench.profile import Profile, profile_sides
from flashsale.loadtests.bench.wrk import alternate, wrk
from flashsale.loadtests.gateway_process import gateway
from flashsale.loadtests.run_secrets import production_secrets
from flashsale.loadtests.sale_api import SaleApi

SALE = "bench-queue"
TICKETS = 50_000
JOIN_LUA = """
local n = 0
request = function()
  n = n + 1
  local body = '{"customer_id":"wrk-' .. n .. '"}'
  return wrk.format("POST", "/v1/sales/%s/queue", {["Content-Type"] = "application/json"}, body)
end
"""
# Both sides draw a random ticket in Lua, so wrk (on the same cores) does the same work for the
# baseline as for the route: a static /healthz request is cheaper to send, which flatters it.
PICK_LUA = """
local tickets = { %s }
local n = #tickets
request = function()
  return wrk.format("GET", "%s" .. tickets[math.random(n)])
end
"""


def _room_sale() -> dict[str, object]:
    """Admits one a second, one at a time: the crowd stays in line while it is measured."""
    return {
        "name": "queue benchmark",
        "starts_at": "2020-01-01T00:00:00Z",
        "ends_at": None,
        "hold_ttl_s": 3600,
        "per_user_limit": 0,
        "waiting_room": {
            "enabled": True,
            "admit_rate_per_s": 1,
            "max_active": 1,
            "token_ttl_s": 60,
        },
        "items": [{"sku": "hot", "price_minor": 100, "suppliers": [{"id": "p", "stock": 10**9}]}],
    }


def _wait_opened(api: SaleApi, timeout_s: float = 15) -> None:
    """Until an admission loop has opened the room (no pre-queue: place = ticket number)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        room = api.room()
        if room is not None and room["opened_at"] is not None:
            return
        time.sleep(0.2)
    raise RuntimeError("no admission loop opened the benchmark room")


async def _top_up(settings: Settings, redis_url: str, wanted: int) -> int:
    """Joins customers straight through the engine until the room holds `wanted` tickets."""
    client = connect(redis_url)
    room = WaitingRoom(Engine(client, settings))
    state = await room.queue_state(SALE)
    have = state.seq if state else 0
    for start in range(have, wanted, 2000):
        batch = range(start, min(start + 2000, wanted))
        await asyncio.gather(*(room.queue_join(SALE, f"top-{i}") for i in batch))
    await client.aclose()
    return max(have, wanted)


async def _forget(settings: Settings, redis_url: str) -> None:
    client = connect(redis_url)
    engine = Engine(client, settings)
    await engine.forget_sale(SALE)
    await WaitingRoom(engine).forget_room(SALE)
    await client.aclose()


def bench_queue(
    settings: Settings,
    seconds: int,
    connections: int,
    workers: int,
    profile: Profile | None = None,
) -> list[Row]:
    """This run's own secrets, in dev mode: wrk's joins name new customers in the body, as wrk
    cannot sign a customer token per join (the checkout bench pays for token checks). With
    `profile`, one more run of /healthz, status and join collects CPU per request into it."""
    env = services.up(settings, log=lambda _line: None)
    settings, secret_env = production_secrets(settings)
    settings = dataclasses.replace(settings, env="dev")
    env = {**env, **secret_env, "FLASHSALE_ENV": "dev"}
    asyncio.run(_forget(settings, env["FLASHSALE_REDIS_URL"]))  # a fresh room every run
    try:
        return _measure(settings, env, seconds, connections, workers, profile)
    finally:
        asyncio.run(_forget(settings, env["FLASHSALE_REDIS_URL"]))


def _measure(
    settings: Settings,
    env: dict[str, str],
    seconds: int,
    connections: int,
    workers: int,
    profile: Profile | None,
) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp, gateway(env, workers=workers) as gw:
        api = SaleApi(gw.url, SALE, settings.admin_key)
        api.create(_room_sale())
        _wait_opened(api)
        join_script, status_script = Path(tmp) / "join.lua", Path(tmp) / "status.lua"
        health_script = Path(tmp) / "healthz.lua"
        join_script.write_text(JOIN_LUA % SALE)
        join = wrk(
            f"{gw.url}/v1/sales/{SALE}/queue",
            seconds,
            connections,
            join_script,
            "POST /v1/sales/{sale}/queue (join, new, body customer_id)",
        )
        print(f"  {join.name}: {join.requests_per_s:.0f} req/s, p99 {join.p99_ms:.1f} ms")
        total = asyncio.run(_top_up(settings, env["FLASHSALE_REDIS_URL"], TICKETS))
        tickets = Tickets(KeyRing.from_settings(settings))
        ids = ", ".join(f'"{tickets.make(SALE, n)}"' for n in range(1, total + 1))
        status_script.write_text(PICK_LUA % (ids, f"/v1/sales/{SALE}/queue/"))
        health_script.write_text(PICK_LUA % (ids, "/healthz?t="))
        status_url = f"{gw.url}/v1/sales/{SALE}/queue/1"
        wrk(status_url, 2, connections, status_script, "warm-up")
        sides = [
            (gw.url + "/healthz", health_script, "GET /healthz"),
            (status_url, status_script, f"GET .../queue/{{ticket}} ({total // 1000}k waiting)"),
        ]
        rows = [*alternate(sides, seconds, connections), join]
        if profile is not None:  # new customers again: a second join of one is a cheaper path
            again = Path(tmp) / "join-profile.lua"
            again.write_text((JOIN_LUA % SALE).replace('"wrk-', '"wrk-profile-'))
            sides.append((f"{gw.url}/v1/sales/{SALE}/queue", again, join.name))
            redis_url = env["FLASHSALE_REDIS_URL"]
            profile_sides(profile, gw.process.pid, redis_url, sides, seconds, connections)
        return rows
