"""order.change: carries out the cancels and refunds recorded by the order routes and returns
(store/saga/changes.py), in the order they were asked.

A cancel frees the cancelled units at their supplier (a whole line's lock cancelled; a line cut
down is locked again for what is left), gives them back to the sale, and pays back what was
captured for them; before the capture nothing is paid back, and the capture later charges only
what is left. A whole order cancelled before the capture voids the authorisation. A refund pays
back an amount. Every call to a party carries `<order>:order.change:<round>:<change id>[:...]`,
so a step run again gets the first answers.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from flashsale.engine import Code
from flashsale.reconciler.adapters import PartyUnavailable
from flashsale.reconciler.saga.allocate import secondary_margin
from flashsale.reconciler.saga.compensation import give_back, gone, kept_out, void
from flashsale.reconciler.saga.parties import Parties, both
from flashsale.store.saga.model import FINAL, Backorder, Change, Decision, Line, Notice, Order
from flashsale.store.shipments import AWAITING, status_of


@dataclass(slots=True)
class _Done:
    """What the step did, for its Decision."""

    refunded_minor: int
    history: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cancelled: list[dict[str, object]] = field(default_factory=list)
    refunds: list[dict[str, object]] = field(default_factory=list)
    whole: bool = False


def _line(o: Order, sku: str, hold_supplier: str) -> Line:
    return next(x for x in o.lines if (x.sku, x.hold_supplier) == (sku, hold_supplier))


async def _refund(p: Parties, o: Order, ch: Change, amount: int, done: _Done) -> int:
    """Pays `amount` back (at most what is captured and not refunded); what was paid back."""
    amount = min(amount, o.captured_minor - done.refunded_minor)
    if amount <= 0:
        return 0
    assert o.authorization_id is not None, "a capture without an authorization"
    answer = await p.payment.refund(o.key(ch.id), o.authorization_id, amount)
    if not answer.ok:
        raise PartyUnavailable(f"refund {o.order_id} change {ch.id}: {answer.code} {answer.detail}")
    done.refunded_minor += amount
    done.history.append(("payment.refund", f"change {ch.id}: refunded {amount}"))
    return amount


_gone = gone


def _shipped(o: Order, line: Line) -> int:
    """The line's units that count as shipped for a cancel: gone and not returned."""
    return max(_gone(o, line) - line.returned_qty, 0)


async def _lock(p: Parties, o: Order, ch: Change, line: Line, qty: int, *key: str) -> str | None:
    """A new lock of `qty` units of the line at its supplier; its reference, None if refused."""
    at = line.supplier_id
    assert at is not None, "a lock of an allocated line"
    answer = await p.suppliers.allocate(at, o.key(ch.id, *key, *line.ref), line.sku, qty, p.lock_s)
    return answer.ref if answer.ok else None


async def _free_at_supplier(p: Parties, o: Order, ch: Change, line: Line) -> str:
    """The line's lock after a cancel: cancelled when nothing unshipped is left of it, else
    locked again for the units left to ship (made firm again if it was). The new lock is asked
    for before the old one is cancelled, so a supplier short of stock keeps the units it already
    holds for the order; only when it refuses is the old lock cancelled first and the rest asked
    for again, and a supplier that refuses even then sends the line back to supplier.allocate."""
    if line.status != "allocated" or not line.supplier_id or not line.allocation_ref:
        if line.live_qty == 0:
            line.status = "cancelled"
        return "no lock"
    at, old = line.supplier_id, line.allocation_ref
    rest = line.unshipped_qty  # shipped units stay shipped
    ref = await _lock(p, o, ch, line, rest, "relock") if rest else None
    answer = await p.suppliers.cancel(at, o.key(ch.id, "cancel", *line.ref), old)
    if not answer.ok and answer.code != "NOT_FOUND":
        raise PartyUnavailable(f"cancel {old} at {at}: {answer.code}")
    if line.live_qty == 0:
        line.status = "cancelled"
        return f"{old} cancelled"
    if rest == 0:  # what is left of the line has shipped: nothing to lock again
        return f"{old} cancelled, the {line.live_qty} unit(s) left have shipped"
    if ref is None:
        ref = await _lock(p, o, ch, line, rest, "relock-after")
    if ref is None:
        line.status, line.allocation_ref, line.confirmed = "pending", None, False
        return f"{old} cancelled, {at} refused the rest"
    firm = line.confirmed
    line.allocation_ref, line.confirmed = ref, False
    line.margin_minor = line.live_qty * (line.price_minor - (line.cost_minor or 0))
    if firm:
        confirmed = await p.suppliers.confirm(at, o.key(ch.id, "confirm", *line.ref), ref)
        if not confirmed.ok:
            raise PartyUnavailable(f"confirm {ref} at {at}: {confirmed.code}")
        line.confirmed = True
    return f"{old} cancelled, {rest} locked again as {ref}"


