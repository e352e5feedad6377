"""What the waiting room did for the load test's waiters, read from its admission records in
Redis: the wait estimates they were given against when they were admitted, and the admission
slots given to shoppers who had left the line (ghosts)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flashsale.engine import Engine, keys
from flashsale.engine.waiting_room import Admission, RoomState, WaitingRoom
from flashsale.loadtests.outcomes import Outcomes

MIN_WAIT_MS = 2_000  # shorter waits are left out: one rounded second is a large share of them
BATCH = 200  # ticket records read at once


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest rank; 0.0 for no values."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else 0.0


@dataclass(frozen=True, slots=True)
class Estimates:
    """Each waiter's estimate (read at its 2nd poll in line) against its admission."""

    given: int  # waiters who stayed and were given one
    errors: tuple[float, ...]  # |admitted - (given + eta_p50)| / real wait, per waiter measured
    by_p50: int  # admitted no later than eta_p50_s after the answer
    by_p90: int

    @property
    def measured(self) -> int:
        return len(self.errors)

    def line(self) -> str:
        if not self.measured:
            return f"wait estimates: none measured ({self.given} waiters given one)"
        n = self.measured
        return (
            f"wait estimates: {n} waiters measured (of {self.given} given one at their 2nd "
            f"poll; admitted {MIN_WAIT_MS // 1000} s or more later); |error| of eta_p50 as a "
            f"share of the real wait: median {quantile(self.errors, 0.5):.1%}, p90 "
            f"{quantile(self.errors, 0.9):.1%}; admitted by eta_p50 {self.by_p50 / n:.1%}, "
            f"by eta_p90 {self.by_p90 / n:.1%}"
        )


@dataclass(frozen=True, slots=True)
class Ghosts:
    """Shoppers who left the line on purpose (--leave-share), as the room treated their places."""

    left: int
    admitted: int  # admission slots given to them (never used: they had gone)
    skipped: int  # passed over as ghosts (no admission)
    admissions: int  # all the room's admissions
    read_at_ms: int  # when the room was read: it goes on admitting those still in line
    held_s: tuple[float, ...]  # per admitted ghost: admission to its session's end
    still_open: int  # their sessions still among the room's open ones now

    def line(self) -> str:
        share = self.admitted / self.admissions if self.admissions else 0.0
        unreached = self.left - self.admitted - self.skipped
        held = (
            f"each slot came back when its session ended unused, median "
            f"{quantile(self.held_s, 0.5):.1f} s (max {max(self.held_s):.1f} s) after the "
            f"admission; {self.still_open} still open now"
            if self.held_s
            else "no slot to reclaim"
        )
        return (
            f"ghosts: {self.left} shoppers left while waiting; {self.admitted} admission slots "
            f"went to them ({share:.1%} of {self.admissions} admissions), {self.skipped} were "
            f"skipped by the room, {unreached} never reached (the room as read at "
            f"{_iso_ms(self.read_at_ms)}); {held}"
        )


@dataclass(frozen=True, slots=True)
class Waits:
    estimates: Estimates
    ghosts: Ghosts


def _iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def ticket_number(ticket: str) -> int:
    return int(ticket.split("-", 1)[0])


async def read_waits(engine: Engine, sale: str, outcomes: Outcomes) -> Waits | None:
    """None when the sale has no waiting room or it never opened."""
    room = WaitingRoom(engine)
    state = await room.queue_state(sale)
    if state is None or not state.has_room or not state.opened:
        return None
    leavers = {str(t): int(at) for t, at in outcomes.leavers}
    given = [e for e in outcomes.estimates if e[0] not in leavers]
    found = await _admissions(room, state, [*leavers, *(str(e[0]) for e in given)])
    return Waits(_estimates(given, found), await _ghosts(engine, state, leavers, found))


async def _admissions(
    room: WaitingRoom, state: RoomState, tickets: list[str]
) -> dict[str, Admission | None]:
    """Each ticket's admission; None: skipped, or not reached yet (its place is past serving)."""
    found: dict[str, Admission | None] = {}
    for start in range(0, len(tickets), BATCH):
        batch = tickets[start : start + BATCH]
        records = await asyncio.gather(*(_admission(room, state, t) for t in batch))
        found.update(zip(batch, records, strict=True))
    return found


async def _admission(room: WaitingRoom, state: RoomState, ticket: str) -> Admission | None:
    number = ticket_number(ticket)
    place = state.place_of(number)
    if place is None or place > state.serving:
        return None
    record = await room.queue_ticket(state.sale_id, number, place)
    return record.admission if record else None


def _estimates(given: list[list[Any]], found: dict[str, Admission | None]) -> Estimates:
    errors: list[float] = []
    by_p50 = by_p90 = 0
    for ticket, given_at_ms, p50_s, p90_s in given:
        admission = found.get(str(ticket))
        if admission is None:
            continue
        wait_ms = admission.admitted_at_ms - int(given_at_ms)
        if wait_ms < MIN_WAIT_MS:
            continue
        errors.append(abs(wait_ms - 1000 * p50_s) / wait_ms)
        by_p50 += wait_ms <= 1000 * p50_s
        by_p90 += wait_ms <= 1000 * p90_s
    return Estimates(len(given), tuple(errors), by_p50, by_p90)


async def _ghosts(
    engine: Engine, state: RoomState, leavers: dict[str, int], found: dict[str, Admission | None]
) -> Ghosts:
    admitted = {t: found[t] for t in leavers if found.get(t) is not None}
    skipped = sum(
        1
        for t in leavers
        if found.get(t) is None and (state.place_of(ticket_number(t)) or 0) <= state.serving
    )
    places = [str(state.place_of(ticket_number(t))) for t in admitted]
    active = keys.room_active(state.sale_id)
    open_now = await engine.client.zmscore(active, places) if places else []
    return Ghosts(
        len(leavers),
        len(admitted),
        skipped,
        state.admitted,
        state.now_ms,
        tuple((a.session_end_ms - a.admitted_at_ms) / 1000 for a in admitted.values() if a),
        sum(1 for score in open_now if score is not None),
    )
