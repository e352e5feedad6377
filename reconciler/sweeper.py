"""The hold sweeper: releases the expired holds of every known sale on a short period."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from flashsale.engine import Engine
from flashsale.engine.errors import EngineUnavailable
from flashsale.reconciler.metrics import Metrics


async def sweep_sale(engine: Engine, sale_id: str, batch: int) -> int:
    """Expire the sale's overdue holds, one bounded script call at a time; how many."""
    total = 0
    while True:
        result = await engine.sweep(sale_id, batch)
        total += result.expired
        if not result.more:
            return total


async def sweep_all(engine: Engine, sale_ids: Sequence[str], batch: int) -> int:
    """Every sale at once: the engine's batcher sends the calls of one tick as one pipeline."""
    done = await asyncio.gather(*(sweep_sale(engine, s, batch) for s in sale_ids))
    return sum(done)


async def sweep_forever(
    engine: Engine,
    sales: Callable[[], Sequence[str]],
    interval_ms: int,
    batch: int,
    metrics: Metrics,
    stop: asyncio.Event,
) -> None:
    """Sweeps every sale the reconciler knows of (in Redis and in PostgreSQL), not only the
    ones it flushes: sweeping needs no PostgreSQL, so it goes on during an outage with the last
    list, and a second sweeper finds nothing to do. Sales only Redis knows (benchmarks, engine
    tests) are left to reserve.lua's lazy reclaim, which is the backstop, not the plan."""
    while not stop.is_set():
        try:
            metrics.swept_holds += await sweep_all(engine, sales(), batch)
        except EngineUnavailable:
            metrics.sweep_errors += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_ms / 1000)
