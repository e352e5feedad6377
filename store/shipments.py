"""Shipments a supplier reports (POST /v1/shipments/{supplier}) and what they do to an order:
shipped units per line, the order's status once the saga parked it for them, and a customer
notice per shipment; also the supplier flag that says whose lines wait for shipments.

A shipment is applied in one transaction that locks the order row first, as the saga's write
does, so concurrent shipments of one order (and a saga step writing) take turns."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from flashsale.store.db import Connection
from flashsale.store.refused import Refused
from flashsale.store.saga.claims import TRANSITION

# Orders that will never ship: a shipment of one is refused (409 ORDER_CLOSED).
CLOSED = frozenset({"PAYMENT_FAILED", "CANCELLED", "REFUNDED"})
# An order the saga parked for its shipments (after notify) moves with them.
AWAITING = frozenset({"CONFIRMED", "PARTIALLY_FULFILLED"})
_RANK = {"CONFIRMED": 0, "PARTIALLY_FULFILLED": 1, "FULFILLED": 2}


class ShipmentRefused(Refused):
    """A shipment that cannot be applied; `code` says why (NOT_FOUND, ORDER_CLOSED,
    SAGA_STEP_DEAD, LINE_NOT_CONFIRMED, UNKNOWN_SKU, SHIPMENT_EXCEEDS_ORDER, SHIPMENT_ID_REUSED).
    Nothing was written."""


@dataclass(frozen=True, slots=True)
class Shipment:
    supplier_id: str
    shipment_id: str
    order_id: str
    carrier: str
    tracking_id: str
    shipped_at: dt.datetime
    lines: tuple[tuple[str, int], ...]  # (sku, qty), each sku once


@dataclass(frozen=True, slots=True)
class Receipt:
    shipment_id: str
    order_id: str
    duplicate: bool
    status: str = ""  # the order's after the shipment
    lines: tuple[tuple[str, int], ...] = ()


# --- the supplier flag -------------------------------------------------------------------------


# Orders parked for shipments with a line of the supplier, locked in order (no deadlock).
_PARKED_WITH = """
SELECT o.order_id, o.status FROM orders o
WHERE o.status = ANY($2::text[]) AND o.next_step IS NULL AND o.dead_step IS NULL
  AND EXISTS (SELECT 1 FROM order_allocations a
              WHERE a.order_id = o.order_id AND a.supplier_id = $1 AND a.status = 'allocated')
ORDER BY o.order_id FOR UPDATE OF o
"""


async def set_reports_shipments(conn: Connection, supplier_id: str, flag: bool) -> list[str]:
    """In the caller's transaction. Cleared, the supplier's lines count as shipped at once: every
    order parked for shipments with one of its lines is settled now (its new status, a
    transition). The orders that moved."""
    was = await reports_shipments(conn, supplier_id)
    await conn.execute(
        "UPDATE supplier_feeds SET reports_shipments = $2 WHERE supplier_id = $1",
        supplier_id,
        flag,
    )
    if flag or not was:
        return []
    moved = []
    cause = f"supplier {supplier_id} no longer reports shipments: its lines count as shipped"
    for r in await conn.fetch(_PARKED_WITH, supplier_id, sorted(AWAITING)):
        if await settle(conn, r["order_id"], cause) != r["status"]:
            moved.append(str(r["order_id"]))
    return moved


async def reports_shipments(conn: Connection, supplier_id: str) -> bool:
    found = await conn.fetchval(
        "SELECT reports_shipments FROM supplier_feeds WHERE supplier_id = $1", supplier_id
    )
    return bool(found)


async def reporting(conn: Connection, supplier_ids: Iterable[str]) -> frozenset[str]:
    """Those of these suppliers whose lines count as shipped only when they report it."""
    rows = await conn.fetch(
        "SELECT supplier_id FROM supplier_feeds WHERE reports_shipments "
        "AND supplier_id = ANY($1::text[])",
        sorted(set(supplier_ids)),
    )
    return frozenset(r["supplier_id"] for r in rows)


# --- the order's status ------------------------------------------------------------------------


def status_of(lines: Iterable[tuple[str, int, int, bool]]) -> str:
    """FULFILLED when every live unit counts as shipped, PARTIALLY_FULFILLED when some do,
    else CONFIRMED. A line is (status, live qty, shipped qty, its supplier reports shipments);
    a confirmed line of a supplier that does not report them counts as shipped whole."""
    live = shipped = 0
    for status, qty, shipped_qty, reports in lines:
        if status == "cancelled" or qty <= 0:
            continue
        live += qty
        if status == "allocated":
            shipped += shipped_qty if reports else qty
    if live and shipped >= live:
        return "FULFILLED"
    return "PARTIALLY_FULFILLED" if shipped else "CONFIRMED"


_PROGRESS = """
SELECT a.sku, a.qty, a.status, a.qty - a.cancelled_qty AS live_qty, a.shipped_qty,
       a.supplier_id, coalesce(f.reports_shipments, false) AS reports
