"""The waiting room over Redis: tickets, admission ticks, heartbeats, room and ticket reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flashsale.engine import keys
from flashsale.engine.connection import redis_errors
from flashsale.engine.results import Code
from flashsale.engine.settings import Settings
from flashsale.engine.shuffle import new_seed, prequeue_places
from flashsale.engine.validation import check_id, check_int

if TYPE_CHECKING:
    from flashsale.engine.api import Engine

SCAN_PER_TICK = 5000
BEAT_BATCH = 2000
GHOST_POLLS = 2  # a place is a ghost once it has missed this many of the polls it was told to make


def silence_allowed_ms(settings: Settings, poll_ms: int) -> int:
    """How long a place told to poll every `poll_ms` may stay silent before it is skipped as a
    ghost: GHOST_POLLS missed polls and one heartbeat flush, at least queue_ghost_after_ms."""
    missed_ms = GHOST_POLLS * poll_ms + settings.queue_beat_flush_ms
    return max(missed_ms, settings.queue_ghost_after_ms)


@dataclass(frozen=True, slots=True)
class TokenUse:
    """A verified admission token as reserve.lua counts it: its place names the token."""

    place: int
    max_attempts: int
    expires_at_ms: int

    def args(self) -> tuple[str, int, int]:
        """ARGV[11..13] of lua/reserve.lua."""
        return str(self.place), self.max_attempts, self.expires_at_ms


@dataclass(frozen=True, slots=True)
class RoomConfig:
    """What one admission tick needs (from the sale's WaitingRoomConfig and the settings)."""

    admit_rate_per_s: int
    max_active: int
    session_ms: int
    ghost_after_ms: int  # silence allowed to a place not heard from since the opening
    lease_ms: int = 3000
    max_scan: int = SCAN_PER_TICK
    claim_ms: int = 0  # least time an admission waits to be picked up; 0: never taken back
    unheard_poll_ms: int = 0  # how soon a place never heard from (pre-queue) polls again


@dataclass(frozen=True, slots=True, order=True)
class Beat:
    """A waiting place was heard from: it may now stay silent `silence_ms` before it is a ghost,
    and was told to poll again in `poll_ms`."""

    silence_ms: int
    poll_ms: int


@dataclass(frozen=True, slots=True)
class JoinResult:
    code: Code
    ticket: int = 0
    new: bool = False
    status: str = ""


@dataclass(frozen=True, slots=True)
class TickResult:
    code: Code
    serving: int = 0
    skipped: int = 0
    seq: int = 0  # tickets issued so far
    admitted: tuple[int, ...] = ()  # places admitted by this tick: those back first, then in order
    released: int = 0  # admissions taken back by this tick (never picked up)
    readmitted: int = 0  # how many of `admitted` came back after a skip or a take-back
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RoomState:
    """One consistent read of a room and its sale (server time `now_ms`)."""

    sale_id: str
    now_ms: int
    status: str
    starts_at_ms: int
    ends_at_ms: int
    has_room: bool
    units_left: int
    active: int
    seq: int  # tickets issued
    serving: int  # the last place the admission loop has passed
    prequeue: int  # tickets issued before the opening (shuffled)
    opened_at_ms: int  # 0 = not opened yet
    seed_sha256: str
    seed: str  # '' until the room has opened
    admitted: int
    skipped: int
    rate_per_s: int  # the admission loop's setting (0 before its first tick)
    released: int = 0  # admissions taken back, never picked up
    returned: int = 0  # passed places let in after they came back
    coming_back: int = 0  # passed places back in line now, to be let in first

    @property
    def abandoned(self) -> int:
        """Passed places holding no admission now: skipped or taken back, and not let in since."""
        return self.serving - (self.admitted - self.released)

    @property
    def waiting(self) -> int:
        """Tickets not passed yet (ghosts among them are found when the loop reaches them)."""
        return self.seq - self.serving

    @property
    def opened(self) -> bool:
        return self.opened_at_ms > 0

    @property
    def ended(self) -> bool:
        ended = self.ends_at_ms > 0 and self.now_ms >= self.ends_at_ms
        return self.status == "closed" or ended

    @property
    def admitting(self) -> bool:
        """The sale has started and is not paused, closed or over (the loop admits)."""
        started = self.status == "open" or (
            self.status == "scheduled" and self.now_ms >= self.starts_at_ms
        )
        return started and not self.ended

    @property
    def free_units(self) -> int:
        """Units the stock can still give beyond one per open session."""
        return self.units_left - self.active

    def place_of(self, ticket: int) -> int | None:
        """A ticket's place in line; None while its pre-queue place is not drawn yet."""
        if not self.opened:
            return None
        if ticket > self.prequeue:
            return ticket
        return prequeue_places(self.seed, self.prequeue)[ticket]


@dataclass(frozen=True, slots=True)
class Admission:
    admitted_at_ms: int
    session_end_ms: int
    returned: bool = False  # let in after the place came back (not at its turn)


@dataclass(frozen=True, slots=True)
class Release:
    """An admission taken back because nobody picked it up."""

    admitted_at_ms: int
    released_at_ms: int


@dataclass(frozen=True, slots=True)
class TicketRecord:
    customer_id: str
    admission: Admission | None  # None: skipped as a ghost, taken back, or not reached yet
    release: Release | None = None  # the last admission of the place taken back, if any


@dataclass(frozen=True, slots=True)
class Claim:
    """What a status read of a passed place found (lua/queue_claim.lua)."""

    customer_id: str
    outcome: str  # 'ADMITTED' | 'BACK' | 'PASSED' | 'WAITING'
    admission: Admission | None = None  # ADMITTED: picked up now (or before)
    ahead: int = 0  # BACK: places that came back before it and wait to be let in


class WaitingRoom:
    """One method per queue script, same name; runs through the engine's batcher and clock."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.scripts = engine.scripts

    async def queue_join(self, sale_id: str, customer_id: str) -> JoinResult:
        check_id("sale_id", sale_id)
        check_id("customer_id", customer_id)
        seed, digest = new_seed()
        reply = await self.engine.call(
            self.scripts.queue_join,
            [
                keys.sale(sale_id),
                keys.room(sale_id),
                keys.room_tickets(sale_id),
                keys.room_who(sale_id),
                keys.room_seen(sale_id),
            ],
            [
                customer_id,
                self.engine.offset_ms,
                seed,
                digest,
                self.engine.settings.room_retention_s * 1000,
                silence_allowed_ms(self.engine.settings, self.engine.settings.queue_poll_ms),
            ],
        )
        code = Code(reply[0])
        if code is Code.OK:
            return JoinResult(code, int(reply[1]), bool(reply[2]))
        return JoinResult(code, status=str(reply[1]) if len(reply) > 1 else "")

    async def queue_admit(self, sale_id: str, owner: str, config: RoomConfig) -> TickResult:
        check_id("sale_id", sale_id)
        seed, digest = new_seed()
        reply = await self.engine.call(
            self.scripts.queue_admit,
            [
                keys.sale(sale_id),
                keys.skus(sale_id),
                keys.room(sale_id),
                keys.room_seen(sale_id),
                keys.room_active(sale_id),
                keys.room_admitted(sale_id),
                keys.room_lease(sale_id),
                keys.room_tickets(sale_id),
                keys.room_who(sale_id),
                keys.room_unclaimed(sale_id),
                keys.room_back(sale_id),
                keys.room_released(sale_id),
            ],
            [
                keys.prefix(sale_id),
                owner,
                config.lease_ms,
                self.engine.offset_ms,
                config.admit_rate_per_s,
                config.max_active,
                config.session_ms,
                config.ghost_after_ms,
                config.max_scan,
                seed,
                digest,
                self.engine.settings.room_retention_s * 1000,
                config.claim_ms,
                config.unheard_poll_ms,
            ],
        )
        code = Code(reply[0])
        if code is Code.OK:
            serving, skipped, seq, released, readmitted = map(int, reply[1:6])
            places = tuple(map(int, reply[6:]))
            return TickResult(code, serving, skipped, seq, places, released, readmitted)
        return TickResult(code, detail=str(reply[1]) if len(reply) > 1 else "")

    async def queue_state(self, sale_id: str) -> RoomState | None:
        """None for a sale Redis does not hold."""
        check_id("sale_id", sale_id)
        reply = await self.engine.call(
            self.scripts.queue_state,
            [
                keys.sale(sale_id),
                keys.skus(sale_id),
                keys.room(sale_id),
                keys.room_active(sale_id),
                keys.room_back(sale_id),
            ],
            [keys.prefix(sale_id), self.engine.offset_ms],
        )
        return _room_state(sale_id, reply) if reply else None

    async def queue_beat(self, sale_id: str, beats: Mapping[int, Beat]) -> int:
        """Records heartbeats, place -> Beat, in batches of BEAT_BATCH places; returns how many
        were recorded."""
        check_id("sale_id", sale_id)
        recorded = 0
        triples = [_beat_args(place, beat) for place, beat in beats.items()]
        for start in range(0, len(triples), BEAT_BATCH):
            args = [x for triple in triples[start : start + BEAT_BATCH] for x in triple]
            recorded += int(
                await self.engine.call(
                    self.scripts.queue_beat,
                    [keys.room(sale_id), keys.room_seen(sale_id)],
                    [self.engine.offset_ms, *args],
                )
            )
        return recorded

    async def queue_ticket(self, sale_id: str, ticket: int, place: int) -> TicketRecord | None:
        """None for a ticket number the room never issued (read only)."""
        check_id("sale_id", sale_id)
        check_int("ticket", ticket, 1, 2**52)
        check_int("place", place, 1, 2**52)
        customer, admission, release = await self.engine.call(
            self.scripts.queue_ticket,
            [keys.room_who(sale_id), keys.room_admitted(sale_id), keys.room_released(sale_id)],
            [ticket, place],
        )
        if not customer:
            return None
        return TicketRecord(
            customer,
            _admission(admission) if admission else None,
            _release(release) if release else None,
        )

    async def queue_claim(
        self, sale_id: str, ticket: int, place: int, *, may_return: bool = True
    ) -> Claim | None:
        """A status read of a passed place: picks up its admission, or brings it back in line
        (unless `may_return` is false). None for a ticket number the room never issued."""
        check_id("sale_id", sale_id)
        check_int("ticket", ticket, 1, 2**52)
        check_int("place", place, 1, 2**52)
        reply = await self.engine.call(
            self.scripts.queue_claim,
            [
                keys.room(sale_id),
                keys.room_who(sale_id),
                keys.room_admitted(sale_id),
                keys.room_unclaimed(sale_id),
                keys.room_back(sale_id),
            ],
            [ticket, place, self.engine.offset_ms, int(may_return)],
        )
        if not reply[0]:
            return None
        customer, outcome = str(reply[0]), str(reply[1])
        if outcome == "ADMITTED":
            return Claim(customer, outcome, _admission(str(reply[2])))
        return Claim(customer, outcome, ahead=int(reply[2]) if outcome == "BACK" else 0)

    async def forget_room(self, sale_id: str) -> int:
        """Deletes every key of the sale's room; returns how many (tests, benchmarks)."""
        check_id("sale_id", sale_id)
        client = self.engine.client
        with redis_errors():
            found = [k async for k in client.scan_iter(match=keys.room_prefix(sale_id) + "*")]
            return int(await client.delete(*found)) if found else 0


def _beat_args(place: int, beat: Beat) -> tuple[int, int, int]:
    check_int("place", place, 1, 2**52)
    check_int("silence_ms", beat.silence_ms, 0, 2**40)
    return place, beat.silence_ms, check_int("poll_ms", beat.poll_ms, 0, 2**40)


def _admission(raw: str) -> Admission:
    at, end, *mark = raw.split(":")
    return Admission(int(at), int(end), mark == ["r"])


def _release(raw: str) -> Release:
    at, released = raw.split(":")
    return Release(int(at), int(released))


def _room_state(sale_id: str, r: list[Any]) -> RoomState:
    return RoomState(
        sale_id=sale_id,
        now_ms=int(r[0]),
        status=str(r[1]),
        starts_at_ms=int(r[2] or 0),
        ends_at_ms=int(r[3] or 0),
        has_room=bool(r[4]),
        units_left=int(r[5]),
        active=int(r[6]),
        seq=int(r[7]),
        serving=int(r[8]),
        prequeue=int(r[9]),
        opened_at_ms=int(r[10]),
        seed_sha256=str(r[11]),
        seed=str(r[12]),
        admitted=int(r[13]),
        skipped=int(r[14]),
        rate_per_s=int(r[15]),
        released=int(r[16]),
        returned=int(r[17]),
        coming_back=int(r[18]),
    )
