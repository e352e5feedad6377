"""What one gateway worker runs for its waiting rooms, and the answers of the queue routes."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from typing import Any

from flashsale.engine.api import Engine
from flashsale.engine.errors import EngineUnavailable
from flashsale.engine.settings import Settings
from flashsale.engine.waiting_room import RoomState, WaitingRoom
from flashsale.gateway.problems import Problem, engine_call
from flashsale.gateway.room.admission import AdmissionLoops
from flashsale.gateway.room.eta import Pace, eta_s, shown
from flashsale.gateway.room.polls import SOLD_OUT_SLOWER, front_poll_ms, heard, poll_after_ms
from flashsale.gateway.room.tokens import KeyRing, Tickets, Tokens
from flashsale.gateway.room.views import RoomViews
from flashsale.gateway.sale_records import SaleRecords
from flashsale.gateway.schemas import iso

Doc = dict[str, Any]


def no_ticket(ticket: str) -> Problem:
    return Problem(404, "NOT_FOUND", f"no ticket {ticket} in this sale's waiting room")


def _check(settings: Settings) -> None:
    """Settings that would make the room misbehave fail the start-up, not a request."""
    positive = ("queue_tick_ms", "queue_lease_ms", "queue_cache_ms", "queue_beat_flush_ms")
    for name in (*positive, "queue_poll_ms", "queue_poll_front_ms", "token_max_attempts"):
        if getattr(settings, name) < 1:
            raise ValueError(f"FLASHSALE_{name.upper()} must be at least 1")
    for name in ("queue_ghost_after_ms", "queue_claim_ms"):
        if getattr(settings, name) < 0:
            raise ValueError(f"FLASHSALE_{name.upper()} must not be negative")
    # A worker may answer from a room state up to max(4 x cache, 1 s) old; an admission must
    # wait for a poll at the front's interval after that.
    stale_ms = max(4 * settings.queue_cache_ms, 1000)
    if (
        0
        < settings.queue_claim_ms
        <= min(settings.queue_poll_front_ms, settings.queue_poll_ms) + stale_ms
    ):
        raise ValueError(
            "FLASHSALE_QUEUE_CLAIM_MS must be 0 or exceed the front's poll interval plus the "
            "room cache's longest age, or admissions of waiters who poll on time would be "
            "taken back"
        )
    limits = ("rate_per_client_per_s", "rate_burst", "rate_per_sale_per_s")
    local = ("rate_status_per_s", "rate_status_burst", "rate_order_per_s", "rate_order_burst")
    for name in (*limits, *local):
        if getattr(settings, name) < 0:
            raise ValueError(f"FLASHSALE_{name.upper()} must not be negative")


class QueueService:
    """Tokens, tickets, room views and the admission loops of one worker."""

    def __init__(self, settings: Settings, engine: Engine, records: SaleRecords) -> None:
        _check(settings)
        self.settings = settings
        ring = KeyRing.from_settings(settings)
        self.tokens = Tokens(ring)
        self.tickets = Tickets(ring)
        self.room = WaitingRoom(engine)
        self.views = RoomViews(self.room, self.tokens, settings)
        self.loops = AdmissionLoops(self.room, records, settings)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._flush_beats()))
        if self.settings.queue_loop:
            self._tasks.append(asyncio.create_task(self.loops.run()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.views.flush_beats()

    async def _flush_beats(self) -> None:
        while True:
            await asyncio.sleep(self.settings.queue_beat_flush_ms / 1000)
            await self.views.flush_beats()

    # --- status --------------------------------------------------------------------------------

    async def room_state(self, sale_id: str, min_seq: int = 0) -> RoomState:
        state = self.views.state_now(sale_id, min_seq)
        if state is not None and state.has_room:
            return state
        state = await engine_call(self.views.state(sale_id, min_seq))
        if state is None:
            raise Problem(404, "NOT_FOUND", f"no sale {sale_id}")
        if not state.has_room:
            raise Problem(404, "NOT_FOUND", f"sale {sale_id} has no waiting room")
        return state

    def ticket_number(self, sale_id: str, ticket: str) -> int:
        number = self.tickets.parse(sale_id, ticket)
        if number is None:
            raise no_ticket(ticket)
        return number

    def status_now(self, sale_id: str, number: int, ticket: str) -> Doc | None:
        """The answer for a ticket still in line, from the cached state alone, without a
        coroutine: the hot case. None when status_doc must run (no usable cached state, the
        ticket's turn has come, the sale is over or sold out, the pre-queue)."""
        state = self.views.state_now(sale_id, number)
        if state is None or not state.has_room:
            return None
        place = state.place_of(number)
        if place is None or place <= state.serving or state.ended or state.free_units <= 0:
            return None
        return self._in_line(state, number, place, ticket)

    async def status_doc(
        self, sale_id: str, number: int, ticket: str, *, joined: bool = False
    ) -> Doc:
        """Any ticket's answer. `joined`: the caller has just issued it, so a cached state from
        before the join is still good enough (it only lacks this ticket)."""
        # A signed ticket beyond the cached state was issued since the last refresh (on another
        # worker, perhaps): reload once rather than deny it.
        state = await self.room_state(sale_id, 0 if joined else number)
        if number > state.seq:
            if not joined:
                raise no_ticket(ticket)  # signed for an earlier room of the same name
            state = dataclasses.replace(state, seq=number)
        place = state.place_of(number)
        if place is not None and place <= state.serving:
            return self._head(state, ticket) | await self._passed(state, number, place, ticket)
        if state.ended:
            return self._head(state, ticket) | {"status": "expired", "reason": "the sale is over"}
        if state.free_units <= 0:
            if place is not None:
                self._beat(state, place, self.settings.queue_poll_ms * SOLD_OUT_SLOWER)
            return self._sold_out(state, ticket)
        if place is None:
            return self._prequeue(state, ticket)
        return self._in_line(state, number, place, ticket)

    def _head(self, state: RoomState, ticket: str) -> Doc:
        return {
            "ticket": ticket,
            "sale_id": state.sale_id,
            "poll_after_ms": poll_after_ms(self.settings, None, sold_out=state.free_units <= 0),
            "seed_sha256": state.seed_sha256 or None,
        }

    def _beat(self, state: RoomState, place: int, advised_ms: int) -> None:
        self.views.beat(state.sale_id, place, heard(self.settings, advised_ms))

    def _sold_out(self, state: RoomState, ticket: str) -> Doc:
        units = max(state.units_left, 0)
        return self._head(state, ticket) | {"status": "sold_out", "units_left": units}

    async def _passed(self, state: RoomState, number: int, place: int, ticket: str) -> Doc:
        claim = await engine_call(
            self.views.claim(state.sale_id, number, place, may_return=not state.ended)
        )
        if claim is None:
            raise no_ticket(ticket)
        if claim.outcome == "PASSED":
            return {"status": "expired", "reason": "the sale is over"}
        if claim.admission is None:  # back in line (or, oddly, not passed in Redis yet)
            return self._back(state, ticket, claim.ahead)
        admission = claim.admission
        self.views.admitted(state.sale_id, number, admission.admitted_at_ms)
        if admission.session_end_ms <= time.time() * 1000:
            return {"status": "expired", "reason": "the admission has lapsed"}
        return {
            "status": "admitted",
            "token": self.views.token(state.sale_id, number, place, claim),
            "token_expires_at": iso(admission.session_end_ms),
            "checkout_url": f"/v1/sales/{state.sale_id}/holds",
            "max_attempts": self.settings.token_max_attempts,
        }

    def _back(self, state: RoomState, ticket: str, ahead: int) -> Doc:
        """A place skipped while its holder was away (or whose admission nobody picked up) that
        polled again: let in first, at the admission rate, when units are left."""
        if state.free_units <= 0:
            # At the front's pace even while sold out: a unit coming back lets it in first, and
            # the admission is taken back unless it is picked up at the front's pace.
            return self._sold_out(state, ticket) | {"poll_after_ms": front_poll_ms(self.settings)}
        rate = state.rate_per_s or self.views.pace(state).per_s
        p50_s, p90_s = eta_s(ahead + 1, Pace(rate))
        return self._head(state, ticket) | {
            "poll_after_ms": poll_after_ms(self.settings, 0),
            "status": "waiting",
            "units_left": state.units_left,
            "paused": state.status == "paused",
            "prequeue": False,
            "came_back": True,
            "position": ahead + 1,
            "ahead": ahead,
            "queue_size": state.waiting + state.coming_back,
            "eta_p50_s": round(p50_s),
            "eta_p90_s": math.ceil(p90_s),
            "eta_measured": False,
        }

    def _prequeue(self, state: RoomState, ticket: str) -> Doc:
        """Before the draw a ticket may land anywhere in the pre-queue: half of it for p50."""
        pace = self.views.pace(state)
        p50_pace = pace.per_s
        p90_pace = p50_pace if pace.measured else p50_pace / 1.5
        opens_in_s = max(0, state.starts_at_ms - state.now_ms) / 1000
        return self._head(state, ticket) | {
            "status": "waiting",
            "units_left": state.units_left,
            "paused": state.status == "paused",
            "prequeue": True,
            "position": None,
            "ahead": None,
            "queue_size": state.seq,
            "opens_at": iso(state.starts_at_ms),
            "eta_p50_s": round(opens_in_s + 0.5 * state.seq / p50_pace),
            "eta_p90_s": round(opens_in_s + 0.9 * state.seq / p90_pace),
            "eta_measured": pace.measured,
        }

    def _in_line(self, state: RoomState, number: int, place: int, ticket: str) -> Doc:
        """One dict, built at once: this is most of what the hot path does."""
        pace = self.views.pace(state)
        position = place - state.serving
        self.views.predicted(
            state.sale_id, number, state.now_ms + int(position * 1000 / pace.per_s)
        )
        p50_s, _ = eta = eta_s(position, pace, self.views.age_s(state.sale_id))
        poll_ms = poll_after_ms(self.settings, p50_s)
        self._beat(state, place, poll_ms)
        return {
            "ticket": ticket,
            "sale_id": state.sale_id,
            "poll_after_ms": poll_ms,
            "seed_sha256": state.seed_sha256 or None,
            "status": "waiting",
            "units_left": state.units_left,
            "paused": state.status == "paused",
            "prequeue": False,
            "position": position,
            "ahead": position - 1,
            "queue_size": state.waiting,
            "eta_p50_s": shown(eta)[0],
            "eta_p90_s": shown(eta)[1],
            "eta_measured": pace.measured,  # from the line's measured pace, not the setting alone
        }

    # --- metrics -------------------------------------------------------------------------------

    async def metric_gauges(
        self, limit: int = 200, *, units: bool = True
    ) -> list[tuple[str, dict[str, str], float]]:
        """Per room: waiting, admitted, active, abandoned (ghosts skipped), units left, the
        measured admit rate, the wait estimate of the last in line, and the mean error of this
        worker's first wait estimates. Rooms this worker serves or leads come first when there
        are more than `limit`."""
        ranked = [*sorted(self.views.states.keys()), *sorted(self.loops.leading), *self.loops.sales]
        sale_ids = list(dict.fromkeys(ranked))[:limit]
        gauges: list[tuple[str, dict[str, str], float]] = []
        for sale_id in sale_ids:
            try:
                state = await self.views.state(sale_id)
            except EngineUnavailable:
                continue
            if state is None or not state.has_room:
                continue
            labels = {"sale": sale_id}
            window = self.views.windows.get(sale_id)
            errors = self.views.eta_errors.get(sale_id)
            figures = {
                "flashsale_queue_waiting": state.waiting,
                "flashsale_queue_admitted_total": state.admitted,
                "flashsale_queue_active": state.active,
                "flashsale_queue_abandoned_total": state.skipped,
                "flashsale_queue_units_left": state.units_left,
                "flashsale_queue_admit_rate_per_second": window.admit_rate() if window else 0.0,
                "flashsale_queue_eta_p50_seconds": eta_s(
                    state.waiting, self.views.pace(state), self.views.age_s(sale_id)
                )[0],
                "flashsale_queue_eta_error_mean_seconds": errors.mean_s if errors else 0.0,
                "flashsale_queue_eta_error_samples": errors.count if errors else 0,
                "flashsale_queue_leader": int(sale_id in self.loops.leading),
            }
            if not units:
                del figures["flashsale_queue_units_left"]
            gauges += [(name, labels, value) for name, value in figures.items()]
        return gauges


QUEUE_HELP = {
    "flashsale_queue_waiting": "Tickets in the waiting room not yet admitted.",
    "flashsale_queue_admitted_total": "Admissions the room has made since it opened.",
    "flashsale_queue_active": "Admitted sessions that have not placed a hold yet.",
    "flashsale_queue_abandoned_total": "Waiters skipped at admission because they stopped polling "
    "(some come back and are let in later).",
    "flashsale_queue_units_left": "Units the room may still admit for (admin key only).",
    "flashsale_queue_admit_rate_per_second": "Admissions per second measured by this worker.",
    "flashsale_queue_eta_p50_seconds": "Median wait estimate of the last ticket in line.",
    "flashsale_queue_eta_error_mean_seconds": "Mean error of this worker's first wait estimates.",
    "flashsale_queue_eta_error_samples": "First wait estimates checked against admissions.",
    "flashsale_queue_leader": "1 when this worker's admission loop runs the room.",
}
