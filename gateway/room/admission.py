"""The admission loops: every gateway worker runs them, the Redis lease lets one tick each room."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket

from flashsale.engine.errors import EngineUnavailable
from flashsale.engine.results import Code
from flashsale.engine.settings import Settings
from flashsale.engine.waiting_room import RoomConfig, TickResult, WaitingRoom, silence_allowed_ms
from flashsale.gateway.sale_records import SaleRecords

log = logging.getLogger("flashsale.admission")

DISCOVER_S = 1.0
IDLE_S = 0.5  # between ticks of a room nobody waits in (the lease lasts several of them)
ABSENT_S = 5.0


class AdmissionLoops:
    """Finds the sales with a waiting room and keeps one task per sale. A task ticks its room
    (lua/queue_admit.lua) every `queue_tick_ms` while it holds the room's lease, and otherwise
    tries to take the lease every half lease. The lease is checked and renewed inside the same
    script that admits, so even two workers that both believe they lead cannot both admit."""

    def __init__(self, room: WaitingRoom, records: SaleRecords, settings: Settings) -> None:
        self.room = room
        self.records = records
        self.settings = settings
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.leading: set[str] = set()
        self.sales: list[str] = []
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        try:
            while True:
                try:
                    self.sales = await self.records.room_sale_ids()
                except EngineUnavailable as exc:
                    log.warning("cannot list waiting rooms: %s", exc)
                else:
                    self._sync(self.sales)
                await asyncio.sleep(DISCOVER_S)
        finally:
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def _sync(self, sale_ids: list[str]) -> None:
        wanted = set(sale_ids)
        for sale_id in list(self._tasks):
            if sale_id not in wanted:
                self._tasks.pop(sale_id).cancel()
                self.leading.discard(sale_id)
        for sale_id in wanted - self._tasks.keys():
            self._tasks[sale_id] = asyncio.create_task(self._loop(sale_id))

    async def _loop(self, sale_id: str) -> None:
        while True:
            try:
                delay_s = await self._tick(sale_id)
            except EngineUnavailable as exc:
                log.warning("admission tick of %s failed: %s", sale_id, exc)
                delay_s = self.settings.queue_lease_ms / 2000
            await asyncio.sleep(delay_s)

    async def _tick(self, sale_id: str) -> float:
        """One tick; returns how long to wait before the next."""
        record = await self.records.get(sale_id)
        if record is None or not record.waiting_room.enabled:
            return DISCOVER_S
        wr = record.waiting_room
        config = RoomConfig(
            admit_rate_per_s=wr.admit_rate_per_s,
            max_active=wr.max_active,
            session_ms=wr.token_ttl_s * 1000,
            ghost_after_ms=silence_allowed_ms(self.settings, self.settings.queue_poll_ms),
            lease_ms=self.settings.queue_lease_ms,
            claim_ms=self.settings.queue_claim_ms,
            unheard_poll_ms=self.settings.queue_poll_ms,
        )
        result = await self.room.queue_admit(sale_id, self.owner, config)
        return self._next_delay_s(sale_id, result)

    def _next_delay_s(self, sale_id: str, result: TickResult) -> float:
        if result.code is Code.NOT_LEADER:
            self.leading.discard(sale_id)
            return self.settings.queue_lease_ms / 2000
        if result.code in (Code.UNKNOWN_SALE, Code.NO_WAITING_ROOM):
            self.leading.discard(sale_id)
            return ABSENT_S  # PostgreSQL knows a room this Redis does not hold (yet)
        self.leading.add(sale_id)
        tick_s = self.settings.queue_tick_ms / 1000
        if result.code is Code.OK and result.serving < result.seq:
            return tick_s
        if result.code is Code.SALE_NOT_OPEN and result.detail == "scheduled":
            return tick_s  # the opening (and its shuffle) should not lag the start time
        return max(tick_s, IDLE_S)
