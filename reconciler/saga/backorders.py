"""backorder.apply: carries out the retailer's decisions, recorded by
POST /v1/admin/backorders/{id}/decision (wait, ship from a secondary supplier, or cancel)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from flashsale.reconciler.adapters import PartyUnavailable
from flashsale.reconciler.saga import dates
from flashsale.reconciler.saga.allocate import ship_from
from flashsale.reconciler.saga.compensation import (
    cancel_allocations,
    give_back,
    gone,
    kept_out,
    void,
)
from flashsale.reconciler.saga.parties import Parties, both
from flashsale.store.saga.model import Backorder, Decision, Line, Notice, Order

WAIT_REASON = "the retailer waits for the supplier's stock"


async def _secondary(p: Parties, o: Order, b: Backorder) -> tuple[str, dict[str, Any] | None]:
    """Ships the line from the supplier the retailer named; (note, the refusal if it refused)."""
    assert b.decision is not None
    line = next(x for x in o.lines if x.ref == b.ref)
    supplier_id, cost = b.decision["supplier_id"], int(b.decision["cost_minor"])
    answer = await p.suppliers.allocate(
        supplier_id, o.key(b.id, supplier_id), b.sku, b.qty, p.lock_s
    )
    if answer.ok:
        ship_from(line, supplier_id, cost, answer.ref)
        b.status = "secondary"
        change = (line.margin_minor or 0) - line.planned_margin_minor
        return f"{b.sku} ships from {supplier_id} (margin {change:+d})", None
    b.status, b.decision, line.status = "open", None, "backordered"
    refusal = {"backorder_id": b.id, "sku": b.sku, "supplier_id": supplier_id, "code": answer.code}
    return f"{b.sku}: {supplier_id} refused ({answer.code}), decide again", refusal


async def apply_backorders(p: Parties, o: Order) -> Decision:
    decided = [b for b in o.backorders if b.status == "decided" and b.decision]
    cancels = any(b.decision and b.decision["decision"] == "cancel" for b in decided)
    if cancels and not _shipped_any(o):
        return await _cancel_order(p, o)
    notes: list[str] = []
    refused: list[dict[str, Any]] = []
    waits: list[tuple[Backorder, dt.date | None, str]] = []  # (backorder, its date before, why)
    paid = Paid(o.refunded_minor)
    for b in decided:
        assert b.decision is not None
        line = next(x for x in o.lines if x.ref == b.ref)
        if line.unshipped_qty == 0:  # every unit cancelled while the decision waited its turn
            b.status = "cancelled"
            notes.append(f"{b.sku}: nothing left to ship")
            continue
        b.qty = line.unshipped_qty  # the units still to ship, should a cancel have cut the line
        if b.decision["decision"] == "cancel":
            notes.append(await _cancel_line(p, o, b, line, paid))
            continue
        if b.decision["decision"] == "wait":
            b.status, line.status = "waiting", "waiting"
            previous = b.promised_date
            b.promised_date = dt.date.fromisoformat(b.decision["promised_date"])
            notes.append(f"{b.sku} waits until {b.promised_date.isoformat()}")
            waits.append((b, previous, WAIT_REASON))
            continue
        note, refusal = await _secondary(p, o, b)
        notes.append(note)
        if refusal is not None:
            refused.append(refusal)
    open_left = any(b.status == "open" for b in o.backorders)
    notices = [Notice("retailer", "backorder.decision_failed", {"refused": refused})]
    notices = notices if refused else []
    if waits:  # the customer is told the promised date
        notices.append(dates.told(waits))
    return Decision(
        "applied",
        None,
        "retailer decided: " + "; ".join(notes),
        None if open_left else "payment.capture",
        order={"refunded_minor": paid.refunded_minor},
        lines=o.lines,
        backorders=decided,
        notices=notices + paid.notices,
        history=paid.history,
        dates=[dates.promised(b, why) for b, _, why in waits],
    )


def _shipped_any(o: Order) -> bool:
    """Some unit of the order left its supplier: a backorder's cancel then cancels its own
    line's unshipped units only, never the order (shipped units stay shipped and charged)."""
    return any(gone(o, x) or x.shipped_qty for x in o.lines)


@dataclass(slots=True)
class Paid:
    """What the per-line cancels paid back, for the Decision."""

    refunded_minor: int
    history: list[tuple[str, str]] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)


async def _cancel_line(p: Parties, o: Order, b: Backorder, line: Line, paid: Paid) -> str:
    """The backordered line's unshipped units cancelled, their price paid back if captured.
    No unit goes back on sale: no supplier could ship them (a compensation writes them off)."""
    qty = line.unshipped_qty
    line.cancelled_qty += qty
    amount = min(qty * line.price_minor, o.captured_minor - paid.refunded_minor)
    if amount > 0:
        assert o.authorization_id is not None, "a capture without an authorization"
        answer = await p.payment.refund(o.key("refund", b.id), o.authorization_id, amount)
        if not answer.ok:
            raise PartyUnavailable(f"refund {o.order_id}: {answer.code} {answer.detail}")
        paid.refunded_minor += amount
        line.refunded_minor += amount
        paid.history.append(("payment.refund", f"backorder {b.id}: refunded {amount}"))
    # What is left of the line shipped: it counts as shipped (no lock is left to confirm).
    line.status, line.confirmed = ("allocated", True) if line.live_qty else ("cancelled", False)
    b.status = "cancelled"
    lines = [{"sku": line.sku, "qty": qty}]
    paid.notices += both("order.cancelled", lines=lines, whole=False)
    return f"{b.sku}: {qty} unit(s) cancelled, {max(amount, 0)} refunded"


async def _cancel_order(p: Parties, o: Order) -> Decision:
    cut = kept_out(o)
    cancelled = await cancel_allocations(p, o)
    if o.captured_minor:  # a captured authorisation is never voided: what is owed is paid back
        assert o.authorization_id is not None
        amount = o.captured_minor - o.refunded_minor
        if amount > 0:
            answer = await p.payment.refund(o.key("refund"), o.authorization_id, amount)
            if not answer.ok:
                raise PartyUnavailable(f"refund {o.order_id}: {answer.code} {answer.detail}")
        status, money = "REFUNDED", {"refunded_minor": max(o.captured_minor, o.refunded_minor)}
        paid = ("payment.refund", f"refunded {amount}")
    else:
        status, money = "CANCELLED", {}
        paid = ("payment.void", await void(p, o))
    returned = await give_back(p, o, "backorder cancelled by the retailer", cut)
    for b in o.backorders:
        b.status = "cancelled"
    return Decision(
        "cancelled",
        status,
        "retailer cancelled the backorder",
        order=money,
        lines=cancelled,
        backorders=o.backorders,
        history=[paid, ("supplier.cancel", f"{len(cancelled)} lines"), ("stock.release", returned)],
        notices=both("order.cancelled", refunded_minor=money.get("refunded_minor", 0)),
    )
