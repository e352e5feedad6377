"""The order saga's steps. Each reads an order, talks to the outside parties and Redis, and returns
what it decided as a `Decision`; reconciler/saga.py writes that in one PostgreSQL transaction.

    PENDING --payment.authorize--> AUTHORIZED --supplier.allocate--> ALLOCATED
            --payment.capture--> CONFIRMED --notify--> FULFILLED
    declined authorisation  -> PAYMENT_FAILED, units back on sale (compensation)
    no supplier for a line  -> BACKORDERED: the retailer decides (backorder.apply):
        wait      -> payment captured now, the line tried again on the promised date; the other
                     lines ship (PARTIALLY_FULFILLED) and the order ends FULFILLED
        secondary -> the line ships from the named supplier at its cost (margin recorded)
        cancel    -> whole order: allocations cancelled, payment voided (CANCELLED) or refunded
                     if captured (REFUNDED), unshippable units written off, the rest back on sale

Every call to a party carries an idempotency key built from order, step and round, so a step
that runs again (a retry, or a restart after a crash) gets the first answer, not a second effect.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from flashsale.engine import Code, Engine
from flashsale.reconciler.adapters import PartyUnavailable, PaymentProvider, Suppliers

FINAL = frozenset({"FULFILLED", "PAYMENT_FAILED", "CANCELLED", "REFUNDED"})


@dataclass(slots=True)
class Line:
    """An order line as the saga sees it (order_allocations)."""

    sku: str
    hold_supplier: str
    qty: int
    price_minor: int
    status: str
    supplier_id: str | None
    cost_minor: int | None
    allocation_ref: str | None
    confirmed: bool
    planned_margin_minor: int
    margin_minor: int | None
    refused_by: list[str]

    @property
    def amount_minor(self) -> int:
        return self.qty * self.price_minor

    @property
    def ref(self) -> tuple[str, str]:
        """What names a line, and the backorder of it: (sku, hold_supplier)."""
        return (self.sku, self.hold_supplier)


@dataclass(slots=True)
class Backorder:
    id: int
    sku: str
    hold_supplier: str
    qty: int
    status: str  # open | decided | waiting | cancelled | secondary | resolved
    decision: dict[str, Any] | None
    promised_date: dt.date | None
    options: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ref(self) -> tuple[str, str]:
        return (self.sku, self.hold_supplier)


@dataclass(slots=True)
class Order:
    order_id: str
    sale_id: str
    customer_id: str
    status: str
    total_minor: int
    payment_ref: str
    authorization_id: str | None
    captured_minor: int
    refunded_minor: int
    step: str
    round: int
    lines: list[Line]
    backorders: list[Backorder]
    suppliers: dict[str, list[tuple[str, int]]]  # sku -> [(supplier, unit cost)] by priority

    def key(self, *parts: object) -> str:
        return ":".join([self.order_id, self.step, str(self.round), *map(str, parts)])


@dataclass(slots=True)
class Notice:
    recipient: str  # customer | retailer
    topic: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Decision:
    """What a step decided. status None keeps the order's status; next_step None ends the saga
    (or parks it until the retailer decides)."""

    outcome: str  # recorded on the step's saga_steps row
    status: str | None = None
    cause: str = ""
    next_step: str | None = None
    next_at: dt.datetime | None = None  # None: due now
    order: dict[str, Any] = field(default_factory=dict)  # orders columns to set
    lines: list[Line] = field(default_factory=list)  # lines to write back
    backorders: list[Backorder] = field(default_factory=list)  # to open (id 0) or update
    notices: list[Notice] = field(default_factory=list)
    history: list[tuple[str, str]] = field(default_factory=list)  # (step, outcome) done here


@dataclass(slots=True)
class Parties:
    engine: Engine
    payment: PaymentProvider
    suppliers: Suppliers
    lock_s: int
    secondary_suppliers: tuple[str, ...]
    wait_days: int


Step = Callable[[Parties, Order], Awaitable[Decision]]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _both(topic: str, **details: Any) -> list[Notice]:
    return [Notice("customer", topic, details), Notice("retailer", topic, details)]


# --- payment.authorize


async def authorize(p: Parties, o: Order) -> Decision:
    # The provider first: a run after a crash gets the first answer again (same key), so a
    # decline given back in Redis before the crash still ends as PAYMENT_FAILED.
    answer = await p.payment.authorize(
        o.key(), o.order_id, o.customer_id, o.total_minor, o.payment_ref
    )
    if answer.ok:
        hold = await p.engine.get_hold(o.sale_id, o.order_id)
        if hold is not None and hold.status == "compensated":
            # The units were given back outside the saga: nothing left to charge for.
            await _void(p, o, answer.ref)
            return Decision(
                "voided",
                "CANCELLED",
                "units were given back before payment; authorisation voided",
                history=[("payment.void", "voided")],
                notices=_both("order.cancelled", refunded_minor=0),
            )
        return Decision(
            "authorized",
            "AUTHORIZED",
            f"payment authorized ({answer.ref})",
            "supplier.allocate",
            order={"authorization_id": answer.ref, "authorized_minor": o.total_minor},
        )
    why = f"payment declined: {answer.detail or answer.code}"
    returned = await _give_back(p, o, why, writeoff=())
    return Decision(
        "declined",
        "PAYMENT_FAILED",
        why,
        history=[("stock.release", returned)],
        notices=_both("order.payment_failed", reason=answer.detail or answer.code),
    )


async def _give_back(
    p: Parties, o: Order, reason: str, writeoff: tuple[tuple[str, str, int], ...]
) -> str:
    """The compensation in Redis: the order's units back on sale (but `writeoff`); the flush
    then books the ledger rows, reason included. Idempotent: a replay answers OK again."""
    result = await p.engine.compensate(o.sale_id, o.order_id, reason[:512], writeoff)
    if result.code is Code.OK and result.replay:
        return "units already given back"
    if result.code is Code.OK:
        cut = sum(q for _, _, q in writeoff)
        return f"units back on sale, {cut} written off" if cut else "units back on sale"
    if result.code is Code.UNKNOWN_HOLD:
        # Past hold retention Redis has forgotten the hold; the units stay sold there.
        return "hold gone from Redis: units not returned"
    raise PartyUnavailable(f"compensate {o.order_id}: {result.code} {result.status}")


# --- supplier.allocate


def _chain(o: Order, line: Line) -> list[tuple[str, int]]:
    """The supplier the hold took the units from first, then the sku's alternates by priority."""
    known = o.suppliers.get(line.sku, [])
    first = [s for s in known if s[0] == line.hold_supplier] or [(line.hold_supplier, 0)]
    return first + [s for s in known if s[0] != line.hold_supplier]


