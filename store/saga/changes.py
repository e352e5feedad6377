"""Changes asked of an order after the sale (order_changes): a cancel or a refund recorded in the
caller's transaction, the saga armed to carry it out (order.change), and its outcome written.

The gateway's cancel and refund routes and a recorded return all come through here. Nothing is
paid back or cancelled here: the reconciler's order.change step talks to the parties. Like a
backorder decision, a change never overtakes a running step: an idle order runs order.change next,
and a busy one keeps the change until that step's outcome is written (see `divert`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flashsale.store.db import Connection
from flashsale.store.saga import change_rooms
from flashsale.store.saga.change_rooms import PENDING
from flashsale.store.saga.change_rooms import ChangeRefused as ChangeRefused  # its callers' name
from flashsale.store.saga.claims import REARM, TRANSITION
from flashsale.store.saga.model import FINAL, Change

STEP = "order.change"
SOURCES = ("customer", "operator", "return")


@dataclass(frozen=True, slots=True)
class Recorded:
    """A change as recorded; `replay` when the key had already recorded it."""

    id: int
    order_id: str
    kind: str
    status: str
    amount_minor: int
    lines: list[dict[str, Any]]
    outcome: str | None
    replay: bool


# The order row first, as the saga's write() locks it: no lock-order deadlock.
_TARGET = """
SELECT o.order_id, o.customer_id, o.status, o.dead_step, o.captured_minor, o.refunded_minor,
       o.next_step, o.next_step IS NULL OR (
           (o.claimed_until IS NULL OR o.claimed_until < now())
           AND coalesce(s.attempts, 0) = 0
       ) AS idle
FROM orders o LEFT JOIN saga_steps s ON s.order_id = o.order_id AND s.step = o.next_step
WHERE o.order_id = $1
FOR UPDATE OF o
"""
_BY_KEY = """
SELECT id, order_id, kind, whole, status, amount_minor, lines, outcome, source FROM order_changes
WHERE order_id = $1 AND idempotency_key = $2
"""
_INSERT = """
INSERT INTO order_changes (order_id, kind, whole, lines, amount_minor, reason, source,
    idempotency_key)
VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8)
RETURNING id, order_id, kind, status, amount_minor, lines, outcome
"""
# An idle order runs order.change next, due now, as a new round (new keys at the parties); the
# step it displaces (a promised day's allocation, say) is resumed after it.
_ARM = """
UPDATE orders SET
    paused_step = CASE WHEN next_step = $2 THEN paused_step ELSE next_step END,
    paused_due_at = CASE WHEN next_step = $2 THEN paused_due_at ELSE step_due_at END,
    next_step = $2, step_due_at = now(), step_token = step_token + 1, updated_at = now()
WHERE order_id = $1
"""


def _recorded(r: Any, replay: bool) -> Recorded:
    lines = json.loads(r["lines"])
    found = (r["id"], r["order_id"], r["kind"], r["status"], r["amount_minor"])
    return Recorded(*found, lines, r["outcome"], replay)


async def _target(conn: Connection, order_id: str, customer_id: str | None) -> Any:
    order = await conn.fetchrow(_TARGET, order_id)
    if order is None or (customer_id is not None and order["customer_id"] != customer_id):
        raise ChangeRefused("NOT_FOUND", f"no order {order_id}")  # another's order: unknown
    return order


def _same(
    found: Any, kind: str, lines: list[tuple[str, int]] | None, amount_minor: int, source: str
) -> bool:
    """Whether a request asks what the key's record was made for (units per sku, the whole
    order, or the amount), by the same kind of caller: a customer's key never replays an
    operator's change."""
    stored: Counter[str] = Counter()
    for sku, _, qty in json.loads(found["lines"]):
        stored[sku] += qty
    asked: Counter[str] = Counter()
    for sku, qty in lines or []:
        asked[sku] += qty
    if found["kind"] != kind or found["source"] != source:
        return False
    if kind == "cancel":
        return bool(found["whole"]) == (lines is None) and (lines is None or stored == asked)
    if lines:
        return stored == asked and amount_minor in (0, found["amount_minor"])
    return not stored and amount_minor == found["amount_minor"]


