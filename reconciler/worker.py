"""The reconcile loop: owned sales' stream entries -> one PostgreSQL transaction -> ack, forever."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
from redis.exceptions import RedisError

from flashsale.engine import Engine
from flashsale.engine.errors import EngineUnavailable
from flashsale.engine.events import Entry, Event, decode
from flashsale.reconciler.backoff import Backoff, next_batch_size
from flashsale.reconciler.config import ReconcilerConfig
from flashsale.reconciler.metrics import Metrics
from flashsale.reconciler.streams import SaleStream, consumer_name
from flashsale.reconciler.sweeper import sweep_forever
from flashsale.store import ownership
from flashsale.store.db import Connection
from flashsale.store.flush import FlushResult, flush, is_data_error
from flashsale.store.migrate import migrate

Log = Callable[[str], None]
logger = logging.getLogger("flashsale.reconciler")

# Redis trouble: keep the PostgreSQL session (and the sales it owns), wait, retry.
REDIS_DOWN = (RedisError, EngineUnavailable)
# PostgreSQL trouble: the session, and with it every sale lock, is gone or suspect.
# InternalClientError: a server that shuts down sends its FATAL to an idle session, and the
# next query then finds the protocol still busy with it instead of a clean connection error.
PG_DOWN = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


def log_stderr(line: str) -> None:
    """A line for a person, as the short commands (`recover`) print them."""
    print(line, file=sys.stderr, flush=True)


def log_json(line: str) -> None:
    """A free-text line of a long-running job into the process's JSON log (engine/logs.py)."""
    logger.info(line)


@dataclass(slots=True)
class Owned:
    """A sale this process holds the lock of, and where it is in the sale's stream."""

    stream: SaleStream
    batch: int
    claiming: bool = True  # walk the group's pending list before reading new entries
    caught_up: bool = False  # the last read found no new entry
    unsettled: tuple[list[str], list[tuple[Entry, str]]] | None = None  # committed, not acked


@dataclass(slots=True)
class _State:
    conn: Connection | None = None
    owned: dict[str, Owned] = field(default_factory=dict)
    known: list[str] = field(default_factory=list)
    refreshed_at: float = float("-inf")


