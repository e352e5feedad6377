"""Returns an operator records: the returned units per order line, where they went, and the
refund they call for (store/saga/changes.py), written in one transaction per return.

Restockable units of a sale still running go back on sale through the engine's adjust, which
the caller makes after the commit (the store knows no Redis): the return's `restock` column
says whether that is still to do (pending), claimed (restocking, a lease a replay takes over
once stale) or done, so a replay finishes a restock its first request did not; each line's
adjust carries a once-key, so no unit is added twice, even by a request whose reply was lost.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flashsale.store.db import Connection
from flashsale.store.refused import Refused
from flashsale.store.saga import changes

CONDITIONS = ("restockable", "damaged")
ReturnLine = tuple[str, int, str]  # (sku, qty, condition) as asked


class ReturnRefused(Refused):
    """A return that cannot be recorded; `code` says why (NOT_FOUND, ORDER_NOT_CAPTURED,
    RETURN_EXCEEDS_ORDER, RETURN_NOT_SHIPPED (a supplier that reports its shipments has not
    shipped the units yet), IDEMPOTENCY_CONFLICT, ORDER_BUSY (a saga step of the order is
    running: its compensation would give the restocked units back again), or a refund's refusal
    from changes.py).
    Nothing was written."""


@dataclass(frozen=True, slots=True)
class Restock:
    """Units to put back on sale for a return line: (sku, hold_supplier) in the sale."""

    sale_id: str
    sku: str
    hold_supplier: str
    condition: str
    qty: int


def digest(lines: Sequence[ReturnLine], reason: str) -> str:
    """What a replay must repeat: the lines and the reason."""
    body = json.dumps([sorted(lines), reason], separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


# The order row first, as the saga's write() and changes.py lock it: no lock-order deadlock.
_ORDER = """
SELECT o.order_id, o.sale_id, o.status, o.captured_minor,
       coalesce(o.claimed_until > now(), false) AS busy,
       s.status <> 'closed' AND (s.ends_at IS NULL OR s.ends_at > now()) AS sale_running
FROM orders o JOIN sales s USING (sale_id) WHERE o.order_id = $1 FOR UPDATE OF o
"""
_BY_KEY = "SELECT id, request_digest FROM returns WHERE order_id = $1 AND idempotency_key = $2"
# Per line: units that can still come back: confirmed at the supplier, not cancelled, not
# returned already (sold), and of a supplier that reports its shipments, shipped (room).
_ROOM = """
SELECT sku, hold_supplier, price_minor, sold - returned AS sold,
       greatest(0, CASE WHEN reporting THEN least(sold, shipped_qty) - returned
                        ELSE sold - returned END) AS room
FROM (
    SELECT a.sku, a.hold_supplier, a.price_minor, a.shipped_qty,
           CASE WHEN a.confirmed AND a.status <> 'cancelled'
                THEN a.qty - a.cancelled_qty ELSE 0 END AS sold,
           coalesce((SELECT sum(l.qty) FROM return_lines l
                     WHERE l.order_id = a.order_id AND l.sku = a.sku
                       AND l.hold_supplier = a.hold_supplier), 0) AS returned,
           EXISTS (SELECT 1 FROM supplier_feeds f
                   WHERE f.supplier_id = a.supplier_id AND f.reports_shipments) AS reporting
    FROM order_allocations a WHERE a.order_id = $1
) x ORDER BY sku, hold_supplier
"""
_INSERT = """
INSERT INTO returns (order_id, sale_id, idempotency_key, request_digest, reason, refund_minor,
                     restock)
VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id
"""
_LINE = """
INSERT INTO return_lines (return_id, order_id, sku, hold_supplier, qty, condition, destination,
                          refund_minor)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""
_REFUND = "UPDATE returns SET refund_change_id = $2 WHERE id = $1"
NOT_UNDONE = ("CANCELLED", "REFUNDED", "PAYMENT_FAILED")


