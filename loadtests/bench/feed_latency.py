"""`flashsale bench feeds`, second half: webhook-to-Redis latency. The feed simulator pushes
signed deliveries to a real gateway at a fixed rate of records per second; the bench watches
the sale's offers in Redis and notes when each delivery's levels are visible. Latency = visible
(bench clock) - sent (simulator clock, the same machine's wall clock)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import statistics
import time
from dataclasses import dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx

from flashsale import services
from flashsale.engine import (
    Engine,
    Settings,
    keys,
)
from flashsale.engine.connection import connect
from flashsale.loadtests.bench.feeds import forget
from flashsale.loadtests.gateway_process import gateway
from flashsale.loadtests.run_secrets import production_secrets
from flashsale.loadtests.sale_api import SaleApi
from flashsale.loadtests.simulators import processes as sim
from flashsale.store.migrate import migrate

SALE = "bench-feed-latency"
SUPPLIER = "bench-feed-hook"
SKUS = 100
LOADED = 100_000  # under the default thresholds.max_units; levels go down from here
BATCH = 100  # records per delivery: 10 deliveries a second at 1,000 records/s


@dataclass(frozen=True, slots=True)
class LatencyBench:
    records: int
    rate_per_s: float  # records per second actually sent
    p50_ms: float
    p99_ms: float
    max_ms: float

    NAME = "webhook -> visible in Redis [records/s]"

    def note(self) -> str:
        return (
            f"webhook latency: {self.records} records in deliveries of {BATCH} at "
            f"{self.rate_per_s:.0f} records/s, p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, "
            f"max {self.max_ms:.1f} ms (simulator send -> level visible in Redis)"
        )


def _sku(n: int) -> str:
    return f"H{n % SKUS:03d}"


def plan(deliveries: int, start_s: float) -> list[dict[str, Any]]:
    """Delivery k sets BATCH skus to LOADED - 1 - k: every later level is lower, so `offer <=
    level` says a delivery's change (or a later one's) is visible."""
    out = []
    for k in range(deliveries):
        as_of = _iso_ms(int(start_s * 1000) + k)
        items = [
            {"supplier_sku": f"S-{_sku(k * BATCH + i)}", "on_hand": LOADED - 1 - k}
            for i in range(BATCH)
        ]
        out.append({"delivery_id": f"lat-{int(start_s)}-{k}", "as_of": as_of, "items": items})
    return out


def _iso_ms(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


async def _watch(
    engine: Engine, deliveries: list[dict[str, Any]], rate: float, timeout_s: float
) -> list[float]:
    """When each delivery's levels were first seen in Redis (time.time()), looked at every 2 ms:
    the deliveries from the oldest unseen to those due by the schedule."""
    seen: list[float | None] = [None] * len(deliveries)
    field = f"avail:{SUPPLIER}"
    started = time.monotonic()
    deadline = started + timeout_s
    first_unseen = 0
    while first_unseen < len(deliveries):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(deliveries) - first_unseen} deliveries never became visible")
        due = int((time.monotonic() - started) * rate) + 3
        window = range(first_unseen, min(len(deliveries), max(due, first_unseen + 1)))
        pipe = engine.client.pipeline(transaction=False)
        for k in window:
            for item in deliveries[k]["items"]:
                pipe.hget(keys.stock(SALE, item["supplier_sku"][2:]), field)
        values = await pipe.execute()
        now = time.time()
        for j, k in enumerate(window):
            level = LOADED - 1 - k
            got = values[j * BATCH : (j + 1) * BATCH]
            if seen[k] is None and all(v is not None and int(v) <= level for v in got):
                seen[k] = now
        while first_unseen < len(deliveries) and seen[first_unseen] is not None:
            first_unseen += 1
        await asyncio.sleep(0.002)
    return [s for s in seen if s is not None]


async def _setup(api: SaleApi, sim_url: str, gw_url: str, secret: str) -> None:
    body = {
        "name": "bench feed latency",
        "starts_at": "2020-01-01T00:00:00Z",
        "ends_at": None,
        "hold_ttl_s": 600,
        "per_user_limit": 0,
        "items": [
            {"sku": _sku(n), "price_minor": 100,
             "suppliers": [{"id": SUPPLIER, "stock": LOADED, "cost_minor": 50, "priority": 0}]}
            for n in range(SKUS)
        ],
    }  # fmt: skip
    await asyncio.to_thread(api.call, "PUT", f"/v1/admin/sales/{SALE}", body, admin=True)
    await asyncio.to_thread(api.call, "POST", f"/v1/admin/sales/{SALE}/open", admin=True)
    feed = {
        "kind": "webhook",
        "secret": secret,
        "sku_map": [{"supplier_sku": f"S-{_sku(n)}", "sku": _sku(n)} for n in range(SKUS)],
    }
    supplier = {"name": "bench webhook supplier", "feed": feed}
    await asyncio.to_thread(
        api.call, "PUT", f"/v1/admin/suppliers/{SUPPLIER}", supplier, admin=True
    )
    async with httpx.AsyncClient(base_url=sim_url, timeout=10) as client:
        target = f"{gw_url}/v1/feeds/{SUPPLIER}"
        answer = await client.put(
            f"/_sim/feeds/{SUPPLIER}", json={"secret": secret, "target": target}
        )
        answer.raise_for_status()


async def _answered(client: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
    """The simulator's records of every delivery (a level can be visible before its answer)."""
    deadline = time.monotonic() + 30
    while True:
        records: list[dict[str, Any]] = (await client.get("/_sim/records")).json()[SUPPLIER][
            "pushes"
        ]
        if len(records) >= count or time.monotonic() > deadline:
            return records
        await asyncio.sleep(0.1)


