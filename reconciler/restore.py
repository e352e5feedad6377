"""Redis writes that rebuild a lost sale: lua/restore_stock.lua, restored holds, user counters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flashsale.engine import Engine, keys
from flashsale.engine.connection import redis_errors
from flashsale.engine.results import Code
from flashsale.store.recovery import RestoredHold, SupplierUnits

CHUNK = 500  # holds per pipeline


async def restore_stock(
    engine: Engine, sale_id: str, stock: Sequence[tuple[str, Sequence[SupplierUnits]]]
) -> Code:
    """Step one of a rebuild (see the script's header); ALREADY_LOADED when the sale exists."""
    args: list[str | int] = [engine.offset_ms, len(stock)]
    for _, suppliers in stock:
        args.append(len(suppliers))
        for s in suppliers:
            args += [s.supplier_id, s.sold, s.adjusted]
    script_keys = [keys.sale(sale_id), *(keys.stock(sale_id, sku) for sku, _ in stock)]
    reply = await engine.call(engine.scripts.restore_stock, script_keys, args)
    return Code(reply[0])


def _hold_fields(hold: RestoredHold) -> dict[Any, Any]:
    """The hash confirm.lua leaves behind. The hold's expiry is not in PostgreSQL; all that is
    known is that it came after the confirmation, which is what confirmed_at + 1 says.
    `restored` marks the hash as rebuilt, for anyone reading it later."""
    at = hold.confirmed_at_ms
    fields: dict[Any, Any] = {
        "user": hold.customer_id,
        "status": "compensated" if hold.compensated else "confirmed",
        "expires_at_ms": at + 1,
        "created_at_ms": at,
        "confirmed_at_ms": at,
        "lines": hold.lines,
        "idem": "",
        "fp": "",
        "extended": 0,
        "payment": hold.payment,
        "restored": 1,
    }
    if hold.compensated:
        fields["ended_at_ms"] = at
    return fields


async def restore_holds(
    engine: Engine, sale_id: str, holds: Sequence[RestoredHold], now_ms: int, retention_ms: int
) -> None:
    """Hold hashes so a repeated confirm answers as before and the saga can still compensate;
    each lives out what is left of its retention."""
    with redis_errors():
        for start in range(0, len(holds), CHUNK):
            pipe = engine.client.pipeline(transaction=False)
            for hold in holds[start : start + CHUNK]:
                key = keys.hold(sale_id, hold.hold_id)
                pipe.hset(key, mapping=_hold_fields(hold))
                pipe.pexpire(key, max(1, hold.confirmed_at_ms + retention_ms - now_ms))
            await pipe.execute()


async def restore_counters(engine: Engine, sale_id: str, owned: dict[str, dict[str, int]]) -> None:
    """Per customer, the units per sku they bought (the per-user limit's counters), set, not
    added, so running recover twice gives the same counters."""
    with redis_errors():
        customers = sorted(owned)
        for start in range(0, len(customers), CHUNK):
            pipe = engine.client.pipeline(transaction=False)
            for customer in customers[start : start + CHUNK]:
                counters: dict[Any, Any] = dict(owned[customer])
                pipe.hset(keys.user(sale_id, customer), mapping=counters)
            await pipe.execute()