def _split(rooms: list[Any], asked: Sequence[ReturnLine]) -> list[tuple[Any, int, str]]:
    """Each asked (sku, qty, condition) spread over the sku's lines: [(line, qty, condition)]."""
    left = {(r["sku"], r["hold_supplier"]): int(r["room"]) for r in rooms}
    unsent = {(r["sku"], r["hold_supplier"]): max(0, r["sold"] - r["room"]) for r in rooms}
    parts = []
    for sku, qty, condition in asked:
        mine = [r for r in rooms if r["sku"] == sku]
        if not mine:
            raise ReturnRefused("RETURN_EXCEEDS_ORDER", f"the order has no line for sku {sku}")
        room = sum(left[(r["sku"], r["hold_supplier"])] for r in mine)
        if room < qty <= room + sum(unsent[(sku, r["hold_supplier"])] for r in mine):
            raise ReturnRefused(
                "RETURN_NOT_SHIPPED", f"{sku}: {qty} asked, {room} shipped and not yet returned"
            )
        if qty > room:
            raise ReturnRefused(
                "RETURN_EXCEEDS_ORDER", f"{sku}: {qty} asked, {room} sold and not yet returned"
            )
        for r in mine:
            n = min(qty, left[(sku, r["hold_supplier"])])
            if n:
                parts.append((r, n, condition))
                left[(sku, r["hold_supplier"])] -= n
                qty -= n
    return parts


async def _target(conn: Connection, order_id: str) -> Any:
    order = await conn.fetchrow(_ORDER, order_id)
    if order is None:
        raise ReturnRefused("NOT_FOUND", f"no order {order_id}")
    return order


async def record(
    conn: Connection, order_id: str, key: str, asked: Sequence[ReturnLine], reason: str
) -> tuple[int, bool]:
    """Records the return and its refund in one transaction: (return id, replayed). The
    refund is the returned units at their price, asked under the key return:<id>."""
    request = digest(asked, reason)
    async with conn.transaction():
        order = await _target(conn, order_id)
        found = await conn.fetchrow(_BY_KEY, order_id, key)
        if found is not None:
            if found["request_digest"] != request:
                raise ReturnRefused("IDEMPOTENCY_CONFLICT", f"key {key!r} recorded another return")
            return int(found["id"]), True
        if order["captured_minor"] <= 0 or order["status"] in NOT_UNDONE:
            raise ReturnRefused("ORDER_NOT_CAPTURED", f"order {order_id} is {order['status']}")
        if order["busy"]:  # a running step read the order before this restock: it would undo
            raise ReturnRefused("ORDER_BUSY", f"a step of order {order_id} is running; try again")
        parts = _split(list(await conn.fetch(_ROOM, order_id)), asked)
        return_id = await _write(conn, order, key, request, reason, parts)
    return return_id, False


def _destination(condition: str, running: bool) -> str:
    if condition == "damaged":
        return "written_off"
    return "sale_stock" if running else "ledger"


async def _write(
    conn: Connection,
    order: Any,
    key: str,
    request: str,
    reason: str,
    parts: list[tuple[Any, int, str]],
) -> int:
    refund = sum(r["price_minor"] * n for r, n, _ in parts)
    running = bool(order["sale_running"])
    restock = "pending" if running and any(c == "restockable" for _, _, c in parts) else "none"
    args = (order["order_id"], order["sale_id"], key, request, reason, refund, restock)
    return_id = int(await conn.fetchval(_INSERT, *args))
    rows = [
        (
            return_id,
            order["order_id"],
            r["sku"],
            r["hold_supplier"],
            n,
            c,
            _destination(c, running),
            r["price_minor"] * n,
        )
        for r, n, c in _merged(parts)
    ]
    await conn.executemany(_LINE, rows)
    by_sku: dict[str, int] = {}
    for r, n, _ in parts:
        by_sku[r["sku"]] = by_sku.get(r["sku"], 0) + n
    try:
        change = await changes.request_refund(
            conn,
            order["order_id"],
            amount_minor=refund,
            lines=sorted(by_sku.items()),
            of_lines=[(r["sku"], r["hold_supplier"], n) for r, n, _ in _merged(parts)],
            reason=f"return {return_id}: {reason}"[:512],
            key=f"return:{return_id}",
            source="return",
        )
    except changes.ChangeRefused as exc:
        raise ReturnRefused(exc.code, exc.detail) from None
    await conn.execute(_REFUND, return_id, change.id)
    return return_id


