"""`flashsale bench scale`: a waiting room with a million tickets (Redis memory, status polls vs
/healthz while they wait) and a sale of many SKUs x 3 suppliers (load time, checkout vs a 1-SKU
sale), all on one gateway in production mode."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from flashsale import services
from flashsale.engine import Engine, Settings, keys
from flashsale.engine.connection import connect
from flashsale.engine.waiting_room import WaitingRoom
from flashsale.gateway.room.tokens import KeyRing, Tickets
from flashsale.loadtests.bench.engine import Row
from flashsale.loadtests.bench.gateway import token_scripts
from flashsale.loadtests.bench.profile import Profile, profile_sides
from flashsale.loadtests.bench.queue import PICK_LUA, _room_sale, _wait_opened
from flashsale.loadtests.bench.wrk import Side, alternate, wrk
from flashsale.loadtests.gateway_process import Gateway, gateway
from flashsale.loadtests.run_secrets import production_secrets
from flashsale.loadtests.sale_api import SaleApi

ROOM_SALE, ONE_SALE, MANY_SALE = "bench-scale-room", "bench-scale-one", "bench-scale-many"
SUPPLIERS = ("p", "q", "r")
JOIN_BATCH = 10_000  # joins in flight at once: the engine's batcher pipelines a tick's calls
PROGRESS_EVERY = 100_000
POLLED_TICKETS = 20_000  # the status side polls a random sample: wrk's Lua holds them all
# A million real waiters poll every few seconds, so none is a ghost; the bench's tickets never
# poll, and after ~4.5 s of silence the admission loop would skip them (serving races past, and
# a poll of a passed place costs Redis a queue_claim). An hour of allowed silence stands in for
# the polls the bench cannot send.
GHOST_AFTER_MS = 3_600_000


def customer_id(n: int) -> str:
    """Fixed width, so the memory a ticket costs does not drift with the count."""
    return f"s{n:07d}"


RoomHashes = dict[str, tuple[int, int]]  # room hash name -> (fields, MEMORY USAGE bytes)


@dataclass(slots=True)
class ScaleRun:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    bytes_per_ticket: float = 0.0
    room_hashes: RoomHashes = field(default_factory=dict)
    load_s: float = 0.0


async def _memory_now(redis_url: str) -> tuple[int, RoomHashes]:
    """used_memory, and the room's per-ticket hashes, from a connection of its own: the join
    pool's buffers, gone once it closes, stay out."""
    client = connect(redis_url, max_connections=1)
    hashes = {
        "tickets": keys.room_tickets(ROOM_SALE),
        "who": keys.room_who(ROOM_SALE),
        "seen": keys.room_seen(ROOM_SALE),
    }
    try:
        used = int((await client.info("memory"))["used_memory"])
        sizes = {
            name: (
                int(await client.hlen(key)),
                int(await client.memory_usage(key, samples=0) or 0),
            )
            for name, key in hashes.items()
        }
        return used, sizes
    finally:
        await client.aclose()


async def join_tickets(settings: Settings, redis_url: str, count: int) -> tuple[int, RoomHashes]:
    """Joins `count` new customers through the engine's queue_join; returns the bytes of Redis
    memory they added (used_memory after minus before) and the room's hashes after."""
    before, _ = await _memory_now(redis_url)
    client = connect(redis_url, max_connections=16)
    room = WaitingRoom(Engine(client, settings))
    try:
        start = time.perf_counter()
        for first in range(0, count, JOIN_BATCH):
            batch = range(first, min(first + JOIN_BATCH, count))
            joined = await asyncio.gather(
                *(room.queue_join(ROOM_SALE, customer_id(i)) for i in batch)
            )
            failed = [j for j in joined if not j.new]  # a new ticket each, or the count lies
            if failed:
                raise RuntimeError(f"{len(failed)} joins gave no new ticket: {failed[0]}")
            done = batch.stop
            if done % PROGRESS_EVERY == 0 or done == count:
                rate = done / (time.perf_counter() - start)
                print(f"  joined {done:,} of {count:,} ({rate:,.0f}/s)", flush=True)
    finally:
        await client.aclose()
    after, hashes = await _memory_now(redis_url)
    return after - before, hashes


async def forget(settings: Settings, redis_url: str) -> None:
    client = connect(redis_url)
    engine = Engine(client, settings)
    for sale in (ROOM_SALE, ONE_SALE, MANY_SALE):
        await engine.forget_sale(sale)
    await WaitingRoom(engine).forget_room(ROOM_SALE)
    await client.aclose()


def many_sku_sale(skus: int) -> dict[str, object]:
    """`skus` items (the first one `hot`, with ample stock), each over the 3 suppliers."""
    items = [
        {
            "sku": "hot" if n == 0 else f"sku-{n:05d}",
            "price_minor": 100 + n,
            "suppliers": [
                {"id": s, "stock": 10**11 if n == 0 else 1000, "priority": p}
                for p, s in enumerate(SUPPLIERS)
            ],
        }
        for n in range(skus)
    ]
    return {
        "name": f"scale benchmark, {skus} skus",
        "starts_at": "2020-01-01T00:00:00Z",
        "ends_at": None,
        "hold_ttl_s": 3600,
        "per_user_limit": 0,
        "items": items,
    }


