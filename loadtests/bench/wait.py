"""`flashsale bench wait`: Engine.reserve on the launcher's Redis Cluster answered at once vs
answered after WAIT 1 (every batch's writes on one replica), in the same run."""

from __future__ import annotations

import dataclasses

from flashsale import services
from flashsale.engine import Engine, Settings
from flashsale.engine.connection import connect
from flashsale.loadtests.bench.engine import Row, engine_side, load_bench_sale

SALE = "bench-wait"
NO_WAIT_ROW = "engine.reserve on the cluster, answered at once (WAIT 0)"
WAIT_ROW = "engine.reserve on the cluster, answered after WAIT 1"


async def bench_wait(settings: Settings, requests: int, concurrency: int) -> list[Row]:
    """The engine bench's workload (`concurrency` callers, 1 unit of one hot sku) on one sale of
    the cluster, with and without WAIT, alternated twice; the best run of each, WAIT 0 first."""
    urls = services.up(settings, log=lambda _line: None)
    client = connect(urls["FLASHSALE_REDIS_CLUSTER_URL"], cluster=True)
    at_once = Engine(client, dataclasses.replace(settings, redis_wait_replicas=0))
    waiting = Engine(client, dataclasses.replace(settings, redis_wait_replicas=1))
    try:
        await load_bench_sale(at_once, SALE)
        await engine_side(at_once, "warm-up", min(requests, 5000), concurrency, SALE)
        rows: dict[str, list[Row]] = {}
        for _ in range(2):  # alternate so neither side always runs on the fuller holds zset
            for engine, name in ((at_once, NO_WAIT_ROW), (waiting, WAIT_ROW)):
                row = await engine_side(engine, name, requests, concurrency, SALE)
                rows.setdefault(name, []).append(row)
            done = ", ".join(f"{n} {r[-1].requests_per_s:.0f}/s" for n, r in rows.items())
            print(f"  round done: {done}")
        # A WAIT short of its replica fails its reserves, and engine_side then gives no figures.
        return [max(r, key=lambda x: x.requests_per_s) for r in rows.values()]
    finally:
        await at_once.forget_sale(SALE)  # ~400k holds would slow every later key scan
        await client.aclose()