def _merged(parts: list[tuple[Any, int, str]]) -> list[tuple[Any, int, str]]:
    """One row per line and condition (a sku asked twice in one condition adds up)."""
    out: dict[tuple[str, str, str], tuple[Any, int, str]] = {}
    for r, n, c in parts:
        k = (r["sku"], r["hold_supplier"], c)
        out[k] = (r, out[k][1] + n if k in out else n, c)
    return list(out.values())


# --- the restock -------------------------------------------------------------------------------

# A claim older than this was left by a request that stopped (a crash, a lost connection):
# a replay takes it over. Each line's adjust is made once for its key, whoever makes it.
RESTOCK_LEASE_S = 30
_CLAIM = """
UPDATE returns SET restock = 'restocking', restock_claimed_at = now()
WHERE id = $1 AND (restock = 'pending' OR restock = 'restocking'
                   AND restock_claimed_at < now() - make_interval(secs => $2))
RETURNING sale_id
"""
# Lines still to put back (a line is done once restocked, or sent to the ledger).
_TO_RESTOCK = """
SELECT sku, hold_supplier, condition, qty FROM return_lines
WHERE return_id = $1 AND destination = 'sale_stock' AND restocked_qty = 0
ORDER BY sku, hold_supplier
"""


def once_key(return_id: int, x: Restock) -> str:
    """The engine adjust's once-key of a return line: its units are added at most once."""
    return f"return-{return_id}-{x.sku}-{x.hold_supplier}"


async def claim_restock(conn: Connection, return_id: int) -> list[Restock]:
    """The units this caller is to put back on sale ([] when none, or another caller has
    them and its claim is fresh): the restock is claimed, so no two callers run at once."""
    sale_id = await conn.fetchval(_CLAIM, return_id, RESTOCK_LEASE_S)
    if sale_id is None:
        return []
    rows = await conn.fetch(_TO_RESTOCK, return_id)
    return [Restock(sale_id, r["sku"], r["hold_supplier"], r["condition"], r["qty"]) for r in rows]


_RESTOCKED = """
UPDATE return_lines SET restocked_qty = $5, destination = $6
WHERE return_id = $1 AND sku = $2 AND hold_supplier = $3 AND condition = $4
"""


async def restocked(
    conn: Connection,
    return_id: int,
    done: Sequence[tuple[Restock, int, str]],
    *,
    finished: bool,
) -> None:
    """What the restock did per line: (line, units added, destination: sale_stock, or ledger
    when the sale was no longer loaded). `finished`: every line is done; otherwise the claim
    is given back (pending) and a replay puts back the lines still to do."""
    after = "done" if finished else "pending"
    async with conn.transaction():
        rows = [(return_id, x.sku, x.hold_supplier, x.condition, n, where) for x, n, where in done]
        if rows:
            await conn.executemany(_RESTOCKED, rows)
        await conn.execute(
            "UPDATE returns SET restock = $2, restock_claimed_at = NULL WHERE id = $1",
            return_id,
            after,
        )


# --- reading -----------------------------------------------------------------------------------

_RETURN = """
SELECT id, order_id, sale_id, reason, refund_minor, refund_change_id, restock, at
FROM returns WHERE id = $1
"""
_LINES = """
SELECT sku, hold_supplier, qty, condition, destination, restocked_qty, refund_minor
FROM return_lines WHERE return_id = $1 ORDER BY sku, hold_supplier, condition
"""


async def load(conn: Connection, return_id: int) -> tuple[Any, list[Any]]:
    """The return's row and its lines."""
    return await conn.fetchrow(_RETURN, return_id), list(await conn.fetch(_LINES, return_id))
