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
from flashsale.engine.waiting_room import Admission, RoomState, TicketRecord, WaitingRoom
from flashsale.loadtests.outcomes import Outcomes

MIN_WAIT_MS = 2_000  # shorter waits are left out: one rounded second is a large share of them
BATCH = 200  # ticket records read at once


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest rank; 0.0 for no values."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else 0.0


@dataclass(frozen=True, slots=True)
class Estimates:
    """Each waiter's first estimate from a measured pace against its admission."""

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
            f"wait estimates: {n} waiters measured (of {self.given} given one from a measured "
            f"pace; admitted {MIN_WAIT_MS // 1000} s or more later); |error| of eta_p50 as a "
            f"share of the real wait: median {quantile(self.errors, 0.5):.1%}, p90 "
            f"{quantile(self.errors, 0.9):.1%}; admitted by eta_p50 {self.by_p50 / n:.1%}, "
            f"by eta_p90 {self.by_p90 / n:.1%}"
        )


@dataclass(frozen=True, slots=True)
class Ghosts:
    """Shoppers who left the line on purpose (--leave-share), as the room treated their places,
    and the shoppers still there whom the room took for ghosts (they came back)."""

    left: int
    admitted: int  # admission slots given to them (they had gone: nobody picked one up)
    skipped: int  # passed over as ghosts (no admission)
    admissions: int  # all the room's admissions (those taken back included)
    read_at_ms: int  # when the room was read: it goes on admitting those still in line
    taken_back_s: tuple[float, ...]  # per slot taken back: admission to its take-back
    standing: int  # slots not taken back when read (awaiting it, or their session's end)
    still_open: int  # their sessions still among the room's open ones now
    came_back: int  # places skipped or taken back, then let in when their shopper polled again

    def line(self) -> str:
        share = self.admitted / self.admissions if self.admissions else 0.0
        unreached = self.left - self.admitted - self.skipped
        return (
            f"ghosts: {self.left} shoppers left while waiting; {self.admitted} admission slots "
            f"went to them ({share:.1%} of {self.admissions} admissions), {self.skipped} were "
            f"skipped by the room, {unreached} never reached (the room as read at "
            f"{_iso_ms(self.read_at_ms)}); {self._reclaimed()}; {self.came_back} places of "
            "shoppers still there were taken for ghosts and let in when they polled again"
        )

    def _reclaimed(self) -> str:
        parts = []
        if self.taken_back_s:
            parts.append(
                f"{len(self.taken_back_s)} slots were taken back unused, median "
                f"{quantile(self.taken_back_s, 0.5):.1f} s (max {max(self.taken_back_s):.1f} s) "
                "after the admission, their credit given back"
            )
        parts.append(
            f"{self.standing} not taken back when read ({self.still_open} of their sessions "
            "still open)"
        )
        return ", ".join(parts)


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
    found = await _records(room, state, [*leavers, *(str(e[0]) for e in given)])
    admissions = {t: r.admission if r else None for t, r in found.items()}
    return Waits(_estimates(given, admissions), await _ghosts(engine, state, leavers, found))


async def _records(
    room: WaitingRoom, state: RoomState, tickets: list[str]
) -> dict[str, TicketRecord | None]:
    """What became of each ticket's place; None: not reached yet (its place is past serving)."""
    found: dict[str, TicketRecord | None] = {}
    for start in range(0, len(tickets), BATCH):
        batch = tickets[start : start + BATCH]
        records = await asyncio.gather(*(_record(room, state, t) for t in batch))
        found.update(zip(batch, records, strict=True))
    return found


async def _record(room: WaitingRoom, state: RoomState, ticket: str) -> TicketRecord | None:
    number = ticket_number(ticket)
    place = state.place_of(number)
    if place is None or place > state.serving:
        return None
    return await room.queue_ticket(state.sale_id, number, place)


def _estimates(given: list[list[Any]], found: dict[str, Admission | None]) -> Estimates:
    errors: list[float] = []
    by_p50 = by_p90 = 0
    for ticket, given_at_ms, p50_s, p90_s, *_ in given:
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
    engine: Engine,
    state: RoomState,
    leavers: dict[str, int],
    found: dict[str, TicketRecord | None],
) -> Ghosts:
    """A leaver's slot: an admission still standing, or one taken back (its release record)."""
    records = {t: r for t in leavers if (r := found.get(t)) is not None}
    slots = {t: r for t, r in records.items() if r.admission or r.release}
    taken_back = [r.release for r in slots.values() if r.release]
    places = [str(state.place_of(ticket_number(t))) for t, r in slots.items() if r.admission]
    open_now = (
        await engine.client.zmscore(keys.room_active(state.sale_id), places) if places else []
    )
    return Ghosts(
        left=len(leavers),
        admitted=len(slots),
        skipped=len(records) - len(slots),
        admissions=state.admitted,
        read_at_ms=state.now_ms,
        taken_back_s=tuple((r.released_at_ms - r.admitted_at_ms) / 1000 for r in taken_back),
        standing=len(slots) - len(taken_back),
        still_open=sum(1 for score in open_now if score is not None),
        came_back=state.returned,  # leavers never poll again: only those still there come back
    )