FROM order_allocations a LEFT JOIN supplier_feeds f ON f.supplier_id = a.supplier_id
WHERE a.order_id = $1 ORDER BY a.sku, a.hold_supplier
"""
_ORDER = """
SELECT status, next_step, dead_step, sale_id, customer_id, request_id FROM orders
WHERE order_id = $1
"""
_SET_STATUS = "UPDATE orders SET status = $2, updated_at = now() WHERE order_id = $1"


async def settle(conn: Connection, order_id: str, cause: str) -> str:
    """In the caller's transaction, which holds the order row: an order parked for shipments
    takes the status its lines' shipments give it (a transition with `cause`, and the retailer
    told once when it is FULFILLED). A dead-lettered order waits for its retry. The status it
    has after."""
    o = await conn.fetchrow(_ORDER, order_id)
    if o["status"] not in AWAITING or o["next_step"] is not None or o["dead_step"] is not None:
        return str(o["status"])
    rows = await conn.fetch(_PROGRESS, order_id)
    status = status_of((r["status"], r["live_qty"], r["shipped_qty"], r["reports"]) for r in rows)
    if _RANK[status] <= _RANK[o["status"]]:  # shipments only ever move an order forward
        return str(o["status"])
    await conn.execute(_SET_STATUS, order_id, status)
    await conn.execute(TRANSITION, order_id, o["status"], status, cause)
    if status == "FULFILLED":
        lines = [
            {"sku": r["sku"], "qty": r["live_qty"], "supplier_id": r["supplier_id"]} for r in rows
        ]
        await notice(conn, order_id, o, "retailer", "order.fulfilled", status, {"lines": lines})
    return status


_NOTICE = """
INSERT INTO outbox (topic, recipient, payload, dedupe_key, order_id, request_id)
VALUES ($1, $2, $3::jsonb, $4, $5, $6)
ON CONFLICT (dedupe_key) DO NOTHING
"""


async def notice(
    conn: Connection,
    order_id: str,
    o: Any,
    recipient: str,
    topic: str,
    status: str,
    details: dict[str, Any],
    dedupe: str = "",
) -> None:
    """One outbox row, as the saga writes them (store/saga/orders.py); `dedupe` defaults to one
    per order, topic and recipient."""
    payload = {
        "topic": topic,
        "order_id": order_id,
        "sale_id": o["sale_id"],
        "customer_id": o["customer_id"],
        "status": status,
        **details,
    }
    key = dedupe or f"{order_id}:shipments:{topic}:{recipient}"
    await conn.execute(
        _NOTICE, topic, recipient, json.dumps(payload), key, order_id, o["request_id"]
    )


# --- a shipment --------------------------------------------------------------------------------

_LOCK_ORDER = _ORDER.replace("WHERE order_id = $1", "WHERE order_id = $1 FOR UPDATE")
_SEEN = """
SELECT s.order_id, s.carrier, s.tracking_id, s.shipped_at,
       array_agg(l.sku ORDER BY l.sku) AS skus, array_agg(l.qty ORDER BY l.sku) AS qtys
