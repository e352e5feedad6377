"""payment.capture: charge what ships or waits (once), then make the suppliers' locks firm."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flashsale.reconciler.adapters import PartyUnavailable
from flashsale.reconciler.saga.compensation import (
    cancel_allocations,
    give_back,
    kept_out,
    void,
)
from flashsale.reconciler.saga.parties import Parties, both, now
from flashsale.store.saga.model import Decision, Line, Order


async def _confirm_allocations(p: Parties, o: Order) -> list[Line]:
    """Each allocated, unconfirmed line made firm at its supplier; a lock that lapsed there sends
    the line back to be allocated again. The lines changed."""
    changed = []
    for line in o.lines:
        if line.status == "allocated" and not line.confirmed:
            assert line.supplier_id is not None and line.allocation_ref is not None
            key = o.key(line.sku, line.hold_supplier, line.allocation_ref)
            answer = await p.suppliers.confirm(line.supplier_id, key, line.allocation_ref)
            if answer.ok:
                line.confirmed = True
            elif answer.code == "LOCK_EXPIRED":  # lapsed at the supplier: allocate it again
                line.status = "pending"
            else:  # anything else needs a look, not a second allocation
                raise PartyUnavailable(
                    f"confirm {line.allocation_ref} at {line.supplier_id}: {answer.code}"
                )
            changed.append(line)
    return changed


async def capture(p: Parties, o: Order) -> Decision:
    """Charges the lines that ship or wait (once: a later round only confirms new allocations),
    then makes the suppliers' locks firm."""
    live = [line for line in o.lines if line.status in ("allocated", "waiting")]
    amount = sum(line.amount_minor for line in live)
    captured: dict[str, Any] = {}
    if not o.captured_minor and amount:
        assert o.authorization_id is not None, "capture without an authorization"
        answer = await p.payment.capture(o.key(), o.authorization_id, amount)
        if not answer.ok:
            return await _refused(p, o, f"capture refused: {answer.detail or answer.code}")
        captured = {"captured_minor": amount}
    changed = await _confirm_allocations(p, o)
    waits = any(line.status == "waiting" for line in o.lines)
    if any(line.status == "pending" for line in o.lines):
        return Decision(
            "captured, allocation lapsed",
            "CONFIRMED" if captured and not waits else None,
            "a supplier's lock lapsed before it was confirmed; allocating again",
            "supplier.allocate",
            order=captured,
            lines=changed,
        )
    if waits:
        return _waiting(o, captured, changed)
    return Decision(
        "captured",
        "CONFIRMED",
        "payment captured" if captured else "allocations confirmed",
        "notify",
        order=captured,
        lines=changed,
    )


def _waiting(o: Order, captured: dict[str, Any], changed: list[Line]) -> Decision:
    """Some lines wait for a promised date: the saga comes back then."""
    waiting = [b for b in o.backorders if b.status == "waiting"]
    when = min((b.promised_date or now().date() for b in waiting), default=now().date())
    shipped = any(line.status == "allocated" for line in o.lines)
    return Decision(
        "captured, lines waiting",
        "PARTIALLY_FULFILLED" if shipped else "BACKORDERED",
        f"payment captured; {len(waiting)} line(s) wait until {when.isoformat()}",
        "supplier.allocate",
        dt.datetime.combine(when, dt.time(), dt.UTC),
        order=captured,
        lines=changed,
        notices=both("order.partially_fulfilled", waiting_until=when.isoformat())
        if shipped
        else [],
    )


async def _refused(p: Parties, o: Order, why: str) -> Decision:
    """The provider refused the capture: undo the allocations, void what can be voided, and
    put the units back on sale (but those nobody can ship)."""
    cut = kept_out(o)
    cancelled = await cancel_allocations(p, o)
    # A refused capture (an authorisation that expired, say) may leave nothing to void.
    voided = await void(p, o, refusal_ok=True)
    returned = await give_back(p, o, why, cut)
    return Decision(
        "refused",
        "PAYMENT_FAILED",
        why,
        lines=cancelled,
        history=[
            ("supplier.cancel", f"{len(cancelled)} cancelled"),
            ("payment.void", voided),
            ("stock.release", returned),
        ],
        notices=both("order.payment_failed", reason=why),
    )
