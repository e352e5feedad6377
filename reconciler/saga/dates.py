"""Honest dates: a waiting line's promised date, told to the customer whenever it is given or
moved. The retailer's "wait" gives the first (backorder.apply); a promised day that comes with
the line still short at every supplier moves it `wait_days` on (supplier.allocate) instead of
asking the retailer again; an operator moves it by hand (store/promised_dates.py). The reason the
customer reads never names a supplier; who refused is in the order's transition (admin view)."""

from __future__ import annotations

import datetime as dt

from flashsale.reconciler.saga.parties import Parties, now
from flashsale.store.saga.model import Backorder, DateChange, Decision, Line, Notice, Order


def told(changes: list[tuple[Backorder, dt.date | None, str]]) -> Notice:
    """The customer's notice of new promised dates: per line, the date, the one it replaces
    and why."""
    lines = [
        {
            "sku": b.sku,
            "qty": b.qty,
            "promised_date": b.promised_date.isoformat() if b.promised_date else None,
            "previous_date": previous.isoformat() if previous else None,
            "reason": reason,
        }
        for b, previous, reason in changes
    ]
    return Notice("customer", "order.promised_date", {"lines": lines})


def promised(b: Backorder, reason: str) -> DateChange:
    assert b.promised_date is not None
    return DateChange(b.id, b.promised_date, reason, "retailer")


def move(
    p: Parties, o: Order, short: list[Line]
) -> tuple[list[Backorder], list[DateChange], list[Notice]]:
    """Lines that waited for today and are still short keep waiting, `wait_days` later: their
    backorders with the new date, its history rows, and the customer's notice."""
    day = (now() + dt.timedelta(days=p.wait_days)).date()
    moved: list[Backorder] = []
    history: list[DateChange] = []
    changes: list[tuple[Backorder, dt.date | None, str]] = []
    for line in short:
        b = next((x for x in o.backorders if x.ref == line.ref), None)
        if b is None:
            continue
        line.status = "waiting"
        previous, b.promised_date = b.promised_date, day
        reason = f"not in stock yet on {previous or 'the promised day'}"
        moved.append(b)
        history.append(DateChange(b.id, day, reason, "saga"))
        changes.append((b, previous, reason))
    return moved, history, [told(changes)] if changes else []


def later(
    o: Order,
    todo: list[Line],
    moved: list[Backorder],
    history: list[DateChange],
    notices: list[Notice],
) -> Decision:
    """Every line due today is still short: the saga comes back on the earliest promised day."""
    days = [b.promised_date for b in o.backorders if b.status == "waiting" and b.promised_date]
    when = min(days, default=history[0].promised_date)
    short = "; ".join(
        f"{line.sku} refused by {', '.join(line.refused_by) or 'no supplier'}"
        for line in todo
        if line.status == "waiting" and any(b.ref == line.ref for b in moved)
    )
    return Decision(
        "promised date moved",
        None,
        f"still short on the promised day ({short}); now promised for {when.isoformat()}",
        "supplier.allocate",
        dt.datetime.combine(when, dt.time(), dt.UTC),
        lines=todo,
        backorders=moved,
        notices=notices,
        dates=history,
    )