async def _allocate_line(p: Parties, o: Order, line: Line) -> list[str]:
    """Asks the line's suppliers in turn; what was cut from the sale's stock on the way."""
    line.refused_by = []
    cuts: list[str] = []
    for supplier_id, cost in _chain(o, line):
        key = o.key(line.sku, line.hold_supplier, supplier_id)
        answer = await p.suppliers.allocate(supplier_id, key, line.sku, line.qty, p.lock_s)
        if answer.ok:
            _ship_from(line, supplier_id, cost, answer.ref)
            return cuts
        line.refused_by.append(f"{supplier_id}:{answer.code}")
        if answer.code == "OUT_OF_STOCK":
            cuts += await _stop_selling(p, o, line.sku, supplier_id)
    line.status = "backordered"
    return cuts


async def _stop_selling(p: Parties, o: Order, sku: str, supplier_id: str) -> list[str]:
    """A supplier of the sale says it has none left: what Redis still offers from it for this
    sku comes off the sale (an adjustment, in the ledger with the reason), so the crowd is not
    sold units that would only end as reroutes or backorders. Units given back to it later (a
    declined payment) are cut again at its next refusal."""
    if supplier_id not in (s for s, _ in o.suppliers.get(sku, [])):
        return []  # a supplier from outside the sale (a secondary): nothing of it on sale
    state = await p.engine.stock(o.sale_id)
    if state is None:
        return []
    left = next(
        (
            s.available
            for k in state.skus
            if k.sku == sku
            for s in k.suppliers
            if s.supplier == supplier_id
        ),
        0,
    )
    if left <= 0:
        return []
    reason = f"supplier {supplier_id} is out of {sku} (order {o.order_id}): no more on sale"
    done = await p.engine.adjust(o.sale_id, sku, supplier_id, -left, reason)
    if done.code is not Code.OK:
        raise PartyUnavailable(f"adjust {sku} at {supplier_id}: {done.code}")
    return [f"{-done.applied} x {sku} of {supplier_id} taken off the sale"] if done.applied else []