FROM shipments s LEFT JOIN shipment_lines l USING (supplier_id, shipment_id)
WHERE s.supplier_id = $1 AND s.shipment_id = $2
GROUP BY s.supplier_id, s.shipment_id
"""
# Only units the supplier confirmed (payment.capture makes a line firm) can ship; units
# returned count as gone (shipped ones are in shipped_qty already, hence the greatest), and so
# do units a pending cancel will free (order.change may be talking to the supplier right now;
# the order row's lock orders this read after the cancel was recorded).
_SHIPPABLE = """
SELECT sku, hold_supplier, confirmed,
       qty - cancelled_qty - greatest(shipped_qty, coalesce((
           SELECT sum(r.qty) FROM return_lines r
           WHERE r.order_id = a.order_id AND r.sku = a.sku
             AND r.hold_supplier = a.hold_supplier), 0)) - coalesce((
           SELECT sum((part ->> 2)::bigint)
           FROM order_changes c, jsonb_array_elements(c.lines) part
           WHERE c.order_id = a.order_id AND c.kind = 'cancel' AND c.status = 'pending'
             AND part ->> 0 = a.sku AND part ->> 1 = a.hold_supplier), 0) AS left_qty
FROM order_allocations a
WHERE order_id = $1 AND supplier_id = $2 AND status = 'allocated'
ORDER BY sku, hold_supplier FOR UPDATE OF a
"""
_INSERT = """
INSERT INTO shipments (supplier_id, shipment_id, order_id, carrier, tracking_id, shipped_at)
VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING true
"""
_INSERT_LINE = """
INSERT INTO shipment_lines (supplier_id, shipment_id, order_id, sku, hold_supplier, qty)
VALUES ($1, $2, $3, $4, $5, $6)
"""
_SHIP = """
UPDATE order_allocations SET shipped_qty = shipped_qty + $4, updated_at = now()
WHERE order_id = $1 AND sku = $2 AND hold_supplier = $3
"""


def _split(
    shippable: Sequence[Any], lines: Sequence[tuple[str, int]]
) -> list[tuple[str, str, int]]:
    """Each (sku, qty) over the order lines of that sku the supplier has left to ship:
    [(sku, hold_supplier, qty)]. Refuses a sku it ships none of, and more than is left."""
    plan: list[tuple[str, str, int]] = []
    for sku, qty in lines:
        rows = [r for r in shippable if r["sku"] == sku]
        if not rows:
            raise ShipmentRefused("UNKNOWN_SKU", f"the order has no {sku} from this supplier")
        left = sum(r["left_qty"] for r in rows if r["confirmed"])
        if qty > left and not all(r["confirmed"] for r in rows):
            raise ShipmentRefused(
                "LINE_NOT_CONFIRMED", f"{sku} is not confirmed yet: send the shipment again later"
            )
        rows = [r for r in rows if r["confirmed"]]
        if qty > left:
            raise ShipmentRefused(
                "SHIPMENT_EXCEEDS_ORDER", f"{qty} x {sku} shipped, {left} left to ship"
            )
        for r in rows:
            take = min(qty, r["left_qty"])
            if take > 0:
                plan.append((sku, r["hold_supplier"], take))
                qty -= take
    return plan


async def record(conn: Connection, s: Shipment) -> Receipt:
    """The shipment in one transaction: its rows, the lines' shipped units, a transition and a
    customer notice (order.shipped). A shipment id the supplier sent before is a duplicate."""
    async with conn.transaction():
        o = await conn.fetchrow(_LOCK_ORDER, s.order_id)
        if o is None:
            raise ShipmentRefused("NOT_FOUND", f"no order {s.order_id}")
        seen = await conn.fetchrow(_SEEN, s.supplier_id, s.shipment_id)
        if seen is not None:
            return _replayed(s, seen)
        if o["status"] in CLOSED:
            raise ShipmentRefused("ORDER_CLOSED", f"order {s.order_id} is {o['status']}")
        if o["dead_step"] is not None:
            raise ShipmentRefused(
                "SAGA_STEP_DEAD",
                f"order {s.order_id}: step {o['dead_step']} is dead-lettered; "
                "send the shipment again once an operator has retried it",
            )
        shippable = await conn.fetch(_SHIPPABLE, s.order_id, s.supplier_id)
        if not shippable:
            raise ShipmentRefused(
                "NOT_FOUND", f"order {s.order_id} has no line shipped by {s.supplier_id}"
            )
        plan = _split(shippable, s.lines)
        fresh = await conn.fetchval(
            _INSERT,
            s.supplier_id,
            s.shipment_id,
            s.order_id,
            s.carrier,
            s.tracking_id,
            s.shipped_at,
        )
        if not fresh:  # the same id sent for another order at the same time
            return _replayed(s, await conn.fetchrow(_SEEN, s.supplier_id, s.shipment_id))
        ids = (s.supplier_id, s.shipment_id, s.order_id)
        await conn.executemany(_INSERT_LINE, [(*ids, *p) for p in plan])
        await conn.executemany(_SHIP, [(s.order_id, *p) for p in plan])
        return Receipt(s.shipment_id, s.order_id, False, await _applied(conn, s, o), s.lines)


def _replayed(s: Shipment, seen: Any) -> Receipt:
    """A shipment id the supplier used before: a duplicate if it is the same shipment, refused
    (SHIPMENT_ID_REUSED) if its order, carrier, tracking id, time or lines differ."""
    stored = (
        seen["order_id"],
        seen["carrier"],
        seen["tracking_id"],
        seen["shipped_at"],
        _summed(zip(seen["skus"], seen["qtys"], strict=True)),
    )
    sent = (s.order_id, s.carrier, s.tracking_id, s.shipped_at, _summed(s.lines))
    if stored != sent:
        raise ShipmentRefused(
            "SHIPMENT_ID_REUSED",
            f"shipment {s.shipment_id} was already sent with other contents "
            f"(order {seen['order_id']}); a new shipment needs a new id",
        )
    return Receipt(s.shipment_id, s.order_id, True)


def _summed(lines: Iterable[tuple[str | None, int | None]]) -> tuple[tuple[str, int], ...]:
    """(sku, qty) summed per sku (a shipment's line can be split over order lines)."""
    total: dict[str, int] = {}
    for sku, qty in lines:
        if sku is not None and qty is not None:
            total[sku] = total.get(sku, 0) + qty
    return tuple(sorted(total.items()))


async def _applied(conn: Connection, s: Shipment, o: Any) -> str:
    """The status the shipment leaves, its transition (a note when the status stays) and the
    customer's notice with carrier, tracking id and lines."""
    units = ", ".join(f"{qty} x {sku}" for sku, qty in s.lines)
    cause = f"shipment {s.shipment_id} from {s.supplier_id} ({s.carrier} {s.tracking_id}): {units}"
    status = await settle(conn, s.order_id, cause)
    if status == o["status"]:
        await conn.execute(TRANSITION, s.order_id, status, status, cause)
    details = {
        "shipment_id": s.shipment_id,
        "carrier": s.carrier,
        "tracking_id": s.tracking_id,
        "shipped_at": s.shipped_at.isoformat().replace("+00:00", "Z"),
        "lines": [{"sku": sku, "qty": qty} for sku, qty in s.lines],
    }
    dedupe = f"{s.order_id}:shipment:{s.supplier_id}:{s.shipment_id}:customer"
    await notice(conn, s.order_id, o, "customer", "order.shipped", status, details, dedupe)
    return status


# --- views -------------------------------------------------------------------------------------

_OF_ORDER = """
SELECT s.supplier_id, s.shipment_id, s.carrier, s.tracking_id, s.shipped_at, s.received_at,
       coalesce(json_agg(json_build_object('sku', l.sku, 'qty', l.qty) ORDER BY l.sku)
                FILTER (WHERE l.sku IS NOT NULL), '[]') AS lines
FROM shipments s LEFT JOIN shipment_lines l USING (supplier_id, shipment_id)
WHERE s.order_id = $1
GROUP BY s.supplier_id, s.shipment_id
ORDER BY s.received_at, s.shipment_id
"""


async def of_order(conn: Connection, order_id: str) -> list[Any]:
    """The order's shipments, oldest first, each with its lines (sku, qty; json text)."""
    return list(await conn.fetch(_OF_ORDER, order_id))
