"""`flashsale recover`: rebuild a sale's Redis state from PostgreSQL after Redis lost it."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass

from flashsale.engine import Engine, keys
from flashsale.engine.connection import redis_errors
from flashsale.engine.errors import FlashsaleError
from flashsale.engine.results import Code
from flashsale.reconciler.config import ReconcilerConfig
from flashsale.reconciler.restore import (
    Lifetimes,
    counters,
    reserved_units,
    restore_counters,
    restore_holds,
    restore_stock,
)
from flashsale.reconciler.streams import SaleStream, consumer_name, dead_letters
from flashsale.reconciler.worker import Log, Reconciler
from flashsale.store.db import Connection
from flashsale.store.recovery import holds_to_restore, stock_units
from flashsale.store.sales import load_sale_record


class RecoverError(FlashsaleError):
    """The sale cannot be rebuilt as asked (refused before any write, or stopped half-way:
    running recover again finishes the job, every step of it is idempotent)."""


@dataclass(frozen=True, slots=True)
class Recovered:
    version: int
    status: str
    drained: int  # stream entries flushed before the rebuild
    orders: int  # orders whose units count as sold
    holds: int  # hold hashes written back (held, and ended ones within their retention)
    idem_keys: int  # idempotency keys written back
    expired: int  # held holds whose expiry had passed: expired again on the spot
    open_holds: int  # held holds back in the sale after that
    sold: dict[str, int]  # per sku


async def drain(engine: Engine, config: ReconcilerConfig, sale_id: str, log: Log) -> int:
    """Flush whatever the sale's stream still holds, so PostgreSQL is complete before it is
    read. When a running reconciler owns the sale, wait for it to do so instead."""
    own = dataclasses.replace(config, only_sales=(sale_id,), progress_s=0)
    flushed = (await Reconciler(engine, own, log=log).run(once=True)).flushed_events
    stream = SaleStream(engine.client, sale_id, consumer_name())
    deadline = time.monotonic() + config.drain_timeout_s
    while (lag := await stream.lag()).entries:
        if time.monotonic() > deadline:
            raise RecoverError(f"{lag.entries} events of {sale_id} are still not flushed")
        await asyncio.sleep(0.1)
    return flushed


async def _wipe_except_streams(engine: Engine, sale_id: str) -> None:
    """What is left of a half-lost sale cannot be trusted: every key but the event streams
    goes (those are drained and keep their consumer group)."""
    keep = {keys.events(sale_id), dead_letters(sale_id)}
    with redis_errors():
        batch = [
            key
            async for key in engine.client.scan_iter(match=keys.prefix(sale_id) + "*", count=1000)
            if key not in keep
        ]
        for start in range(0, len(batch), 500):
            await engine.client.delete(*batch[start : start + 500])
        await engine.client.srem(keys.sales_index(), sale_id)


async def recover(
    engine: Engine,
    conn: Connection,
    config: ReconcilerConfig,
    sale_id: str,
    *,
    force: bool = False,
    log: Log,
) -> Recovered:
    found = await load_sale_record(conn, sale_id)
    if found is None:
        raise RecoverError(f"PostgreSQL has no sale {sale_id}")
    record, version, status = found
    if not force and await engine.stock(sale_id) is not None:
        raise RecoverError(f"sale {sale_id} is loaded in Redis; --force rebuilds it anyway")
    # Wipe first, then drain: with the sale's hash, holds and stock gone no script can add an
    # event any more, so once drained PostgreSQL has every event there will ever be.
    await _wipe_except_streams(engine, sale_id)
    drained = await drain(engine, config, sale_id, log)
    life = Lifetimes(config.hold_retention_ms, config.idem_ttl_ms)
    now_ms = int(time.time() * 1000)
    stock = await stock_units(conn, sale_id, [item.sku for item in record.items])
    holds = await holds_to_restore(conn, sale_id, now_ms - life.retention_ms)
    if await restore_stock(engine, sale_id, stock, reserved_units(holds)) is not Code.OK:
        raise RecoverError(f"sale {sale_id} was loaded again while it was being rebuilt")
    loaded = await engine.load_sale(record.to_config(version))
    if loaded.code is not Code.OK:
        raise RecoverError(f"load_sale refused the rebuilt sale: {loaded}")
    # The counters before the holds: a held hold may expire, and give its units and its
    # customer's room back, as soon as it is in the expiry index.
    await restore_counters(engine, sale_id, counters(holds))
    written, idem_keys = await restore_holds(engine, sale_id, holds, life, now_ms)
    expired = await _expire_due(engine, sale_id)
    code, _ = await engine.set_status(sale_id, status)
    if code is not Code.OK:
        raise RecoverError(f"sale {sale_id} is rebuilt but stays paused: set_status said {code}")
    state = await engine.stock(sale_id)
    sold = {sku: sum(s.sold for s in sups) for sku, sups in stock}
    live = sum(1 for h in holds if h.status == "confirmed")
    open_holds = state.open_holds if state else 0
    return Recovered(version, status, drained, live, written, idem_keys, expired, open_holds, sold)


async def _expire_due(engine: Engine, sale_id: str) -> int:
    """Held holds whose expiry passed while Redis was without them are expired now, the way
    the sweeper would: their units come back and an `expired` event tells PostgreSQL."""
    expired = 0
    while True:
        swept = await engine.sweep(sale_id)
        expired += swept.expired
        if not swept.more:
            return expired