async def _run(engine: Engine, sim_url: str, records_per_s: int, seconds: float) -> LatencyBench:
    deliveries = plan(max(1, int(records_per_s * seconds) // BATCH), time.time())
    rate = records_per_s / BATCH
    async with httpx.AsyncClient(base_url=sim_url, timeout=30) as client:
        push = {"deliveries": deliveries, "rate_per_s": rate, "background": True}
        (await client.post(f"/_sim/feeds/{SUPPLIER}/push", json=push)).raise_for_status()
        seen = await _watch(engine, deliveries, rate, seconds * 3 + 30)
        records = await _answered(client, len(deliveries))
    sent = {r["delivery_id"]: r for r in records}
    refused = [r for r in sent.values() if r["status"] != 202]
    if refused or len(sent) != len(deliveries):
        raise RuntimeError(f"{len(refused)} deliveries refused, e.g. {refused[:1]}")
    lags = sorted(
        (seen_at - sent[d["delivery_id"]]["sent_at"]) * 1000
        for d, seen_at in zip(deliveries, seen, strict=True)
    )
    span = max(r["sent_at"] for r in records) - min(r["sent_at"] for r in records)
    cuts = statistics.quantiles(lags, n=100, method="inclusive")
    return LatencyBench(len(deliveries) * BATCH, len(deliveries) * BATCH / max(span, 1e-9),
                        cuts[49], cuts[98], lags[-1])  # fmt: skip


async def bench_feed_latency(
    settings: Settings, records_per_s: int, seconds: float
) -> LatencyBench:
    """A gateway (2 workers, production mode, this run's secrets) and the feed simulator."""
    urls = services.up(settings, log=lambda _line: None)
    settings, secret_env = production_secrets(settings)
    env = {**urls, **secret_env, "FLASHSALE_FEED_KEY": secrets.token_urlsafe(32)}
    sim.stop(settings, "feeds")
    sim.start(settings, "feeds", log=False)
    sim_url = f"http://127.0.0.1:{sim.ports(settings)['feeds']}"
    client = connect(urls["FLASHSALE_REDIS_URL"])
    engine = Engine(client, settings)
    conn = await asyncpg.connect(urls["FLASHSALE_DATABASE_URL"])
    try:
        await migrate(conn)
        await forget(engine, conn, [SALE], (SUPPLIER,))
        with gateway(env, workers=2) as gw:
            api = SaleApi(gw.url, SALE, settings.admin_key)
            await _setup(api, sim_url, gw.url, secrets.token_urlsafe(32))
            return await _run(engine, sim_url, records_per_s, seconds)
    finally:
        sim.stop(settings, "feeds")
        with contextlib.suppress(Exception):
            await forget(engine, conn, [SALE], (SUPPLIER,))
        await conn.close()
        await client.aclose()