def bench_scale(
    settings: Settings,
    tickets: int,
    skus: int,
    seconds: int,
    connections: int,
    workers: int,
    profile: Profile | None = None,
) -> ScaleRun:
    """Production mode, this run's own secrets; every sale and the room are forgotten after.
    With `profile`, one more run per side collects CPU per request (less moved by the machine's
    other work than throughput) and flame graphs into it."""
    env = services.up(settings, log=lambda _line: None)
    settings, secret_env = production_secrets(settings)
    settings = dataclasses.replace(settings, queue_ghost_after_ms=GHOST_AFTER_MS)
    env = {**env, **secret_env, "FLASHSALE_QUEUE_GHOST_AFTER_MS": str(GHOST_AFTER_MS)}
    redis_url = env["FLASHSALE_REDIS_URL"]
    asyncio.run(forget(settings, redis_url))
    run = ScaleRun()
    try:
        with tempfile.TemporaryDirectory() as tmp, gateway(env, workers=workers) as gw:
            folder = Path(tmp)
            sides = _waiting_room(
                run, settings, gw, redis_url, folder, tickets, seconds, connections
            )
            sides += _many_skus(run, settings, gw, folder, skus, seconds, connections)
            if profile is not None:
                profile_sides(profile, gw.process.pid, redis_url, sides, seconds, connections)
    finally:
        asyncio.run(forget(settings, redis_url))
    return run


def _waiting_room(
    run: ScaleRun,
    settings: Settings,
    gw: Gateway,
    redis_url: str,
    folder: Path,
    tickets: int,
    seconds: int,
    connections: int,
) -> list[Side]:
    api = SaleApi(gw.url, ROOM_SALE, settings.admin_key)
    api.create(_room_sale())
    _wait_opened(api)
    added, hashes = asyncio.run(join_tickets(settings, redis_url, tickets))
    run.bytes_per_ticket, run.room_hashes = added / tickets, hashes
    sizes = ", ".join(f"{k} {n:,} fields {b / n:.0f} B each" for k, (n, b) in hashes.items() if n)
    run.notes.append(f"scale: the room's hashes (MEMORY USAGE): {sizes}")
    sample = random.Random(1).sample(range(1, tickets + 1), min(tickets, POLLED_TICKETS))
    signer = Tickets(KeyRing.from_settings(settings))
    ids = ", ".join(f'"{signer.make(ROOM_SALE, n)}"' for n in sample)
    status, health = folder / "status.lua", folder / "healthz.lua"
    status.write_text(PICK_LUA % (ids, f"/v1/sales/{ROOM_SALE}/queue/"))
    health.write_text(PICK_LUA % (ids, "/healthz?t="))
    status_url = f"{gw.url}/v1/sales/{ROOM_SALE}/queue/1"
    wrk(status_url, 1, connections, status, "warm-up")
    waiting = f"{tickets:,} waiting"
    sides: list[Side] = [
        (gw.url + "/healthz", health, f"GET /healthz ({waiting})"),
        (status_url, status, f"GET .../queue/{{ticket}} ({waiting})"),
    ]
    run.rows += alternate(sides, seconds, connections)
    run.rows.append(Row(f"{waiting}: Redis used_memory added [MB]", added / 2**20, compared=False))
    run.rows.append(Row(f"{waiting}: bytes per ticket", run.bytes_per_ticket, compared=False))
    return sides


def _many_skus(
    run: ScaleRun,
    settings: Settings,
    gw: Gateway,
    folder: Path,
    skus: int,
    seconds: int,
    connections: int,
) -> list[Side]:
    SaleApi(gw.url, ONE_SALE, settings.admin_key).create(many_sku_sale(1))
    start = time.perf_counter()
    SaleApi(gw.url, MANY_SALE, settings.admin_key, timeout_s=120).create(many_sku_sale(skus))
    run.load_s = time.perf_counter() - start
    checkout, _ = token_scripts(settings, folder)
    one = f"{gw.url}/v1/sales/{ONE_SALE}/holds"
    many = f"{gw.url}/v1/sales/{MANY_SALE}/holds"
    wrk(many, 1, connections, checkout, "warm-up")
    shape = f"x {len(SUPPLIERS)} suppliers"
    sides: list[Side] = [
        (one, checkout, f"POST .../holds (1 sku {shape})"),
        (many, checkout, f"POST .../holds ({skus:,} skus {shape})"),
    ]
    one_row, many_row = alternate(sides, seconds, connections)
    run.rows += [one_row, many_row]
    load = f"PUT + open of a sale of {skus:,} skus {shape} [ms]"
    run.rows.append(Row(load, run.load_s * 1000, compared=False))
    ratio = many_row.requests_per_s / one_row.requests_per_s
    run.notes.append(f"scale: checkout of the {skus:,}-sku sale vs the 1-sku sale: {ratio:.2f}")
    return sides
