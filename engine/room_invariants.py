"""Checks invariant 5 of docs/design.md (admission in queue order) on one room in Redis."""

from __future__ import annotations

from flashsale.engine import keys
from flashsale.engine.api import Engine
from flashsale.engine.connection import hgetall, zrange_scores


async def room_violations(engine: Engine, sale_id: str, max_active: int | None = None) -> list[str]:
    """Tickets are 1..seq, one per customer; every passed place was admitted or skipped, never
    both; admissions happened in place order; open sessions were admitted and within the cap."""
    client = engine.client
    # The room's keys are read one by one while admission loops may still run: the reads are
    # one consistent picture only if the room hash (seq, serving and the counters, which every
    # join and admission moves in the same script) is the same before and after them.
    for _ in range(50):
        room = await hgetall(client, keys.room(sale_id))
        tickets = await hgetall(client, keys.room_tickets(sale_id))
        who = await hgetall(client, keys.room_who(sale_id))
        admitted = await hgetall(client, keys.room_admitted(sale_id))
        active = await zrange_scores(client, keys.room_active(sale_id))
        again = await hgetall(client, keys.room(sale_id))
        if all(again.get(f) == room.get(f) for f in ("seq", "serving", "admitted", "skipped")):
            break
    else:
        return ["the room kept changing: no consistent read in 50 tries"]
    seq, serving = int(room.get("seq", 0)), int(room.get("serving", 0))
    bad = []
    if sorted(map(int, who)) != list(range(1, seq + 1)):
        bad.append(f"ticket numbers are not 1..{seq}")
    if {c: int(n) for c, n in tickets.items()} != {c: int(n) for n, c in who.items()}:
        bad.append("tickets and who are not each other's inverse")
    if not int(room.get("prequeue", 0)) <= seq or serving > seq:
        bad.append(f"prequeue {room.get('prequeue')} or serving {serving} beyond seq {seq}")
    places = sorted(map(int, admitted))
    if places and places[-1] > serving:
        bad.append(f"place {places[-1]} admitted beyond serving {serving}")
    if len(places) + int(room.get("skipped", 0)) != serving:
        bad.append(f"{len(places)} admitted + {room.get('skipped', 0)} skipped != {serving}")
    if len(places) != int(room.get("admitted", 0)):
        bad.append(f"{len(places)} admissions recorded, counter says {room.get('admitted')}")
    times = [int(admitted[str(p)].split(":")[0]) for p in places]
    if times != sorted(times):
        bad.append("a later place was admitted before an earlier one")
    if not {int(p) for p, _ in active} <= set(places):
        bad.append("an open session was never admitted")
    if max_active is not None and len(active) > max_active:
        bad.append(f"{len(active)} open sessions > max_active {max_active}")
    return bad


async def open_sessions(engine: Engine, sale_id: str) -> int:
    """Sessions in the cap's zset, expired ones not yet trimmed included (the stricter count)."""
    return int(await engine.client.zcard(keys.room_active(sale_id)))