def _ship_from(line: Line, supplier_id: str, unit_cost: int, ref: str) -> None:
    line.status = "allocated"
    line.supplier_id = supplier_id
    line.cost_minor = unit_cost
    line.allocation_ref = ref
    line.confirmed = False
    line.margin_minor = line.qty * (line.price_minor - unit_cost)


async def _options(p: Parties, o: Order, line: Line) -> list[dict[str, Any]]:
    """The retailer's choices for a line no supplier of the sale can ship."""
    pay = "refund" if o.captured_minor else "void"
    options: list[dict[str, Any]] = [
        {
            "decision": "wait",
            "promised_date": (_now() + dt.timedelta(days=p.wait_days)).date().isoformat(),
        },
        {"decision": "cancel", "payment": pay},
    ]
    tried = {r.split(":", 1)[0] for r in line.refused_by}
    for supplier_id in p.secondary_suppliers:
        if supplier_id in tried:
            continue
        try:
            quote = await p.suppliers.stock(supplier_id, line.sku)
        except PartyUnavailable:
            continue  # an option we cannot price is not offered
        if quote is not None and quote.available >= line.qty:
            margin = line.qty * (line.price_minor - quote.cost_minor)
            options.append(
                {
                    "decision": "secondary",
                    "supplier_id": supplier_id,
                    "cost_minor": quote.cost_minor,
                    "margin_minor": margin,
                    "margin_change_minor": margin - line.planned_margin_minor,
                }
            )
    return options


def _due(o: Order, line: Line) -> bool:
    """A line to ask for now: new, or waiting and its promised day has come."""
    if line.status == "pending":
        return True
    if line.status != "waiting":
        return False
    day = next((b.promised_date for b in o.backorders if b.ref == line.ref), None)
    return day is None or day <= _now().date()


async def allocate(p: Parties, o: Order) -> Decision:
    todo = [line for line in o.lines if _due(o, line)]
    was_waiting = {line.ref for line in todo if line.status == "waiting"}
    cuts: list[str] = []
    for line in todo:
        cuts += await _allocate_line(p, o, line)
    short = [line for line in todo if line.status == "backordered"]
    rerouted = [
        f"{line.sku} {line.hold_supplier}->{line.supplier_id} "
        f"(margin {(line.margin_minor or 0) - line.planned_margin_minor:+d})"
        for line in todo
        if line.status == "allocated" and line.supplier_id != line.hold_supplier
    ]
    shipped = {x.ref for x in todo if x.status == "allocated"}
    touched = []
    for b in o.backorders:  # a line that waited and now ships closes its backorder
        if b.ref in was_waiting & shipped:
            b.status = "resolved"
            touched.append(b)
    note = f"; rerouted {', '.join(rerouted)}" if rerouted else ""
    note += f"; {', '.join(cuts)}" if cuts else ""
    if not short:
        return Decision(
            "allocated" + (" with reroute" if rerouted else ""),
            None if o.captured_minor else "ALLOCATED",
            "every line allocated" + note,
            "payment.capture",
            lines=todo,
            backorders=touched,
        )
    for line in short:
        old = next((b for b in o.backorders if b.ref == line.ref), None)
        backorder = Backorder(
            old.id if old else 0,
            line.sku,
            line.hold_supplier,
            line.qty,
            "open",
            None,
            None,
            await _options(p, o, line),
        )
        touched.append(backorder)
    refused = "; ".join(f"{line.sku}: {', '.join(line.refused_by)}" for line in short)
    return Decision(
        "backordered",
        None if o.status == "PARTIALLY_FULFILLED" else "BACKORDERED",
        f"no supplier can ship ({refused}){note}",
        None,
        lines=todo,
        backorders=touched,
        notices=[
            Notice("customer", "order.backordered", {"skus": [line.sku for line in short]}),
            Notice(
                "retailer",
                "backorder.opened",
                {
                    "lines": [
                        {"sku": line.sku, "qty": line.qty, "refused_by": line.refused_by}
                        for line in short
                    ]
                },
            ),
        ],
    )


