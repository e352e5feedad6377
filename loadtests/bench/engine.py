"""`flashsale bench engine`: Engine.reserve vs redis-benchmark running the same reserve.lua call,
and the pieces the other benches share (Row, the concurrent-caller driver, the bench sale)."""

from __future__ import annotations

import asyncio
import re
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flashsale import services
from flashsale.engine import Engine, ItemConfig, SaleConfig, Settings, SupplierStockConfig, keys
from flashsale.engine.connection import connect
from flashsale.engine.scripts import source

if TYPE_CHECKING:
    from flashsale.loadtests.bench.profile import Profile

BENCH_SALE = "bench-engine"


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    requests_per_s: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    compared: bool = True  # False: a figure of its own, no ratio against the baseline
    requests: int = 0  # how many requests the run served, when known (wrk's count)


async def load_bench_sale(engine: Engine, sale_id: str = BENCH_SALE) -> None:
    """One hot sku with ample stock over two suppliers, open, no per-customer limit."""
    await engine.forget_sale(sale_id)
    item = ItemConfig(
        "hot",
        100,
        (SupplierStockConfig("p", 10**12 // 2), SupplierStockConfig("q", 10**12 // 2, priority=1)),
    )
    config = SaleConfig(sale_id, 1, 0, 0, 3_600_000, 0, (item,))
    result = await engine.load_sale(config)
    if result.code != "OK":
        raise RuntimeError(f"bench sale did not load: {result}")
    await engine.set_status(sale_id, "open")


def _redis_benchmark(settings: Settings, port: int, requests: int, concurrency: int) -> Row:
    """redis-benchmark calling the very script the engine runs, with the engine's key shapes."""
    exe = services.require_binary("redis-benchmark", "redis-tools")
    sha = subprocess.run(
        ["redis-cli", "-p", str(port), "SCRIPT", "LOAD", source("reserve")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    s = BENCH_SALE
    script_keys = [
        keys.sale(s),
        keys.holds(s),
        keys.user(s, "bench"),
        keys.idem(s, "bench", ""),
        keys.hold(s, "rb-__rand_int__"),
        keys.room_tries(s, None),
        keys.room_active(s),
        keys.stock(s, "hot"),
    ]
    args = [
        keys.prefix(s),
        "rb-__rand_int__",
        "bench",
        "",
        "fp",
        "0",
        str(settings.reclaim_batch),
        "86400000",
        "86400000",
        "0",
        "",
        "0",
        "0",
        "",  # request_id
        "hot",
        "1",
    ]
    # The baseline must do the engine's work: an error reply would be cheaper than a hold.
    probe = [a.replace("__rand_int__", "probe") for a in (*script_keys, *args)]
    first = subprocess.run(
        ["redis-cli", "-p", str(port), "EVALSHA", sha, str(len(script_keys)), *probe],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    if not first or first[0] != "OK":
        raise RuntimeError(f"redis-benchmark's reserve call does not place a hold: {first}")
    cmd = [
        exe,
        "-p",
        str(port),
        "-n",
        str(requests),
        "-c",
        str(concurrency),
        "-r",
        "1000000000000",
        "-q",
        "EVALSHA",
        sha,
        str(len(script_keys)),
        *script_keys,
        *args,
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    match = re.search(r"([\d.]+) requests per second, p50=([\d.]+) msec", out)
    if match is None:
        raise RuntimeError(f"could not read redis-benchmark output: {out!r}")
    p99 = re.search(r"p99=([\d.]+)", out)
    return Row(
        "redis-benchmark EVALSHA reserve.lua",
        float(match[1]),
        float(match[2]),
        float(p99[1]) if p99 else None,
    )


async def drive(
    name: str, call: Callable[[], Awaitable[None]], requests: int, concurrency: int
) -> Row:
    """`requests` calls of `call` by `concurrency` concurrent callers; `call` raises when a
    request did not do its work, so a failed run reports no figures."""
    latencies: list[float] = []
    left = requests

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100)
    return Row(name, len(latencies) / elapsed, q[49] * 1000, q[98] * 1000)


async def engine_side(
    engine: Engine, name: str, requests: int, concurrency: int, sale_id: str = BENCH_SALE
) -> Row:
    """Engine.reserve of 1 unit of the hot sku, the workload of every reserve benchmark."""

    async def reserve() -> None:
        result = await engine.reserve(sale_id, "bench", [("hot", 1)])
        if not result.ok:
            raise RuntimeError(f"bench reservation failed: {result}")

    return await drive(name, reserve, requests, concurrency)


async def bench_engine(
    settings: Settings, requests: int, concurrency: int, profile: Profile | None = None
) -> list[Row]:
    """With `profile`, one more run of redis-benchmark and the batched engine collects CPU per
    request (this process's and Redis') and a flame graph of this process into it."""
    urls = services.up(settings, log=lambda _line: None)
    url = urls["FLASHSALE_REDIS_URL"]
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    client = connect(url, max_connections=concurrency + 8)
    batched = Engine(client, settings)
    unbatched = Engine(client, settings, batching=False)
    await load_bench_sale(batched)
    await engine_side(batched, "warm-up", min(requests, 5000), concurrency)
    rows: dict[str, list[Row]] = {}
    for _ in range(2):  # alternate the sides so neither always runs on the fuller zset
        for row in (
            await asyncio.to_thread(_redis_benchmark, settings, port, requests, concurrency),
            await engine_side(
                batched, "engine.reserve (per-tick pipelines)", requests, concurrency
            ),
            await engine_side(
                unbatched, "engine.reserve (one EVALSHA per call)", requests // 4, concurrency
            ),
        ):
            rows.setdefault(row.name, []).append(row)
        done = ", ".join(f"{n} {r[-1].requests_per_s:.0f}/s" for n, r in rows.items())
        print(f"  round done: {done}")
    if profile is not None:
        await _profile(profile, settings, batched, url, requests, concurrency)
    await batched.forget_sale(BENCH_SALE)  # ~100k holds would slow every later key scan
    await client.aclose()
    return [max(r, key=lambda x: x.requests_per_s) for r in rows.values()]


async def _profile(
    profile: Profile, settings: Settings, engine: Engine, url: str, requests: int, concurrency: int
) -> None:
    from flashsale.loadtests.bench.profile import profile_in_process

    port = int(url.rsplit(":", 1)[1].split("/")[0])
    batched = "engine.reserve (per-tick pipelines)"

    async def baseline() -> Row:
        return await asyncio.to_thread(_redis_benchmark, settings, port, requests, concurrency)

    async def reserve() -> Row:
        return await engine_side(engine, batched, requests, concurrency)

    sides = [
        ("redis-benchmark EVALSHA reserve.lua", requests, baseline),
        (batched, requests, reserve),
    ]
    await profile_in_process(profile, url, sides)
