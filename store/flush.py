"""One batch of stream events written to PostgreSQL in one transaction, idempotently.

Ledger sign convention (stock_movements.qty): a row's qty is added to the stock_levels column
its kind moves, so the ledger sums to the stock levels per (sale, sku, supplier):
    sum(load) = loaded,  sum(adjust) = adjusted,  sum(confirm) + sum(compensate) = sold
with confirm rows positive (units sold) and compensate rows negative (units given back).
release and expire rows carry the units a hold gave back to sale, positive; they move
`reserved`, which only Redis keeps, so they belong to no column and to none of the sums.

Every write is keyed (orders by hold id, lines by hold/sku/supplier, ledger rows by their
UNIQUE (kind, ref, sku, supplier)) and ON CONFLICT DO NOTHING; stock levels move only by the
ledger rows this transaction really inserted. So replaying a committed batch changes nothing.
The holds journal (store/holds.py) is written in the same transaction, and only moves forward.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flashsale.engine.errors import FlashsaleError
from flashsale.engine.events import AdjustEvent, Event, HoldEvent
from flashsale.store.db import Connection, columns
from flashsale.store.holds import record_holds

LEDGER_KIND = {
    "confirmed": "confirm",
    "released": "release",
    "expired": "expire",
    "compensated": "compensate",
}

Key = tuple[str, str]  # (sku, supplier_id)
Move = tuple[str, str, str, int, str, str, int]  # sku, supplier, kind, qty, ref, reason, at_ms
Booked = tuple[str, str, str, int, str]  # sku, supplier, kind, qty, ref of an inserted row


class FlushRefused(FlashsaleError):
    """The batch names stock that PostgreSQL does not know; retried entry by entry."""


@dataclass(frozen=True, slots=True)
class FlushResult:
    orders: int  # orders inserted now (a replayed confirmation inserts none)
    movements: int  # ledger rows inserted now
    orphans: list[tuple[str, str]]  # (entry id, why): compensations of orders never flushed


def is_data_error(exc: BaseException) -> bool:
    """True when PostgreSQL refused the batch's content (SQLSTATE class 22 data exception or 23
    integrity violation), as opposed to being unreachable or busy: retrying the same batch
    cannot help, so it is split to find the entry at fault."""
    if isinstance(exc, FlushRefused):
        return True
    state = getattr(exc, "sqlstate", None)
    return isinstance(state, str) and state[:2] in ("22", "23")


# --- orders --------------------------------------------------------------------------------------

_CATALOG = """
SELECT m.sku, m.supplier_id, k.price_minor, m.cost_minor
FROM supplier_skus m JOIN skus k USING (sale_id, sku)
WHERE m.sale_id = $1
"""

_INSERT_ORDERS = """
INSERT INTO orders (order_id, sale_id, customer_id, status, total_minor, event_id, confirmed_at,
                    payment_ref, next_step, step_due_at, request_id)
SELECT o.order_id, $1, o.customer_id, 'PENDING', o.total_minor, o.event_id,
       'epoch'::timestamptz + o.at_ms * interval '1 millisecond', o.payment_ref,
       'payment.authorize', now(), o.request_id
FROM unnest($2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::text[],
            $8::text[])
     AS o(order_id, customer_id, total_minor, event_id, at_ms, payment_ref, request_id)
ON CONFLICT (order_id) DO NOTHING
RETURNING order_id
"""

_INSERT_LINES = """
INSERT INTO order_lines (order_id, sku, supplier_id, qty, price_minor, cost_minor)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[])
ON CONFLICT (order_id, sku, supplier_id) DO NOTHING
"""

# The saga's view of the same lines: who ships them starts out as nobody (reconciler/saga/).
_INSERT_ALLOCATIONS = """
INSERT INTO order_allocations (order_id, sku, hold_supplier, qty, price_minor,
                               planned_margin_minor)
SELECT l.order_id, l.sku, l.supplier_id, l.qty, l.price_minor,
       l.qty * (l.price_minor - l.cost_minor)
FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[])
     AS l(order_id, sku, supplier_id, qty, price_minor, cost_minor)
