"""One webhook delivery per supplier at a time in a gateway worker, waited for BEFORE a
PostgreSQL connection is taken.

A delivery holds its supplier's advisory lock (store/feeds.py) for its whole transaction, so a
busy supplier's deliveries go one after another anyway. Waiting for that lock while holding a
pool connection would let one supplier's burst take every connection of the pool and stall the
other routes; waiting here costs nothing but the request. The queue is bounded per supplier,
in length and in time: past either the supplier is told 503 with Retry-After (its retry is
safe: the delivery id de-duplicates)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from flashsale.gateway.problems import Problem

MAX_QUEUED = 32  # deliveries of one supplier waiting in one worker, beyond the one running
WAIT_S = 10.0  # the longest a delivery waits for its turn


def busy(supplier_id: str, why: str) -> Problem:
    detail = f"deliveries of supplier {supplier_id} are queued ({why}): send it again"
    return Problem(503, "UNAVAILABLE", detail, {"Retry-After": "1"})


class SupplierTurns:
    def __init__(self, max_queued: int = MAX_QUEUED, wait_s: float = WAIT_S) -> None:
        self.max_queued = max_queued
        self.wait_s = wait_s
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}  # the delivery running and those waiting

    def users(self, supplier_id: str) -> int:
        return self._users.get(supplier_id, 0)

    @asynccontextmanager
    async def turn(self, supplier_id: str) -> AsyncIterator[None]:
        """The supplier's turn in this worker; raises 503 when its queue is full or too slow."""
        if self.users(supplier_id) > self.max_queued:
            raise busy(supplier_id, f"more than {self.max_queued} waiting")
        lock = self._locks.setdefault(supplier_id, asyncio.Lock())
        self._users[supplier_id] = self.users(supplier_id) + 1
        try:
            try:
                async with asyncio.timeout(self.wait_s):
                    await lock.acquire()
            except TimeoutError:
                raise busy(supplier_id, f"no turn within {self.wait_s:g} s") from None
            try:
                yield
            finally:
                lock.release()
        finally:
            self._users[supplier_id] -= 1
            if not self._users[supplier_id]:  # nobody left: forget the supplier
                del self._users[supplier_id], self._locks[supplier_id]