class Reconciler:
    """Owns a fair share of the sales (ownership.py) and flushes their events in order."""

    def __init__(
        self,
        engine: Engine,
        config: ReconcilerConfig,
        *,
        consumer: str | None = None,
        log: Log | None = None,
        jobs: Sequence[Callable[[asyncio.Event], Coroutine[Any, Any, None]]] = (),
    ) -> None:
        self.engine = engine
        self.jobs = jobs  # run beside the flush until `stop` (the saga, the outbox)
        self.config = config
        self.consumer = consumer or consumer_name()
        self.log = log  # None: the JSON log; else a sink of the lines (recover's person, tests)
        self.metrics = Metrics()
        self.stop = asyncio.Event()
        self._state = _State()
        self._backoff = Backoff(config.backoff_base_ms, config.backoff_cap_ms)
        self._once = False
        self._sweep_list: list[str] = []  # known sales; kept while PostgreSQL is away

    # --- the loop ------------------------------------------------------------------------------

    async def run(self, *, once: bool = False) -> Metrics:
        """Until `stop` is set (SIGTERM), or with `once` until owned streams are drained. A batch
        in flight when `stop` is set is committed and acknowledged before returning."""
        self._once = once
        tasks = [asyncio.create_task(self._report_forever())]
        if not once:  # a one-shot drain flushes only
            c = self.config
            sweeper = sweep_forever(
                self.engine,
                lambda: self._sweep_list,
                c.sweep_interval_ms,
                c.sweep_batch,
                self.metrics,
                self.stop,
            )
            tasks.append(asyncio.create_task(sweeper))
            tasks += [asyncio.create_task(job(self.stop)) for job in self.jobs]
        try:
            await self._loop()
        finally:
            self.stop.set()
            # Jobs see `stop` and finish the step in hand; what is left after that is cut off.
            await asyncio.wait(tasks, timeout=10)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._disconnect()
            self._say(
                "reconcile.stopped", f"reconcile {self.consumer} stopped: {self.metrics.line()}"
            )
        return self.metrics

    async def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                moved = await self._round()
            except REDIS_DOWN as exc:
                await self._wait_out("redis", exc)
                continue
            except PG_DOWN as exc:
                await self._disconnect()
                await self._wait_out("postgres", exc)
                continue
            self._backoff.reset()
            if moved == 0:
                if self._once and self._drained():
                    return
                await self._sleep(self.config.poll_idle_ms / 1000)

    async def _wait_out(self, what: str, exc: BaseException) -> None:
        self.metrics.retries += 1
        delay = self._backoff.next_delay_s()
        self._say(
            "reconcile.unavailable",
            f"reconcile: {what} unavailable ({type(exc).__name__}: {exc}); retry in {delay:.2f}s",
            logging.WARNING,
        )
        for owned in self._state.owned.values():
            # A read whose reply was lost left entries in our pending list: walk it again.
            owned.claiming = True
            owned.stream.rewind()
        await self._sleep(delay)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    def _drained(self) -> bool:
        owned = self._state.owned.values()
        return all(o.caught_up and not o.claiming and o.unsettled is None for o in owned)

    async def _round(self) -> int:
        """One batch from every owned sale; how many entries were applied."""
        conn = await self._connection()
        if time.monotonic() - self._state.refreshed_at >= self.config.refresh_s:
            await self._rebalance(conn)
        moved = 0
        for owned in list(self._state.owned.values()):
            if self.stop.is_set():
                break
            moved += await self._step(conn, owned)
        return moved

    # --- one sale, one batch -------------------------------------------------------------------

    async def _step(self, conn: Connection, owned: Owned) -> int:
        if owned.unsettled is not None:
            await owned.stream.settle(*owned.unsettled)
            owned.unsettled = None
        if owned.claiming:
            claimed = await owned.stream.claim(owned.batch)
            entries, owned.claiming = claimed.entries, not claimed.done
        else:
            entries = await owned.stream.read(owned.batch)
            owned.caught_up = not entries
            c = self.config
            owned.batch = next_batch_size(owned.batch, len(entries), c.min_batch, c.max_batch)
        if entries:
            await self._apply(conn, owned, entries)
        return len(entries)

    async def _apply(self, conn: Connection, owned: Owned, entries: list[Entry]) -> None:
        sale_id = owned.stream.sale_id
        decoded = decode(entries)
        started = time.perf_counter()
        result, refused = await self._flush(conn, sale_id, decoded.events)
        flush_s = time.perf_counter() - started
        fields = dict(entries)
        dead = [((i, fields[i]), why) for i, why in [*decoded.poison, *result.orphans, *refused]]
        for (entry_id, _), why in dead:
            self._say(
                "reconcile.dead_letter",
                f"reconcile: sale {sale_id} entry {entry_id} to dead letters: {why}",
                logging.ERROR,
                sale=sale_id,
                entry=entry_id,
            )
        # Committed: from here on a crash only means the batch is replayed, harmlessly.
        owned.unsettled = ([i for i, _ in entries], dead)
        await owned.stream.settle(*owned.unsettled)
        owned.unsettled = None
        self.metrics.observe_batch(len(entries), flush_s, result.orders, len(dead))

    async def _flush(
        self, conn: Connection, sale_id: str, events: Sequence[Event]
    ) -> tuple[FlushResult, list[tuple[str, str]]]:
        """The batch in one transaction; when PostgreSQL refuses its content, entry by entry so
        only the entries at fault go to the dead letters. (entries refused, with why)."""
        try:
            return await flush(conn, sale_id, events), []
        except Exception as exc:
            if not is_data_error(exc):
                raise
        orders, moves = 0, 0
        orphans: list[tuple[str, str]] = []
        refused: list[tuple[str, str]] = []
        for event in events:
            try:
                one = await flush(conn, sale_id, [event])
            except Exception as exc:
                if not is_data_error(exc):
                    raise
                refused.append((event.entry_id, f"refused by PostgreSQL: {exc}"))
                continue
            orders, moves = orders + one.orders, moves + one.movements
            orphans += one.orphans
        return FlushResult(orders, moves, orphans), refused

    # --- PostgreSQL session and sale ownership -------------------------------------------------

    async def _connection(self) -> Connection:
        if self._state.conn is None or self._state.conn.is_closed():
            conn = await asyncpg.connect(self.config.database_url, timeout=5, command_timeout=30)
            await migrate(conn)  # here, not at start-up: PostgreSQL may be down at start-up
            if not self._once:  # a one-shot drain takes what is free, it claims no share
                await ownership.register(conn)
            self._state = _State(conn=conn)
            self._say("reconcile.connected", f"reconcile {self.consumer}: connected to PostgreSQL")
        return self._state.conn

    async def _disconnect(self) -> None:
        """Closing the session releases every lock it holds; in-memory batches are dropped
        (their entries stay pending in Redis, for whoever owns the sale next)."""
        conn, self._state = self._state.conn, _State()
        self.metrics.owned_sales = 0
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)
            if not conn.is_closed():
                conn.terminate()

    async def _rebalance(self, conn: Connection) -> None:
        state = self._state
        # Named sales are taken even when Redis's index has lost them: `recover` drains the
        # stream of a sale whose other keys are gone.
        candidates = list(self.config.only_sales) or await self.engine.sale_ids()
        state.known = await ownership.known_sales(conn, candidates)
        self._sweep_list = state.known
        share = len(state.known)
        if not self._once:
            share = ownership.fair_share(share, await ownership.live_reconcilers(conn))
        for sale_id in sorted(state.owned, reverse=True):
            if sale_id not in state.known or len(state.owned) > share:
                await ownership.release(conn, sale_id)
                del state.owned[sale_id]
        for sale_id in state.known:
            if len(state.owned) >= share:
                break
            if sale_id not in state.owned and await ownership.try_acquire(conn, sale_id):
                # No Redis call here: the claim makes the group when it is missing, so a lock
                # is never taken without the sale being recorded as owned (and released later).
                stream = SaleStream(self.engine.client, sale_id, self.consumer)
                state.owned[sale_id] = Owned(stream, self.config.min_batch)
        for owned in state.owned.values():
            if not owned.claiming and await owned.stream.others_pending():
                owned.claiming = True
                owned.stream.rewind()
        state.refreshed_at = time.monotonic()
        self.metrics.owned_sales = len(state.owned)

    # --- reporting -----------------------------------------------------------------------------

    def _say(self, event: str, message: str, level: int = logging.INFO, **fields: str) -> None:
        if self.log is not None:
            self.log(message)
        else:
            logger.log(level, message, extra={"event": event, "consumer": self.consumer, **fields})

    async def refresh_lag(self) -> None:
        lags = [await o.stream.lag() for o in list(self._state.owned.values())]
        now_ms = await _server_ms(self.engine)
        oldest = min((lag.oldest_ms for lag in lags if lag.entries), default=now_ms)
        self.metrics.lag_entries = sum(lag.entries for lag in lags)
        self.metrics.lag_s = max(0.0, (now_ms - oldest) / 1000)

    async def _report_forever(self) -> None:
        """Lag is measured even without progress lines: /metrics shows it too."""
        every = self.config.progress_s
        while not self.stop.is_set():
            await self._sleep(every or 5.0)
            with contextlib.suppress(*REDIS_DOWN):
                await self.refresh_lag()
            if every > 0:
                self._say("reconcile.progress", f"reconcile {self.consumer}: {self.metrics.line()}")


async def _server_ms(engine: Engine) -> int:
    """Redis's clock, the one that stamped the entry ids."""
    seconds, micros = await engine.client.time()
    return int(seconds) * 1000 + int(micros) // 1000
