"""Checks invariant 5 of docs/design.md (admission in queue order) on one room in Redis."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flashsale.engine import keys
from flashsale.engine.api import Engine
from flashsale.engine.connection import hgetall, zrange_scores

COUNTERS = ("seq", "serving", "admitted", "skipped", "released", "returned")


@dataclass(frozen=True, slots=True)
class RoomRead:
    room: dict[str, Any]
    tickets: dict[str, Any]
    who: dict[str, Any]
    admitted: dict[str, Any]  # place -> 'admitted_at_ms:session_end_ms[:r]'
    released: dict[str, Any]
    active: list[tuple[str, float]]
    unclaimed: list[tuple[str, float]]
    back: list[tuple[str, float]]

    def count(self, name: str) -> int:
        return int(self.room.get(name, 0))


async def _read(engine: Engine, sale_id: str) -> RoomRead | None:
    """The room's keys read one by one while admission loops may still run: one consistent
    picture only if the room hash (seq, serving and the counters, which every join, admission,
    take-back and return moves in the same script) is the same before and after them."""
    client = engine.client
    for _ in range(50):
        room = await hgetall(client, keys.room(sale_id))
        read = RoomRead(
            room,
            await hgetall(client, keys.room_tickets(sale_id)),
            await hgetall(client, keys.room_who(sale_id)),
            await hgetall(client, keys.room_admitted(sale_id)),
            await hgetall(client, keys.room_released(sale_id)),
            await zrange_scores(client, keys.room_active(sale_id)),
            await zrange_scores(client, keys.room_unclaimed(sale_id)),
            await zrange_scores(client, keys.room_back(sale_id)),
        )
        again = await hgetall(client, keys.room(sale_id))
        if len(await client.zrange(keys.room_back(sale_id), 0, -1)) != len(read.back):
            continue  # a return (queue_claim.lua) moves no counter
        if all(again.get(f) == room.get(f) for f in COUNTERS):
            return read
    return None


async def room_violations(engine: Engine, sale_id: str, max_active: int | None = None) -> list[str]:
    """Tickets are 1..seq, one per customer; every passed place holds an admission or none,
    and the counters agree; places admitted at their turn were admitted in place order (those
    let in after they came back are marked); open sessions, admissions waiting to be picked up
    and places back in line are passed places in the right state; the cap held."""
    r = await _read(engine, sale_id)
    if r is None:
        return ["the room kept changing: no consistent read in 50 tries"]
    seq, serving = r.count("seq"), r.count("serving")
    bad = []
    if sorted(map(int, r.who)) != list(range(1, seq + 1)):
        bad.append(f"ticket numbers are not 1..{seq}")
    if {c: int(n) for c, n in r.tickets.items()} != {c: int(n) for n, c in r.who.items()}:
        bad.append("tickets and who are not each other's inverse")
    if not r.count("prequeue") <= seq or serving > seq:
        bad.append(f"prequeue {r.room.get('prequeue')} or serving {serving} beyond seq {seq}")
    bad += _counters(r, serving)
    bad += _order(r)
    bad += _sessions(r, max_active)
    return bad


def _counters(r: RoomRead, serving: int) -> list[str]:
    bad = []
    places = sorted(map(int, r.admitted))
    passed = {*places, *map(int, r.released), *(int(p) for p, _ in r.back)}
    if passed and max(passed) > serving:
        bad.append(f"place {max(passed)} admitted, taken back or back beyond serving {serving}")
    admitted, skipped = r.count("admitted"), r.count("skipped")
    released, returned = r.count("released"), r.count("returned")
    if admitted + skipped - returned != serving:
        bad.append(
            f"{admitted} admitted + {skipped} skipped - {returned} let in again != {serving}"
        )
    if len(places) != admitted - released:
        bad.append(
            f"{len(places)} admissions stand, counters say {admitted} - {released} taken back"
        )
    if len(r.released) > released:
        bad.append(f"{len(r.released)} places taken back, the counter says {released}")
    again = {p for p, v in r.admitted.items() if str(v).endswith(":r")}
    if len(again) > returned:
        bad.append(f"{len(again)} places let in again, the counter says {returned}")
    if {p for p in r.admitted if p in r.released} - again:
        bad.append("a place taken back holds an admission it was not let in again for")
    if {p for p, _ in r.back} & set(r.admitted):
        bad.append("a place back in line holds an admission")
    return bad


def _order(r: RoomRead) -> list[str]:
    """Admissions made at a place's turn came in place order."""
    turns = sorted((int(p), v) for p, v in r.admitted.items() if not str(v).endswith(":r"))
    times = [int(str(v).split(":")[0]) for _, v in turns]
    if times != sorted(times):
        return ["a later place was admitted at its turn before an earlier one"]
    return []


def _sessions(r: RoomRead, max_active: int | None) -> list[str]:
    bad = []
    if not {p for p, _ in r.active} <= set(r.admitted):
        bad.append("an open session holds no admission")
    if not {p for p, _ in r.unclaimed} <= set(r.admitted):
        bad.append("an admission waiting to be picked up was never made")
    if max_active is not None and len(r.active) > max_active:
        bad.append(f"{len(r.active)} open sessions > max_active {max_active}")
    return bad


async def open_sessions(engine: Engine, sale_id: str) -> int:
    """Sessions in the cap's zset, expired ones not yet trimmed included (the stricter count)."""
    return int(await engine.client.zcard(keys.room_active(sale_id)))