ON CONFLICT (order_id, sku, hold_supplier) DO NOTHING
"""


async def _catalog(conn: Connection, sale_id: str) -> dict[Key, tuple[int, int]]:
    """(sku, supplier) -> (unit price, unit cost), read inside the batch's transaction."""
    rows = await conn.fetch(_CATALOG, sale_id)
    return {(r["sku"], r["supplier_id"]): (r["price_minor"], r["cost_minor"]) for r in rows}


def _priced(event: HoldEvent, catalog: dict[Key, tuple[int, int]]) -> list[tuple[Any, ...]]:
    rows = []
    for a in event.lines:
        if (a.sku, a.supplier) not in catalog:
            raise FlushRefused(f"hold {event.hold_id}: no sku {a.sku} at supplier {a.supplier}")
        price, cost = catalog[(a.sku, a.supplier)]
        rows.append((event.hold_id, a.sku, a.supplier, a.qty, price, cost))
    return rows


async def _insert_orders(conn: Connection, sale_id: str, confirmed: list[HoldEvent]) -> set[str]:
    """Orders and their lines for confirmations PostgreSQL has not seen; the new order ids."""
    catalog = await _catalog(conn, sale_id)
    lines = {e.hold_id: _priced(e, catalog) for e in confirmed}
    orders = [
        (
            e.hold_id,
            e.customer_id,
            sum(row[3] * row[4] for row in lines[e.hold_id]),
            e.entry_id,
            e.at_ms,
            e.payment,
            e.request_id,
        )
        for e in confirmed
    ]
    inserted = await conn.fetch(_INSERT_ORDERS, sale_id, *columns(orders, 7))
    new = {str(r["order_id"]) for r in inserted}
    if len(new) < len(confirmed):
        await _check_replays(conn, sale_id, [e.hold_id for e in confirmed if e.hold_id not in new])
    new_lines = [row for hold_id in sorted(new) for row in lines[hold_id]]
    if new_lines:
        await conn.execute(_INSERT_LINES, *columns(new_lines, 6))
        await conn.execute(_INSERT_ALLOCATIONS, *columns(new_lines, 6))
    return new


async def _check_replays(conn: Connection, sale_id: str, holds: list[str]) -> None:
    """A confirmation that inserted nothing must be a replay of this sale's order: an order of
    another sale under the same id would otherwise swallow it without a trace."""
    clash = await conn.fetchval(
        "SELECT order_id FROM orders WHERE order_id = ANY($1::text[]) AND sale_id <> $2 LIMIT 1",
        holds,
        sale_id,
    )
    if clash is not None:
        raise FlushRefused(f"order {clash} already belongs to another sale")


async def _known_orders(conn: Connection, sale_id: str, holds: list[str]) -> set[str]:
    rows = await conn.fetch(
        "SELECT order_id FROM orders WHERE sale_id = $1 AND order_id = ANY($2::text[])",
        sale_id,
        holds,
    )
    return {str(r["order_id"]) for r in rows}


# --- ledger and stock levels ----------------------------------------------------------------------

_INSERT_MOVEMENTS = """
INSERT INTO stock_movements (sale_id, sku, supplier_id, kind, qty, ref, reason, at)
SELECT $1, m.sku, m.supplier_id, m.kind, m.qty, m.ref, m.reason,
       'epoch'::timestamptz + m.at_ms * interval '1 millisecond'
FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::bigint[])
     AS m(sku, supplier_id, kind, qty, ref, reason, at_ms)
ON CONFLICT (kind, ref, sku, supplier_id) DO NOTHING
RETURNING sku, supplier_id, kind, qty, ref
"""

_UPDATE_LEVELS = """
UPDATE stock_levels s
SET sold = s.sold + d.sold, adjusted = s.adjusted + d.adjusted, updated_at = now()
FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[])
     AS d(sku, supplier_id, sold, adjusted)
WHERE s.sale_id = $1 AND s.sku = d.sku AND s.supplier_id = d.supplier_id
"""