def _refuse(ch: Change, why: str) -> None:
    ch.status, ch.outcome = "refused", why


async def _cancel(p: Parties, o: Order, ch: Change, done: _Done) -> None:
    parts = [(_line(o, x["sku"], x["hold_supplier"]), int(x["qty"])) for x in ch.lines]
    for line, qty in parts:
        left = line.live_qty - line.refunded_qty - _shipped(o, line)
        if ch.whole:  # a whole cancel takes refunded units not shipped too
            left = line.live_qty - _gone(o, line)
        if qty > left:
            return _refuse(ch, f"{line.sku}: only {left} unit(s) left to cancel")
    # Units a whole cancel's compensation must not put back on sale (read before the cut):
    # cancelled before (given back then), unshippable, restocked by a return.
    cut = kept_out(o)
    unshippable = {line.ref for line, _ in parts if line.status in ("backordered", "waiting")}
    paid: list[tuple[Line, int]] = []  # the units whose money is still with the shop
    for line, qty in parts:
        taken = 0
        if ch.whole:  # refunded units it takes are cancelled now (their money came back)
            fresh = max(line.live_qty - line.refunded_qty - _shipped(o, line), 0)
            taken = min(line.refunded_qty, max(qty - fresh, 0))
            line.refunded_qty -= taken
        paid.append((line, qty - taken))
        line.cancelled_qty += qty
        done.notes.append(await _free_at_supplier(p, o, ch, line))
        done.cancelled.append({"sku": line.sku, "qty": qty, "change_id": ch.id})
    refunded = 0
    if o.captured_minor:
        refunded = await _refund(p, o, ch, ch.amount_minor, done)
        _spread(paid, refunded)
    if all(x.live_qty == 0 for x in o.lines):
        done.whole = True
        if not o.captured_minor:
            # Nothing captured: an authorisation the provider will not void (expired, say)
            # leaves nothing to pay back, so a refusal is recorded, not retried.
            done.history.append(("payment.void", await void(p, o, refusal_ok=True)))
        # The compensation gives the whole hold back but `cut` (written off).
        returned = await give_back(p, o, _why(o, ch), cut)
    else:
        back = [(x, q) for x, q in parts if x.ref not in unshippable]
        returned = await _adjust(p, o, ch, back)
    done.history.append(("stock.release", f"change {ch.id}: {returned}"))
    locks = "; ".join(done.notes)
    ch.status, ch.outcome = "applied", f"cancelled {_units(parts)}; refunded {refunded}; {locks}"


def _spread(parts: list[tuple[Line, int]], amount: int) -> None:
    """The money paid back, booked on the lines it was for, in order."""
    for line, qty in parts:
        share = min(amount, qty * line.price_minor)
        line.refunded_minor += share
        amount -= share


def _units(parts: list[tuple[Line, int]]) -> str:
    return ", ".join(f"{q} x {x.sku}" for x, q in parts)


def _why(o: Order, ch: Change) -> str:
    return f"order {o.order_id} change {ch.id}: {ch.source} cancelled ({ch.reason})"[:512]


async def _adjust(p: Parties, o: Order, ch: Change, restock: list[tuple[Line, int]]) -> str:
    """Cancelled units of an order that goes on: back on sale at the supplier the sale took them
    from (an adjustment, in the ledger with the reason), once per change and line however often
    the step runs. A sale Redis no longer has, or one closed or over, takes nothing back (as a
    return's restock): the units are recorded as not returned, never retried to a dead letter."""
    if not restock:
        return "0 unit(s) back on sale"
    sale = await p.engine.stock(o.sale_id)
    if sale is None:
        return "sale gone from Redis: units not returned"
    if sale.status == "closed" or 0 < sale.ends_at_ms <= sale.now_ms:
        return f"sale {sale.status}: units not returned"
    back = 0
    for line, qty in restock:
        once = f"{o.order_id}:{ch.id}:{line.sku}:{line.hold_supplier}"
        result = await p.engine.adjust(
            o.sale_id, line.sku, line.hold_supplier, qty, _why(o, ch), once=once
        )
        if result.code in (Code.UNKNOWN_SKU, Code.UNKNOWN_SUPPLIER):  # unloaded meanwhile
            return f"{back} unit(s) back on sale; sale gone from Redis: the rest not returned"
        if result.code is not Code.OK:
            raise PartyUnavailable(f"adjust {line.sku} at {line.hold_supplier}: {result.code}")
        back += result.applied
    return f"{back} unit(s) back on sale"


async def _refund_change(p: Parties, o: Order, ch: Change, done: _Done) -> None:
    left = o.captured_minor - done.refunded_minor
    if ch.amount_minor > left:
        return _refuse(ch, f"{ch.amount_minor} asked, {left} left to refund")
    paid = await _refund(p, o, ch, ch.amount_minor, done)
    parts = [(_line(o, x["sku"], x["hold_supplier"]), int(x["qty"])) for x in ch.lines]
    for line, qty in parts:
        line.refunded_qty += qty
    _spread(parts, paid)
    done.refunds.append({"change_id": ch.id, "amount_minor": paid, "reason": ch.reason})
    ch.status, ch.outcome = "applied", f"refunded {paid}"


