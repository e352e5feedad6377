"""Bad input to every engine call: a typed error or code, and Redis state byte-for-byte equal."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from flashsale.engine import Code, Engine, InvalidInput
from flashsale.engine.sale import ItemConfig, SaleConfig, SupplierStockConfig
from tests.helpers import open_sale, sale_config, snapshot

Call = Callable[[Engine, str, str], Awaitable[Any]]

REFUSED: dict[str, Call] = {
    "qty zero": lambda e, s, h: e.reserve(s, "c1", [("A", 0)]),
    "qty negative": lambda e, s, h: e.reserve(s, "c1", [("A", -1)]),
    "qty huge": lambda e, s, h: e.reserve(s, "c1", [("A", 10**9)]),
    "qty bool": lambda e, s, h: e.reserve(s, "c1", [("A", True)]),
    "qty string": lambda e, s, h: e.reserve(s, "c1", [("A", "1")]),  # type: ignore[list-item]
    "empty cart": lambda e, s, h: e.reserve(s, "c1", []),
    "too many lines": lambda e, s, h: e.reserve(s, "c1", [(f"S{i}", 1) for i in range(11)]),
    "same sku twice": lambda e, s, h: e.reserve(s, "c1", [("A", 1), ("A", 1)]),
    "cart not a list": lambda e, s, h: e.reserve(s, "c1", "A"),  # type: ignore[arg-type]
    "line not a pair": lambda e, s, h: e.reserve(s, "c1", [("A", 1, 2)]),  # type: ignore[list-item]
    "sku with colon": lambda e, s, h: e.reserve(s, "c1", [("A:p", 1)]),
    "customer empty": lambda e, s, h: e.reserve(s, "", [("A", 1)]),
    "customer too long": lambda e, s, h: e.reserve(s, "c" * 65, [("A", 1)]),
    "customer with brace": lambda e, s, h: e.reserve(s, "c}1", [("A", 1)]),
    "sale id with space": lambda e, s, h: e.reserve("bad sale", "c1", [("A", 1)]),
    "idempotency key malformed": lambda e, s, h: e.reserve(s, "c1", [("A", 1)], "k k"),
    "hold id malformed confirm": lambda e, s, h: e.confirm(s, "h/1"),
    "hold id malformed release": lambda e, s, h: e.release(s, ""),
    "hold id malformed extend": lambda e, s, h: e.extend(s, "x" * 65),
    "payment ref too long": lambda e, s, h: e.confirm(s, h, "p" * 513),
    "compensate reason not text": lambda e, s, h: e.compensate(s, h, 5),  # type: ignore[arg-type]
    "writeoff qty zero": lambda e, s, h: e.compensate(s, h, "x", [("A", "p", 0)]),
    "writeoff supplier malformed": lambda e, s, h: e.compensate(s, h, "x", [("A", "p:q", 1)]),
    "adjust delta huge": lambda e, s, h: e.adjust(s, "A", "p", 10**13),
    "adjust delta bool": lambda e, s, h: e.adjust(s, "A", "p", True),
    "sweep limit zero": lambda e, s, h: e.sweep(s, 0),
    "status unknown": lambda e, s, h: e.set_status(s, "running"),
    "config qty negative": lambda e, s, h: e.load_sale(_config(s, stock=-1)),
    "config duplicate supplier": lambda e, s, h: e.load_sale(_config(s, dup=True)),
    "config ends before start": lambda e, s, h: e.load_sale(
        SaleConfig(s, 2, 10, 5, 1000, 1, _config(s).items)
    ),
}

ANSWERED: dict[str, tuple[Call, Code]] = {
    "unknown sku": (lambda e, s, h: e.reserve(s, "c1", [("A", 1), ("NOPE", 1)]), Code.UNKNOWN_SKU),
    "unknown sale": (lambda e, s, h: e.reserve(s + "x", "c1", [("A", 1)]), Code.UNKNOWN_SALE),
    "over the limit": (lambda e, s, h: e.reserve(s, "c1", [("A", 3)]), Code.LIMIT_EXCEEDED),
    "more than stock": (lambda e, s, h: e.reserve(s, "c9", [("B", 2)]), Code.SOLD_OUT),
    "unknown hold confirm": (lambda e, s, h: e.confirm(s, "nope"), Code.UNKNOWN_HOLD),
    "unknown hold release": (lambda e, s, h: e.release(s, "nope"), Code.UNKNOWN_HOLD),
    "unknown hold extend": (lambda e, s, h: e.extend(s, "nope"), Code.UNKNOWN_HOLD),
    "unknown hold compensate": (lambda e, s, h: e.compensate(s, "nope", "x"), Code.UNKNOWN_HOLD),
    "compensate unconfirmed": (lambda e, s, h: e.compensate(s, h, "x"), Code.NOT_CONFIRMED),
    "writeoff of a held hold": (
        lambda e, s, h: e.compensate(s, h, "x", [("A", "p", 1)]),
        Code.NOT_CONFIRMED,
    ),
    "adjust unknown sku": (lambda e, s, h: e.adjust(s, "NOPE", "p", 1), Code.UNKNOWN_SKU),
    "adjust unknown supplier": (lambda e, s, h: e.adjust(s, "A", "zz", 1), Code.UNKNOWN_SUPPLIER),
    "status of unknown sale": (lambda e, s, h: e.set_status(s + "x", "open"), Code.UNKNOWN_SALE),
    "same config again": (lambda e, s, h: e.load_sale(sale_config(s)), Code.ALREADY_LOADED),
}


def _config(sale_id: str, *, stock: int = 5, dup: bool = False) -> SaleConfig:
    sups = (SupplierStockConfig("p", stock), SupplierStockConfig("p" if dup else "q", 1))
    return SaleConfig(sale_id, 2, 0, 0, 1000, 1, (ItemConfig("A", 100, sups),))


async def _prepared(engine: Engine, sale_id: str) -> str:
    await open_sale(engine, sale_config(sale_id, {"A": [("p", 60), ("q", 40)], "B": [("p", 1)]}))
    held = await engine.reserve(sale_id, "c1", [("A", 1)])
    assert held.ok
    return held.hold_id


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_refused_before_redis(engine: Engine, sale_id: str, case: str) -> None:
    hold_id = await _prepared(engine, sale_id)
    before = await snapshot(engine.client, sale_id)
    with pytest.raises(InvalidInput):
        await REFUSED[case](engine, sale_id, hold_id)
    assert await snapshot(engine.client, sale_id) == before


@pytest.mark.parametrize("case", sorted(ANSWERED))
async def test_answered_with_a_code(engine: Engine, sale_id: str, case: str) -> None:
    hold_id = await _prepared(engine, sale_id)
    before = await snapshot(engine.client, sale_id)
    call, expected = ANSWERED[case]
    result = await call(engine, sale_id, hold_id)
    code = result[0] if isinstance(result, tuple) else result.code
    assert code is expected
    assert await snapshot(engine.client, sale_id) == before


async def test_waiting_room_sale_needs_an_admission(engine: Engine, sale_id: str) -> None:
    config = dataclasses.replace(sale_config(sale_id), waiting_room=True)
    await open_sale(engine, config)
    before = await snapshot(engine.client, sale_id)
    refused = await engine.reserve(sale_id, "c1", [("A", 1)])
    assert refused.code is Code.NOT_ADMITTED
    assert await snapshot(engine.client, sale_id) == before
    admitted = await engine.reserve(sale_id, "c1", [("A", 1)], admitted=True)
    assert admitted.ok


async def test_writeoff_past_the_hold_changes_nothing(engine: Engine, sale_id: str) -> None:
    """A write-off must be units the hold has; otherwise the compensation is refused whole."""
    hold_id = await _prepared(engine, sale_id)
    assert (await engine.confirm(sale_id, hold_id, "card:t")).code is Code.OK
    before = await snapshot(engine.client, sale_id)
    for parts in ([("A", "p", 2)], [("A", "q", 1)], [("B", "p", 1)], [("A", "p", 1)] * 2):
        result = await engine.compensate(sale_id, hold_id, "x", parts)
        assert result.code is Code.INVALID_WRITEOFF, (parts, result)
    assert await snapshot(engine.client, sale_id) == before