def _adjust_reason(e: AdjustEvent) -> str:
    """The requested change and the shortfall are kept in the reason: the stream entry is
    deleted once flushed, and a cut that fell short is what the saga reroutes."""
    if e.applied == e.delta and not e.shortfall:
        return e.reason
    return f"{e.reason} [requested {e.delta}, shortfall {e.shortfall}]".lstrip()


def adjust_ref(sale_id: str, entry_id: str) -> str:
    """Entry ids are unique per stream only, and the ledger's key has no sale: prefix the sale,
    as the store does for load rows (`<sale>:v<n>`)."""
    return f"{sale_id}:{entry_id}"


def movements(sale_id: str, events: Sequence[Event], known_orders: set[str]) -> list[Move]:
    """Ledger rows for the events, in stream order, by the sign convention of the docstring.
    A compensation is only booked against an order PostgreSQL has (`known_orders`). Hold ids
    are random and never reused, so they key hold rows across sales."""
    rows: list[Move] = []
    for e in events:
        if isinstance(e, AdjustEvent):
            ref, reason = adjust_ref(sale_id, e.entry_id), _adjust_reason(e)
            rows.append((e.sku, e.supplier_id, "adjust", e.applied, ref, reason, e.at_ms))
            continue
        if e.kind not in LEDGER_KIND:  # reserved, extended: no units move between columns
            continue
        if e.kind == "compensated" and e.hold_id not in known_orders:
            continue
        sign = -1 if e.kind == "compensated" else 1
        kind = LEDGER_KIND[e.kind]
        for a in e.lines:
            rows.append((a.sku, a.supplier, kind, sign * a.qty, e.hold_id, e.reason, e.at_ms))
    return rows


def level_deltas(inserted: Sequence[Booked]) -> dict[Key, tuple[int, int]]:
    """(sku, supplier) -> (sold delta, adjusted delta) from the ledger rows just inserted."""
    sold: dict[Key, int] = defaultdict(int)
    adjusted: dict[Key, int] = defaultdict(int)
    for sku, supplier, kind, qty, _ in inserted:
        if kind in ("confirm", "compensate"):
            sold[(sku, supplier)] += qty
        elif kind == "adjust":
            adjusted[(sku, supplier)] += qty
    return {key: (sold[key], adjusted[key]) for key in sorted(sold.keys() | adjusted.keys())}


async def _book(conn: Connection, sale_id: str, rows: list[Move]) -> list[Booked]:
    """Insert the ledger rows, move the stock levels by the ones that were new; those rows."""
    found = await conn.fetch(_INSERT_MOVEMENTS, sale_id, *columns(rows, 7))
    inserted = [(r["sku"], r["supplier_id"], r["kind"], r["qty"], r["ref"]) for r in found]
    deltas = [(*key, s, a) for key, (s, a) in level_deltas(inserted).items() if s or a]
    if deltas:
        done = await conn.execute(_UPDATE_LEVELS, sale_id, *columns(deltas, 4))
        if done != f"UPDATE {len(deltas)}":
            raise FlushRefused(f"sale {sale_id}: a stock level of {deltas} is missing")
    return inserted


# --- the batch ----------------------------------------------------------------------------------


async def flush(conn: Connection, sale_id: str, events: Sequence[Event]) -> FlushResult:
    """Apply the events (in stream order) in one transaction."""
    confirmed = [e for e in events if isinstance(e, HoldEvent) and e.kind == "confirmed"]
    compensated = [e for e in events if isinstance(e, HoldEvent) and e.kind == "compensated"]
    async with conn.transaction():
        new_orders = await _insert_orders(conn, sale_id, confirmed) if confirmed else set()
        # Confirmations come first in the transaction, so one in this batch counts as known.
        holds = [e.hold_id for e in compensated]
        known = await _known_orders(conn, sale_id, holds) if holds else set()
        rows = movements(sale_id, events, known)
        inserted = await _book(conn, sale_id, rows) if rows else []
        await record_holds(conn, sale_id, events)
    orphans = [
        (e.entry_id, f"compensation of hold {e.hold_id}, which has no order")
        for e in compensated
        if e.hold_id not in known
    ]
    return FlushResult(len(new_orders), len(inserted), orphans)
