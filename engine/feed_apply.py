"""The wrapper of lua/apply_feed.lua: one call sets a sale's offers from a supplier feed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from flashsale.engine import keys
from flashsale.engine.errors import InvalidInput
from flashsale.engine.feeds import SOURCES, FeedChange, FeedRef, FeedRow
from flashsale.engine.sale import MAX_MS, MAX_UNITS
from flashsale.engine.validation import check_id, check_int

if TYPE_CHECKING:
    from flashsale.engine.api import Engine

MAX_ROWS = 5_000  # rows per script call: a bigger delivery is sent in several calls


def _check(sale_id: str, rows: Sequence[FeedRow], ref: FeedRef) -> None:
    check_id("sale_id", sale_id)
    check_id("delivery_id", ref.delivery_id)
    check_int("as_of_ms", ref.as_of_ms, 0, MAX_MS)
    if ref.source not in SOURCES:
        raise InvalidInput("source", f"must be one of {', '.join(SOURCES)}")
    for i, row in enumerate(rows):
        check_id(f"rows[{i}].sku", row.sku)
        check_id(f"rows[{i}].supplier_id", row.supplier_id)
        check_int(f"rows[{i}].on_hand", row.on_hand, 0, MAX_UNITS)
        check_int(f"rows[{i}].settled", row.settled, 0, MAX_UNITS)


async def apply_feed(
    engine: Engine, sale_id: str, rows: Sequence[FeedRow], ref: FeedRef
) -> list[FeedChange]:
    """Each row's offer set atomically from the counters as they are in Redis at that moment.
    Rows are sent MAX_ROWS at a time; each call is atomic on its own rows."""
    _check(sale_id, rows, ref)
    out: list[FeedChange] = []
    for start in range(0, len(rows), MAX_ROWS):
        part = rows[start : start + MAX_ROWS]
        args: list[str | int] = [engine.offset_ms, ref.source, ref.delivery_id, ref.as_of_ms]
        for row in part:
            args += [row.sku, row.supplier_id, row.on_hand, row.settled]
        stock_keys = [keys.stock(sale_id, row.sku) for row in part]
        reply = await engine.call(
            engine.scripts.apply_feed, [keys.events(sale_id), *stock_keys], args
        )
        out += [
            FeedChange(row.sku, row.supplier_id, str(r[0]), int(r[1]), int(r[2]), int(r[3]))
            for row, r in zip(part, reply, strict=True)
        ]
    return out