async def _replayed(
    conn: Connection,
    order_id: str,
    key: str,
    kind: str,
    lines: list[tuple[str, int]] | None,
    amount_minor: int = 0,
    *,
    source: str,
) -> Recorded | None:
    """The key's first record, when the request is the same; another request with the key is
    refused (IDEMPOTENCY_KEY_REUSED)."""
    found = await conn.fetchrow(_BY_KEY, order_id, key)
    if found is None:
        return None
    if not _same(found, kind, lines, amount_minor, source):
        raise ChangeRefused(
            "IDEMPOTENCY_KEY_REUSED", f"key {key!r} recorded another {found['kind']} of the order"
        )
    return _recorded(found, True)


async def _record(
    conn: Connection,
    order: Any,
    kind: str,
    parts: Sequence[tuple[str, str, int]],
    amount_minor: int,
    *,
    whole: bool,
    reason: str,
    source: str,
    key: str,
) -> Recorded:
    """The row, the saga armed when the order is idle, and a note in the order's transitions."""
    order_id = order["order_id"]
    lines = json.dumps([list(p) for p in parts])
    args = (order_id, kind, whole, lines, amount_minor, reason[:512], source, key)
    row = await conn.fetchrow(_INSERT, *args)
    # A retailer's decision scheduled first is carried out first; the change follows it.
    if order["idle"] and order["next_step"] != "backorder.apply":
        await conn.execute(_ARM, order_id, STEP)
        await conn.execute(REARM, order_id, STEP)
    what = "whole order" if whole else ", ".join(f"{q} x {s}" for s, _, q in parts) or "amount"
    cause = f"{source} asked a {kind} ({what}, {amount_minor}): {reason[:200]}".rstrip(": ")
    await conn.execute(TRANSITION, order_id, order["status"], order["status"], cause)
    return _recorded(row, False)


def _check_common(order: Any, source: str, key: str) -> None:
    if source not in SOURCES:
        raise ChangeRefused("INVALID_REQUEST", f"source must be one of {', '.join(SOURCES)}")
    if not key or len(key) > 200:
        raise ChangeRefused("INVALID_REQUEST", "an idempotency key of 1 to 200 characters")
    if order["dead_step"] is not None:
        raise ChangeRefused(
            "SAGA_STEP_DEAD",
            f"order {order['order_id']}: step {order['dead_step']} is dead-lettered; "
            f"run `flashsale saga retry --order {order['order_id']}` first",
        )


async def request_refund(
    conn: Connection,
    order_id: str,
    *,
    amount_minor: int,
    lines: list[tuple[str, int]] | None,
    reason: str,
    key: str,
    source: str,
    customer_id: str | None = None,
    of_lines: Sequence[tuple[str, str, int]] | None = None,
) -> Recorded:
    """Records a refund in the caller's transaction. `lines` (sku, qty) refund those units at
    their price (or `amount_minor` for them, when above 0: a return less a fee, at most their
    price); without lines, `amount_minor`. `of_lines` (sku, hold_supplier, qty) names the very
    lines, as a return does (then `lines` gives the same units per sku, for a replay's check).
    Never above what was captured and not yet refunded (pending changes included). A key
    already used on the order answers its first record."""
    order = await _target(conn, order_id, customer_id)
    if (
        replay := await _replayed(conn, order_id, key, "refund", lines, amount_minor, source=source)
    ) is not None:
        return replay
    _check_common(order, source, key)
    rooms, pending_minor = await change_rooms.rooms(conn, order_id)
    if of_lines:
        parts = change_rooms.exact(rooms, of_lines)
    else:
        parts = change_rooms.parts(rooms, lines, cancel=False) if lines else []
    value = change_rooms.value(rooms, parts) if lines else amount_minor
    amount = amount_minor if amount_minor > 0 else value
    if not isinstance(amount, int) or amount < 1 or (lines and amount > value):
        raise ChangeRefused(
            "INVALID_REQUEST", f"a refund of 1 to {value if lines else 'the captured'} minor units"
        )
    room = order["captured_minor"] - order["refunded_minor"] - pending_minor
    if amount > room:
        raise ChangeRefused(
            "REFUND_EXCEEDS_CAPTURED",
            f"{amount} asked; {max(room, 0)} of {order['captured_minor']} captured is left "
            "to refund (pending refunds included)",
        )
    return await _record(
        conn, order, "refund", parts, amount, whole=False, reason=reason, source=source, key=key
    )