# --- payment.capture


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
            return await _capture_refused(p, o, f"capture refused: {answer.detail or answer.code}")
        captured = {"captured_minor": amount}
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
    waiting = [b for b in o.backorders if b.status == "waiting"]
    if waits:
        when = min((b.promised_date or _now().date() for b in waiting), default=_now().date())
        shipped = any(line.status == "allocated" for line in o.lines)
        return Decision(
            "captured, lines waiting",
            "PARTIALLY_FULFILLED" if shipped else "BACKORDERED",
            f"payment captured; {len(waiting)} line(s) wait until {when.isoformat()}",
            "supplier.allocate",
            dt.datetime.combine(when, dt.time(), dt.UTC),
            order=captured,
            lines=changed,
            notices=_both("order.partially_fulfilled", waiting_until=when.isoformat())
            if shipped
            else [],
        )
    return Decision(
        "captured",
        "CONFIRMED",
        "payment captured" if captured else "allocations confirmed",
        "notify",
        order=captured,
        lines=changed,
    )


async def _capture_refused(p: Parties, o: Order, why: str) -> Decision:
    unshippable = _unshippable(o)
    cancelled = await _cancel_allocations(p, o)
    # A refused capture (an authorisation that expired, say) may leave nothing to void.
    voided = await _void(p, o, refusal_ok=True)
    returned = await _give_back(p, o, why, unshippable)
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
        notices=_both("order.payment_failed", reason=why),
    )


def _unshippable(o: Order) -> tuple[tuple[str, str, int], ...]:
    """Units of lines no supplier could ship: written off, never back on sale."""
    return tuple(
        (line.sku, line.hold_supplier, line.qty)
        for line in o.lines
        if line.status in ("backordered", "waiting")
    )


async def _cancel_allocations(p: Parties, o: Order) -> list[Line]:
    done = []
    for line in o.lines:
        if line.status == "allocated" and line.supplier_id and line.allocation_ref:
            key = o.key("cancel", line.sku, line.hold_supplier)
            answer = await p.suppliers.cancel(line.supplier_id, key, line.allocation_ref)
            if not answer.ok and answer.code != "NOT_FOUND":  # a refusal (shipped?) needs a look
                raise PartyUnavailable(
                    f"cancel {line.allocation_ref} at {line.supplier_id}: {answer.code}"
                )
        line.status = "cancelled"
        done.append(line)
    return done


async def _void(
    p: Parties, o: Order, authorization_id: str | None = None, *, refusal_ok: bool = False
) -> str:
    """Voids the authorisation; a refusal raises (the step is retried, then dead-lettered)
    unless `refusal_ok`, when it is only recorded."""
    auth = authorization_id or o.authorization_id
    if not auth:
        return "no authorisation"
    answer = await p.payment.void(o.key("void"), auth)
    if answer.ok:
        return "voided"
    if answer.code == "ALREADY_VOIDED":
        return "already voided"
    if refusal_ok:
        return f"not voided: {answer.code} {answer.detail}".strip()
    raise PartyUnavailable(f"void {o.order_id}: {answer.code} {answer.detail}")


# --- notify


