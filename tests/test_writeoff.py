"""A compensation that writes units off (a backorder nobody can ship): the units leave the stock
as an adjustment in the same step, once, and the invariants hold throughout."""

from __future__ import annotations

from typing import Any, cast

from flashsale.engine import Code, Engine, keys
from tests.helpers import assert_sound, open_sale, sale_config, sku_stock


async def test_writeoff_takes_the_units_out_of_the_stock_once(engine: Engine, sale_id: str) -> None:
    stock = {"A": [("p", 3), ("q", 5)], "B": [("p", 4)]}
    await open_sale(engine, sale_config(sale_id, stock, limit=0))
    held = await engine.reserve(sale_id, "c1", [("A", 5), ("B", 1)])  # A: 3 from p, 2 from q
    assert held.ok, held
    assert (await engine.confirm(sale_id, held.hold_id, "card:t")).code is Code.OK
    length = int(await engine.client.xlen(keys.events(sale_id)))

    done = await engine.compensate(sale_id, held.hold_id, "no supplier", [("A", "q", 2)])
    assert (done.code, done.status, done.replay) == (Code.OK, "compensated", False)
    again = await engine.compensate(sale_id, held.hold_id, "no supplier", [("A", "q", 2)])
    assert (again.code, again.replay) == (Code.OK, True)

    a = await sku_stock(engine, sale_id, "A")
    b = await sku_stock(engine, sale_id, "B")
    by = {s.supplier: s for s in a.suppliers}
    # p's 3 units are back on sale; q's 2 are written off, not back.
    assert (by["p"].available, by["p"].sold, by["p"].adjusted) == (3, 0, 0)
    assert (by["q"].available, by["q"].sold, by["q"].adjusted) == (3, 0, -2)
    assert (b.available, b.sold) == (4, 0)
    events = cast(list[Any], await engine.client.xrange(keys.events(sale_id), "-", "+"))
    new: list[dict[str, str]] = [fields for _, fields in events[length:]]
    assert [f["type"] for f in new] == ["compensated", "adjusted"]
    assert (new[1]["sku"], new[1]["supplier"], new[1]["applied"]) == ("A", "q", "-2")
    assert (await engine.reserve(sale_id, "c2", [("A", 6)])).ok  # all that is left of A
    assert (await engine.reserve(sale_id, "c3", [("A", 1)])).code is Code.SOLD_OUT
    await assert_sound(engine, sale_id)
