"""One worker's view of its waiting rooms: cached room state and pace, batched heartbeats,
claimed admissions and tokens, and how far the wait estimates were off."""

from __future__ import annotations

import asyncio
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from flashsale.engine.errors import EngineUnavailable
from flashsale.engine.sale import WaitingRoomConfig
from flashsale.engine.settings import Settings
from flashsale.engine.shuffle import prequeue_places
from flashsale.engine.waiting_room import Beat, Claim, RoomState, WaitingRoom
from flashsale.gateway.cache import Cached
from flashsale.gateway.room.eta import Pace, RateWindow, pace_of
from flashsale.gateway.room.tokens import Tokens

MIN_STALE_S = 1.0  # a quiet worker reloads rather than answer from older than this
SHUFFLE_IN_THREAD = 5_000  # pre-queues above this are drawn off the event loop
MAX_TICKETS = 500_000  # per-worker memory bound of the ticket caches
DEFAULT_RATE_PER_S = WaitingRoomConfig().admit_rate_per_s  # before a loop has ticked the room

Ticket = tuple[str, int]  # (sale, ticket number)


@dataclass
class EtaErrors:
    """Absolute error of the p50 estimate first given to a ticket, seen when it is admitted."""

    total_s: float = 0.0
    count: int = 0

    def add(self, error_s: float) -> None:
        self.total_s += error_s
        self.count += 1

    @property
    def mean_s(self) -> float:
        return self.total_s / self.count if self.count else 0.0


class RoomViews:
    def __init__(self, room: WaitingRoom, tokens: Tokens, settings: Settings) -> None:
        self.room = room
        self.tokens = tokens
        fresh_s = settings.queue_cache_ms / 1000
        self.states: Cached[str, RoomState | None] = Cached(
            self._load_state, fresh_s, max(fresh_s * 4, MIN_STALE_S)
        )
        self.windows: dict[str, RateWindow] = {}
        self.paces: dict[str, Pace] = {}  # per state load
        self.loaded_at: dict[str, float] = {}  # monotonic time of each room's last state load
        self.eta_errors: dict[str, EtaErrors] = {}
        self._beats: dict[str, dict[int, Beat]] = {}
        self._claims: dict[Ticket, Claim] = {}
        self._issued: dict[Ticket, str] = {}
        self._predicted_ms: dict[Ticket, int] = {}

    def state_now(self, sale_id: str, min_seq: int = 0) -> RoomState | None:
        """The cached state if it can be served at once and is recent enough, else None."""
        found, state = self.states.get_now(sale_id)
        if found and state is not None and state.seq >= min_seq:
            return state
        return None

    async def state(self, sale_id: str, min_seq: int = 0) -> RoomState | None:
        """The cached state; reloaded when it predates ticket `min_seq`."""
        state = await self.states.get(sale_id)
        if state is not None and state.seq < min_seq:
            state = await self.states.refresh(sale_id)
        return state

    async def _load_state(self, sale_id: str) -> RoomState | None:
        state = await self.room.queue_state(sale_id)
        if state is None:
            return None
        self.loaded_at[sale_id] = time.monotonic()
        window = self.windows.setdefault(sale_id, RateWindow())
        busy = state.opened and state.admitting and state.waiting > 0 and state.free_units > 0
        rate = state.rate_per_s or DEFAULT_RATE_PER_S
        window.add(state.now_ms, state.serving, state.admitted, busy=busy, rate_per_s=rate)
        self.paces[sale_id] = pace_of(window.busy_intervals(), rate)
        if state.opened and state.prequeue > SHUFFLE_IN_THREAD:
            await asyncio.to_thread(prequeue_places, state.seed, state.prequeue)
        return state

    def beat(self, sale_id: str, place: int, beat: Beat) -> None:
        """The place was heard from (the most lenient beat if it was heard from twice since the
        last flush)."""
        beats = self._beats.setdefault(sale_id, {})
        beats[place] = max(beat, beats.get(place, beat))

    def pace(self, state: RoomState) -> Pace:
        rate = state.rate_per_s or DEFAULT_RATE_PER_S
        return self.paces.get(state.sale_id) or pace_of([], rate)

    def age_s(self, sale_id: str) -> float:
        """How long ago the cached state of the room was read."""
        return time.monotonic() - self.loaded_at.get(sale_id, time.monotonic())

    async def flush_beats(self) -> None:
        """Sends the heartbeats gathered since the last call, one script call per sale and batch.
        Lost beats are only a delay: ghosts are judged over much longer than a flush period."""
        beats, self._beats = self._beats, {}
        for sale_id, places in beats.items():
            try:
                await self.room.queue_beat(sale_id, places)
            except EngineUnavailable:
                continue

    async def claim(
        self, sale_id: str, number: int, place: int, *, may_return: bool
    ) -> Claim | None:
        """What became of a passed place, asked of Redis (lua/queue_claim.lua: an admission is
        picked up, a place without one comes back in line). A picked-up admission is final, so
        cached for good; anything else is asked again at the next poll."""
        key = (sale_id, number)
        found = self._claims.get(key)
        if found is None:
            found = await self.room.queue_claim(sale_id, number, place, may_return=may_return)
            if found is not None and found.admission is not None:
                self._bound(self._claims)
                self._claims[key] = found
        return found

    def token(self, sale_id: str, number: int, place: int, claim: Claim) -> str:
        """The ticket's admission token; the same one on every poll (its attempts are counted).
        Only a claimed admission gets one: an admission can be taken back only before that."""
        key = (sale_id, number)
        token = self._issued.get(key)
        if token is None and claim.admission is not None:
            adm = claim.admission
            token = self.tokens.issue(
                sale_id, claim.customer_id, place, adm.admitted_at_ms, adm.session_end_ms
            )
            self._bound(self._issued)
            self._issued[key] = token
        return token or ""

    def predicted(self, sale_id: str, number: int, admit_at_ms: int) -> None:
        """Remembers the first estimate this worker gave a ticket from a measured pace."""
        key = (sale_id, number)
        pace = self.paces.get(sale_id)
        if pace is not None and pace.measured and key not in self._predicted_ms:
            self._bound(self._predicted_ms)
            self._predicted_ms[key] = admit_at_ms

    def admitted(self, sale_id: str, number: int, admitted_at_ms: int) -> None:
        predicted = self._predicted_ms.pop((sale_id, number), None)
        if predicted is not None:
            errors = self.eta_errors.setdefault(sale_id, EtaErrors())
            errors.add(abs(admitted_at_ms - predicted) / 1000)

    @staticmethod
    def _bound(cache: MutableMapping[Ticket, Any]) -> None:
        if len(cache) >= MAX_TICKETS:
            cache.clear()