async def notify(p: Parties, o: Order) -> Decision:
    lines = [
        {
            "sku": line.sku,
            "qty": line.qty,
            "supplier_id": line.supplier_id,
            "margin_minor": line.margin_minor,
            "planned_margin_minor": line.planned_margin_minor,
        }
        for line in o.lines
    ]
    return Decision(
        "notified",
        "FULFILLED",
        "every line confirmed by its supplier",
        notices=[
            Notice("customer", "order.confirmed", {"total_minor": o.captured_minor}),
            Notice("retailer", "order.fulfilled", {"lines": lines}),
        ],
    )


# --- backorder.apply


async def apply_backorders(p: Parties, o: Order) -> Decision:
    """Carries out the retailer's decisions recorded by POST /v1/admin/backorders/{id}/decision."""
    decided = [b for b in o.backorders if b.status == "decided" and b.decision]
    if any(b.decision and b.decision["decision"] == "cancel" for b in decided):
        return await _cancel_order(p, o)
    notes: list[str] = []
    refused: list[dict[str, Any]] = []
    for b in decided:
        assert b.decision is not None
        line = next(x for x in o.lines if x.ref == b.ref)
        if b.decision["decision"] == "wait":
            b.status, line.status = "waiting", "waiting"
            b.promised_date = dt.date.fromisoformat(b.decision["promised_date"])
            notes.append(f"{b.sku} waits until {b.promised_date.isoformat()}")
            continue
        supplier_id, cost = b.decision["supplier_id"], int(b.decision["cost_minor"])
        answer = await p.suppliers.allocate(
            supplier_id, o.key(b.id, supplier_id), b.sku, b.qty, p.lock_s
        )
        if answer.ok:
            _ship_from(line, supplier_id, cost, answer.ref)
            b.status = "secondary"
            change = (line.margin_minor or 0) - line.planned_margin_minor
            notes.append(f"{b.sku} ships from {supplier_id} (margin {change:+d})")
        else:
            b.status, b.decision, line.status = "open", None, "backordered"
            notes.append(f"{b.sku}: {supplier_id} refused ({answer.code}), decide again")
            refused.append(
                {
                    "backorder_id": b.id,
                    "sku": b.sku,
                    "supplier_id": supplier_id,
                    "code": answer.code,
                }
            )
    open_left = any(b.status == "open" for b in o.backorders)
    return Decision(
        "applied",
        None,
        "retailer decided: " + "; ".join(notes),
        None if open_left else "payment.capture",
        lines=o.lines,
        backorders=decided,
        notices=[Notice("retailer", "backorder.decision_failed", {"refused": refused})]
        if refused
        else [],
    )


async def _cancel_order(p: Parties, o: Order) -> Decision:
    unshippable = _unshippable(o)
    cancelled = await _cancel_allocations(p, o)
    if o.captured_minor > o.refunded_minor:
        assert o.authorization_id is not None
        amount = o.captured_minor - o.refunded_minor
        answer = await p.payment.refund(o.key("refund"), o.authorization_id, amount)
        if not answer.ok:
            raise PartyUnavailable(f"refund {o.order_id}: {answer.code} {answer.detail}")
        status, money = "REFUNDED", {"refunded_minor": o.captured_minor}
        paid = ("payment.refund", f"refunded {amount}")
    else:
        status, money = "CANCELLED", {}
        paid = ("payment.void", await _void(p, o))
    returned = await _give_back(p, o, "backorder cancelled by the retailer", unshippable)
    for b in o.backorders:
        b.status = "cancelled"
    return Decision(
        "cancelled",
        status,
        "retailer cancelled the backorder",
        order=money,
        lines=cancelled,
        backorders=o.backorders,
        history=[
            paid,
            ("supplier.cancel", f"{len(cancelled)} lines"),
            ("stock.release", returned),
        ],
        notices=_both("order.cancelled", refunded_minor=money.get("refunded_minor", 0)),
    )


STEPS: dict[str, Step] = {
    "payment.authorize": authorize,
    "supplier.allocate": allocate,
    "payment.capture": capture,
    "notify": notify,
    "backorder.apply": apply_backorders,
}
