"""Redis writes that rebuild a lost sale: lua/restore_stock.lua, restored holds, user counters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from redis.exceptions import RedisError

from flashsale.engine import Engine, keys
from flashsale.engine.errors import EngineUnavailable
from flashsale.engine.results import Code

CHUNK = 500  # holds per pipeline


@cache
def source() -> str:
    """Like engine.scripts.source: the shared helpers, then the script's own file."""
    folder = resources.files("flashsale.lua")
    shared = folder.joinpath("_shared.lua").read_text(encoding="utf-8")
    return shared + "\n" + folder.joinpath("restore_stock.lua").read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class SupplierUnits:
    supplier_id: str
    sold: int
    adjusted: int


@dataclass(frozen=True, slots=True)
class RestoredHold:
    """A confirmed (or compensated) hold as PostgreSQL remembers its order."""

    hold_id: str
    customer_id: str
    lines: str  # sku:supplier:qty,... as lua/_shared.lua writes it
    confirmed_at_ms: int
    payment: str
    compensated: bool


async def restore_stock(
    engine: Engine, sale_id: str, stock: Sequence[tuple[str, Sequence[SupplierUnits]]]
) -> Code:
    """Step one of a rebuild (see the script's header); ALREADY_LOADED when the sale exists.
    The clock offset is 0: the script only stamps status_at_ms with it."""
    args: list[str | int] = [0, len(stock)]
    for _, suppliers in stock:
        args.append(len(suppliers))
        for s in suppliers:
            args += [s.supplier_id, s.sold, s.adjusted]
    script_keys = [keys.sale(sale_id), *(keys.stock(sale_id, sku) for sku, _ in stock)]
    try:
        reply = await engine.client.register_script(source())(keys=script_keys, args=args)
    except RedisError as exc:
        raise EngineUnavailable(f"redis call failed: {exc}") from exc
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
    try:
        for start in range(0, len(holds), CHUNK):
            pipe = engine.client.pipeline(transaction=False)
            for hold in holds[start : start + CHUNK]:
                key = keys.hold(sale_id, hold.hold_id)
                pipe.hset(key, mapping=_hold_fields(hold))
                pipe.pexpire(key, max(1, hold.confirmed_at_ms + retention_ms - now_ms))
            await pipe.execute()
    except RedisError as exc:
        raise EngineUnavailable(f"redis call failed: {exc}") from exc


async def restore_counters(engine: Engine, sale_id: str, owned: dict[str, dict[str, int]]) -> None:
    """Per customer, the units per sku they bought (the per-user limit's counters), set, not
    added, so running recover twice gives the same counters."""
    try:
        customers = sorted(owned)
        for start in range(0, len(customers), CHUNK):
            pipe = engine.client.pipeline(transaction=False)
            for customer in customers[start : start + CHUNK]:
                counters: dict[Any, Any] = dict(owned[customer])
                pipe.hset(keys.user(sale_id, customer), mapping=counters)
            await pipe.execute()
    except RedisError as exc:
        raise EngineUnavailable(f"redis call failed: {exc}") from exc