async def apply_changes(p: Parties, o: Order) -> Decision:
    """The oldest pending change, one per run: a run that fails part-way is tried again with the
    same keys (the parties', and the adjustment's `once`), so a change is paid back and its
    units put back on sale once. The next change is a new round."""
    done = _Done(o.refunded_minor)
    if not o.changes:  # carried out already (a retried dead step): the saga goes on
        step, at = _next(o, None)
        return Decision("no change pending", None, "", step, at)
    ch = o.changes[0]
    if o.status in FINAL and ch.kind == "cancel":
        _refuse(ch, f"the order is {o.status}")
    elif ch.kind == "cancel":
        await _cancel(p, o, ch, done)
    else:
        await _refund_change(p, o, ch, done)
    status = _status(o, done)
    next_step, next_at = _next(o, status)
    return Decision(
        f"change {ch.id} ({ch.kind}) {ch.status}",
        status,
        f"change {ch.id} ({ch.kind}, {ch.source}): {ch.outcome}",
        next_step,
        next_at,
        order={"refunded_minor": done.refunded_minor},
        lines=o.lines,
        backorders=_close_backorders(o),
        notices=_notices(ch, done) + _fulfilled(o, status),
        history=done.history,
        changes=[ch],
    )


def _status(o: Order, done: _Done) -> str | None:
    if o.status in FINAL and o.status != "FULFILLED":
        return None
    # Paid back in full ends the order only once no unit is left to ship: else shipments go on
    # and finish it (a supplier still holding live units would have its shipments refused).
    unshipped = sum(x.live_qty - _gone(o, x) for x in o.lines if x.status != "cancelled")
    if o.captured_minor and done.refunded_minor >= o.captured_minor and unshipped == 0:
        return "REFUNDED"
    if all(x.live_qty == 0 for x in o.lines):
        return "CANCELLED"
    if o.status in AWAITING and o.paused == (None, None):
        # Parked for shipments: the units cancelled may have been all it still waited for.
        lines = (
            (x.status, x.live_qty, x.shipped_qty, x.supplier_id in o.reporting) for x in o.lines
        )
        if status_of(lines) == "FULFILLED":
            return "FULFILLED"
    return None


def _next(o: Order, status: str | None) -> tuple[str | None, dt.datetime | None]:
    """Where the saga goes on: nowhere once final; a line that lost its lock is allocated
    again; a backorder whose lines are all cancelled no longer holds the capture; else the step
    the change displaced."""
    step, at = o.paused
    if status in FINAL or o.status in FINAL:
        return None, None
    if any(x.status == "pending" for x in o.lines) and step != "payment.authorize":
        return "supplier.allocate", None
    parked = o.status == "BACKORDERED" and step is None
    if parked and not any(x.status in ("backordered",) for x in o.lines):
        return "payment.capture", None
    short = any(x.status in ("pending", "waiting", "backordered") for x in o.lines)
    if step == "supplier.allocate" and at is not None and o.captured_minor and not short:
        # The promised day was for lines now cancelled: nothing waits for it, go on now.
        return "notify", None
    return step, at


def _close_backorders(o: Order) -> list[Backorder]:
    """A backorder still to decide or wait for follows its line: cut to the units left, so a
    secondary supplier or the promised day asks for those; closed when none is left."""
    touched = []
    for b in o.backorders:
        line = _line(o, b.sku, b.hold_supplier)
        if b.status not in ("open", "waiting") or b.qty == line.unshipped_qty:
            continue
        if line.live_qty == 0:
            b.status = "cancelled"
            line.status = "cancelled"
        else:
            b.qty = line.unshipped_qty
            for option in b.options:  # a secondary's margin, for the units left
                if option.get("decision") == "secondary":
                    option.update(secondary_margin(line, int(option["cost_minor"])))
        touched.append(b)
    return touched


def _fulfilled(o: Order, status: str | None) -> list[Notice]:
    if status != "FULFILLED":
        return []
    lines = [{"sku": x.sku, "qty": x.live_qty, "supplier_id": x.supplier_id} for x in o.lines]
    return [Notice("retailer", "order.fulfilled", {"lines": lines})]


def _notices(ch: Change, done: _Done) -> list[Notice]:
    if ch.status == "refused":
        why = {"change_id": ch.id, "kind": ch.kind, "reason": ch.outcome}
        return [Notice("retailer", "order.change_refused", why)]
    out: list[Notice] = []
    if done.cancelled:
        out += both("order.cancelled", lines=done.cancelled, whole=done.whole)
    if done.refunds:
        out += both("order.refunded", refunds=done.refunds, refunded_minor=done.refunded_minor)
    return out