async def request_cancel(
    conn: Connection,
    order_id: str,
    *,
    lines: list[tuple[str, int]] | None,
    reason: str,
    key: str,
    source: str,
    customer_id: str | None = None,
) -> Recorded:
    """Records a cancel of `lines` (sku, qty), or of every unit left when None. A customer
    (source 'customer', `customer_id` the owner) may cancel only before the capture; an operator
    any order not final; shipped units never."""
    order = await _target(conn, order_id, customer_id)
    if (replay := await _replayed(conn, order_id, key, "cancel", lines, source=source)) is not None:
        return replay
    _check_common(order, source, key)
    if source == "customer" and order["captured_minor"] > 0:
        raise ChangeRefused("ORDER_CAPTURED", "the payment is captured: ask the shop")
    if order["status"] in FINAL:
        raise ChangeRefused("ORDER_FINAL", f"order {order_id} is {order['status']}")
    rooms, _ = await change_rooms.rooms(conn, order_id)
    if lines is None:
        if any(x.shipped for x in rooms):
            raise ChangeRefused("LINE_SHIPPED", "units have shipped: cancel the others by line")
        # Refunded units not shipped go too (no supplier keeps them); the money is that of
        # the units not refunded yet.
        parts = [(x.sku, x.hold_supplier, x.unshipped) for x in rooms if x.unshipped > 0]
        paid = [(x.sku, x.hold_supplier, x.cancellable) for x in rooms]
    else:
        parts = paid = change_rooms.parts(rooms, lines, cancel=True)
    if not parts:
        raise ChangeRefused("NOTHING_TO_CANCEL", f"order {order_id} has no unit left to cancel")
    return await _record(
        conn,
        order,
        "cancel",
        parts,
        change_rooms.value(rooms, paid),
        whole=lines is None,
        reason=reason,
        source=source,
        key=key,
    )


# --- the saga's side -----------------------------------------------------------------------------

_PAUSED = "SELECT paused_step, paused_due_at FROM orders WHERE order_id = $1"


def _lines_doc(raw: str) -> list[dict[str, Any]]:
    return [{"sku": s, "hold_supplier": h, "qty": q} for s, h, q in json.loads(raw)]


def _change(r: Any) -> Change:
    found = (r["id"], r["kind"], r["whole"], _lines_doc(r["lines"]), r["amount_minor"])
    return Change(*found, r["reason"], r["source"])


async def pending(
    conn: Connection, order_id: str
) -> tuple[list[Change], tuple[str | None, dt.datetime | None]]:
    """The order's pending changes in order, and the step order.change displaced."""
    found = [_change(r) for r in await conn.fetch(PENDING, order_id)]
    paused = await conn.fetchrow(_PAUSED, order_id)
    return found, (paused["paused_step"], paused["paused_due_at"])


_OUTCOME = """
UPDATE order_changes SET status = $2, outcome = $3, applied_at = now()
WHERE id = $1 AND status = 'pending'
"""


async def write_outcomes(conn: Connection, changes: Sequence[Change]) -> None:
    """The changes a step carried out or refused, in its outcome's transaction."""
    rows = [(c.id, c.status, c.outcome[:2000]) for c in changes if c.status != "pending"]
    if rows:
        await conn.executemany(_OUTCOME, rows)


_ANY_PENDING = "SELECT count(*) > 0 FROM order_changes WHERE order_id = $1 AND status = 'pending'"
_PAUSE = "UPDATE orders SET paused_step = $2, paused_due_at = $3 WHERE order_id = $1"


async def divert(
    conn: Connection, order_id: str, next_step: str | None, next_at: dt.datetime | None
) -> tuple[str | None, dt.datetime | None]:
    """After a step's outcome: a change recorded while it ran is carried out next, and the step
    that was due is kept to resume after it. (next_step, next_at) as they now are."""
    if not await conn.fetchval(_ANY_PENDING, order_id):
        return next_step, next_at
    await conn.execute(_PAUSE, order_id, next_step, next_at)
    await conn.execute(REARM, order_id, STEP)
    return STEP, None
