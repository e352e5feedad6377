"""What of an order's lines a change may still take: per line the units open to a cancel or a
refund (after what is shipped, cancelled, refunded, returned and pending), and the units a
request names taken from them. store/saga/changes.py records the change; this reads the room."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from flashsale.store.db import Connection
from flashsale.store.refused import Refused


class ChangeRefused(Refused):
    """A change that cannot be recorded; `code` says why (NOT_FOUND, ORDER_FINAL, ORDER_CAPTURED,
    LINE_SHIPPED, UNKNOWN_LINE, LINE_QTY_EXCEEDED, NOTHING_TO_CANCEL, REFUND_EXCEEDS_CAPTURED,
    SAGA_STEP_DEAD, IDEMPOTENCY_KEY_REUSED, INVALID_REQUEST). Nothing was written."""


# The statuses that count a confirmed line of a supplier not reporting shipments as shipped.
COUNTED = frozenset({"PARTIALLY_FULFILLED", "FULFILLED"})
# A line's units that count as shipped follow the order's status (store/shipments.py
# status_of): reported ones, less those returned; all of a confirmed line of a supplier that does
# not report shipments, once the order's status counts them (after notify).
LINES = """
SELECT a.sku, a.hold_supplier, a.qty, a.price_minor, a.status, a.cancelled_qty, a.refunded_qty,
       a.shipped_qty, a.confirmed, coalesce(f.reports_shipments, false) AS reports,
       (SELECT status FROM orders WHERE order_id = $1) = ANY($2::text[]) AS counted, (
           SELECT coalesce(sum(r.qty), 0) FROM return_lines r
           WHERE r.order_id = a.order_id AND r.sku = a.sku AND r.hold_supplier = a.hold_supplier
       ) AS returned_qty
FROM order_allocations a LEFT JOIN supplier_feeds f ON f.supplier_id = a.supplier_id
WHERE a.order_id = $1 ORDER BY a.sku, a.hold_supplier
"""
PENDING = """
SELECT id, kind, whole, lines, amount_minor, reason, source FROM order_changes
WHERE order_id = $1 AND status = 'pending' ORDER BY id
"""


@dataclass(slots=True)
class Room:
    """A line's units still open to a change, after what is pending."""

    sku: str
    hold_supplier: str
    price_minor: int
    cancellable: int  # not shipped, not cancelled, not refunded
    refundable: int  # not cancelled, not refunded
    shipped: int  # counting as shipped and not returned
    unshipped: int  # not shipped, not cancelled (refunded or not): what a whole cancel takes


async def rooms(conn: Connection, order_id: str) -> tuple[list[Room], int]:
    """Each line's room, and the money the pending changes will give back."""
    rooms = []
    for r in await conn.fetch(LINES, order_id, sorted(COUNTED)):
        live = 0 if r["status"] == "cancelled" else r["qty"] - r["cancelled_qty"]
        gone = r["shipped_qty"]  # units that left the supplier, returned or not
        if r["status"] == "allocated" and r["confirmed"] and r["counted"] and not r["reports"]:
            gone = live
        shipped = min(max(gone - r["returned_qty"], 0), live)
        free = max(live - r["refunded_qty"], 0)
        room = Room(r["sku"], r["hold_supplier"], r["price_minor"], 0, free, shipped, 0)
        room.cancellable, room.unshipped = max(free - shipped, 0), max(live - gone, 0)
        rooms.append(room)
    pending_minor = 0
    for change in await conn.fetch(PENDING, order_id):
        pending_minor += change["amount_minor"]
        for part in json.loads(change["lines"]):
            room = next(x for x in rooms if (x.sku, x.hold_supplier) == tuple(part[:2]))
            room.refundable -= part[2]
            room.cancellable = min(room.cancellable, room.refundable)
            if change["kind"] == "cancel":
                room.unshipped -= part[2]
    return rooms, pending_minor


def take(rooms: list[Room], sku: str, qty: int, cancel: bool) -> list[tuple[str, str, int]]:
    """The units of `sku` taken from its lines in order: [(sku, hold_supplier, qty)]."""
    mine = [x for x in rooms if x.sku == sku]
    if not mine:
        raise ChangeRefused("UNKNOWN_LINE", f"the order has no line for sku {sku}")
    room = sum(x.cancellable if cancel else x.refundable for x in mine)
    if qty > room:
        if cancel and qty <= room + sum(x.shipped for x in mine):
            raise ChangeRefused("LINE_SHIPPED", f"{sku}: only {room} unit(s) not yet shipped")
        raise ChangeRefused("LINE_QTY_EXCEEDED", f"{sku}: only {room} unit(s) left to change")
    taken = []
    for x in mine:
        n = min(qty, x.cancellable if cancel else x.refundable)
        if n > 0:
            taken.append((sku, x.hold_supplier, n))
            x.cancellable, x.refundable, qty = x.cancellable - n, x.refundable - n, qty - n
    return taken


def parts(
    rooms: list[Room], lines: Sequence[tuple[str, int]], cancel: bool
) -> list[tuple[str, str, int]]:
    for sku, qty in lines:
        if not isinstance(sku, str) or not isinstance(qty, int) or qty < 1:
            raise ChangeRefused("INVALID_REQUEST", "each line needs a sku and a qty >= 1")
    return [part for sku, qty in lines for part in take(rooms, sku, qty, cancel)]


def exact(rooms: list[Room], parts: Sequence[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """Units of named lines (sku, hold_supplier, qty), as a return names them."""
    for sku, hold_supplier, qty in parts:
        room = next((x for x in rooms if (x.sku, x.hold_supplier) == (sku, hold_supplier)), None)
        if room is None:
            raise ChangeRefused("UNKNOWN_LINE", f"the order has no line {sku} from {hold_supplier}")
        if qty > room.refundable:
            raise ChangeRefused(
                "LINE_QTY_EXCEEDED", f"{sku}: only {room.refundable} unit(s) left to change"
            )
        room.cancellable, room.refundable = room.cancellable - qty, room.refundable - qty
    return list(parts)


def value(rooms: list[Room], parts: Sequence[tuple[str, str, int]]) -> int:
    price = {(x.sku, x.hold_supplier): x.price_minor for x in rooms}
    return sum(price[(sku, hold)] * qty for sku, hold, qty in parts)
