"""The saga runner: claims due orders, runs their next step, writes the outcome, forever.

Several reconcilers share the work: the store's claim leases a step to one process (see
store/saga/claims.py). A step that cannot reach a party is tried again with capped exponential
backoff and jitter; after `max_attempts` tries it goes to the dead letters
(saga_steps.status = 'dead', orders.dead_step) for an operator (`flashsale saga retry`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
from redis.exceptions import RedisError

from flashsale.engine import logs
from flashsale.engine.errors import EngineUnavailable
from flashsale.engine.settings import Settings
from flashsale.reconciler.adapters import PartyUnavailable
from flashsale.reconciler.backoff import jittered_ms
from flashsale.reconciler.metrics import Metrics
from flashsale.reconciler.saga import STEPS, Parties
from flashsale.store.saga import claims, orders
from flashsale.store.saga.claims import Claim

log = logging.getLogger("flashsale.saga")

TRANSIENT = (PartyUnavailable, EngineUnavailable, RedisError, OSError, TimeoutError)
PG_DOWN = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


@dataclass(frozen=True, slots=True)
class SagaConfig:
    max_attempts: int
    backoff_base_ms: int
    backoff_cap_ms: int
    concurrency: int
    lease_ms: int
    poll_idle_ms: int = 100  # pause when nothing was due

    @classmethod
    def from_settings(cls, settings: Settings) -> SagaConfig:
        return cls(
            max_attempts=settings.saga_max_attempts,
            backoff_base_ms=settings.saga_backoff_base_ms,
            backoff_cap_ms=settings.saga_backoff_cap_ms,
            concurrency=settings.saga_concurrency,
            lease_ms=settings.saga_lease_ms,
        )


class SagaRunner:
    def __init__(
        self,
        pool: asyncpg.Pool,
        parties: Parties,
        config: SagaConfig,
        metrics: Metrics,
    ) -> None:
        self.pool = pool
        self.parties = parties
        self.config = config
        self.metrics = metrics
        self._running: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        running = self._running
        try:
            while not stop.is_set():
                try:
                    claimed = await self._claim()
                except PG_DOWN as exc:
                    log.warning(
                        "saga: PostgreSQL unavailable (%s); retrying",
                        exc,
                        extra={"event": "saga.unavailable"},
                    )
                    await _pause(stop, 1.0)
                    continue
                for c in claimed:
                    task = asyncio.create_task(self._one(c))
                    running.add(task)
                    task.add_done_callback(running.discard)
                if not claimed:
                    await _pause(stop, self.config.poll_idle_ms / 1000)
        finally:
            # Steps in flight finish and write their outcome; a kill instead leaves their lease
            # to run out, and another process takes them over.
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    async def _claim(self) -> list[Claim]:
        free = self.config.concurrency - len(self._running)
        if free <= 0:
            return []
        async with self.pool.acquire() as conn:
            return await claims.claim(conn, free, self.config.lease_ms)

    async def _one(self, c: Claim) -> None:
        """One try of one step, its log lines and the events it writes naming the order's
        request. No PostgreSQL connection is held while the parties are asked."""
        with logs.bind(request=c.request_id, sale_id=c.sale_id, order_id=c.order_id):
            await self._try(c)

    async def _try(self, c: Claim) -> None:
        try:
            if c.attempts > self.config.max_attempts:
                await self._failed(c, "too many tries (the step's process died each time)")
                return
            async with self.pool.acquire() as conn:
                order = await orders.load(conn, c)
            try:
                decision = await STEPS[c.step](self.parties, order)
            except TRANSIENT as exc:
                self.metrics.saga(c.step, "retry")
                await self._failed(c, f"{type(exc).__name__}: {exc}")
                return
            async with self.pool.acquire() as conn:
                if await orders.write(conn, c, order, decision):
                    self.metrics.saga(c.step, "done")
                    _step_line(c, decision.outcome, decision.status or order.status, True)
                else:
                    _step_line(c, decision.outcome, order.status, False)
        except PG_DOWN as exc:
            # The lease runs out and the step runs again; its parties answer by key.
            log.warning(
                "saga: order %s step %s: PostgreSQL failed (%s)",
                c.order_id,
                c.step,
                exc,
                extra={"event": "saga.unavailable", "step": c.step},
            )
        except Exception as exc:  # a bug in a step must not stop the others
            log.exception(
                "saga: order %s step %s: %s: %s",
                c.order_id,
                c.step,
                type(exc).__name__,
                exc,
                extra={"event": "saga.crash", "step": c.step},
            )
            with contextlib.suppress(Exception):
                await self._failed(c, f"{type(exc).__name__}: {exc}")

    async def _failed(self, c: Claim, error: str) -> None:
        """Due again after a backoff, or dead after `max_attempts` tries."""
        config = self.config
        dead = c.attempts >= config.max_attempts
        delay_ms = jittered_ms(config.backoff_base_ms, config.backoff_cap_ms, c.attempts - 1)
        async with self.pool.acquire() as conn:
            written = await claims.record_failure(conn, c, error, delay_ms=delay_ms, dead=dead)
        if written and dead:
            self.metrics.saga(c.step, "dead")
        if written:
            level, event = (logging.ERROR, "saga.dead") if dead else (logging.INFO, "saga.retry")
            log.log(
                level,
                "saga: order %s step %s %s: %s",
                c.order_id,
                c.step,
                "dead" if dead else f"due again in {delay_ms / 1000:.2f}s",
                error,
                extra={"event": event, "step": c.step, "attempt": c.attempts, "error": error},
            )


def _step_line(c: Claim, outcome: str, status: str, written: bool) -> None:
    """One line per step run: its outcome, or that another process had taken the step over."""
    log.info(
        "saga: order %s step %s: %s",
        c.order_id,
        c.step,
        outcome if written else "outcome dropped, the step was taken over",
        extra={
            "event": "saga.step" if written else "saga.step_dropped",
            "step": c.step,
            "attempt": c.attempts,
            "round": c.round,
            "outcome": outcome,
            "status": status,
        },
    )


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
