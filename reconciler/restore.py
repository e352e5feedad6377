"""Redis writes that rebuild a lost sale: lua/restore_stock.lua, lua/restore_holds.lua and the
customers' counters, with the figures they are computed from."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flashsale.engine import Engine, keys
from flashsale.engine.connection import redis_errors
from flashsale.engine.results import Code, parse_allocations
from flashsale.store.recovery import RestoredHold, SupplierUnits

CHUNK = 500  # holds per script call or pipeline
Key = tuple[str, str]  # (sku, supplier_id)


@dataclass(frozen=True, slots=True)
class Lifetimes:
    """How long what a hold leaves in Redis lives (the settings the scripts were given)."""

    retention_ms: int  # an ended hold's hash, from its confirmation or its end
    idem_ttl_ms: int  # an idempotency key, from the hold's creation


def reserved_units(holds: Sequence[RestoredHold]) -> Counter[Key]:
    """The units the held holds take, per sku and supplier."""
    units: Counter[Key] = Counter()
    for h in holds:
        if h.status == "held":
            for a in parse_allocations(h.lines):
                units[(a.sku, a.supplier)] += a.qty
    return units


def counters(holds: Sequence[RestoredHold]) -> dict[str, dict[str, int]]:
    """Per customer, the units per sku held or bought: the per-customer limit's counters."""
    owned: dict[str, dict[str, int]] = {}
    for h in holds:
        if h.status in ("held", "confirmed"):
            mine = owned.setdefault(h.customer_id, {})
            for a in parse_allocations(h.lines):
                mine[a.sku] = mine.get(a.sku, 0) + a.qty
    return owned


async def restore_stock(
    engine: Engine,
    sale_id: str,
    stock: Sequence[tuple[str, Sequence[SupplierUnits]]],
    reserved: Counter[Key],
) -> Code:
    """Step one of a rebuild (see the script's header); ALREADY_LOADED when the sale exists."""
    args: list[str | int] = [engine.offset_ms, len(stock)]
    for sku, suppliers in stock:
        args.append(len(suppliers))
        for s in suppliers:
            args += [s.supplier_id, s.sold, s.adjusted, reserved[(sku, s.supplier_id)]]
    script_keys = [keys.sale(sale_id), *(keys.stock(sale_id, sku) for sku, _ in stock)]
    reply = await engine.call(engine.scripts.restore_stock, script_keys, args)
    return Code(reply[0])


def keep_until_ms(hold: RestoredHold, life: Lifetimes) -> int:
    """When the hold's hash would have gone: never while held (0), else its retention after
    confirm.lua's or end_hold's PEXPIRE (a compensation keeps the confirmation's)."""
    if hold.status == "held":
        return 0
    if hold.confirmed_at_ms:
        return hold.confirmed_at_ms + life.retention_ms
    return hold.ended_at_ms + life.retention_ms


def _args(hold: RestoredHold, life: Lifetimes) -> list[str | int]:
    return [
        hold.hold_id,
        hold.customer_id,
        hold.status,
        hold.lines,
        hold.created_at_ms,
        hold.expires_at_ms,
        int(hold.extended),
        hold.idem_key,
        hold.fingerprint,
        hold.confirmed_at_ms,
        hold.ended_at_ms,
        hold.payment,
        keep_until_ms(hold, life),
        hold.created_at_ms + life.idem_ttl_ms if hold.idem_key else 0,
    ]


async def restore_holds(
    engine: Engine, sale_id: str, holds: Sequence[RestoredHold], life: Lifetimes, now_ms: int
) -> tuple[int, int]:
    """Hold hashes (held ones back in the expiry index) and idempotency keys, each living out
    what is left of its time; (holds, keys) written. `now_ms` only leaves out what is surely
    gone: the script judges by the server's clock."""
    alive = [h for h in holds if keep_until_ms(h, life) == 0 or keep_until_ms(h, life) > now_ms]
    alive.sort(key=lambda h: (h.created_at_ms, h.hold_id))
    written = idem = 0
    for start in range(0, len(alive), CHUNK):
        args: list[str | int] = [keys.prefix(sale_id), engine.offset_ms]
        for hold in alive[start : start + CHUNK]:
            args += _args(hold, life)
        reply = await engine.call(engine.scripts.restore_holds, [keys.holds(sale_id)], args)
        written, idem = written + int(reply[1]), idem + int(reply[2])
    return written, idem


async def restore_counters(engine: Engine, sale_id: str, owned: dict[str, dict[str, int]]) -> None:
    """Per customer, the units per sku held or bought (the per-user limit's counters), set, not
    added, so running recover twice gives the same counters."""
    with redis_errors():
        customers = sorted(owned)
        for start in range(0, len(customers), CHUNK):
            pipe = engine.client.pipeline(transaction=False)
            for customer in customers[start : start + CHUNK]:
                values: dict[Any, Any] = dict(owned[customer])
                pipe.hset(keys.user(sale_id, customer), mapping=values)
            await pipe.execute()
