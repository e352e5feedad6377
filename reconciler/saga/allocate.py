"""supplier.allocate: each line from the supplier its hold took the units from, then the sku's
alternates by priority; a line nobody can ship becomes a backorder with the retailer's options."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flashsale.engine import Code
from flashsale.reconciler.adapters import PartyUnavailable
from flashsale.reconciler.saga import dates
from flashsale.reconciler.saga.parties import Parties, now
from flashsale.store.saga.feed_room import NO_LEVEL, RoomAnswer
from flashsale.store.saga.model import Backorder, Decision, Line, Notice, Order


def _chain(o: Order, line: Line) -> list[tuple[str, int]]:
    """The supplier the hold took the units from first, then the sku's alternates by priority."""
    known = o.suppliers.get(line.sku, [])
    first = [s for s in known if s[0] == line.hold_supplier] or [(line.hold_supplier, 0)]
    return first + [s for s in known if s[0] != line.hold_supplier]


async def _allocate_line(p: Parties, o: Order, line: Line) -> list[str]:
    """Asks the line's suppliers in turn; what was cut from the sale's stock on the way. A
    supplier whose newest stock feed level has no room left for the line is not asked
    (FEED_SHORT): the line goes on to the next at once, before any allocation is refused. A
    supplier that says OUT_OF_STOCK closes its level's room until a newer level comes."""
    line.refused_by = []
    cuts: list[str] = []
    for supplier_id, cost in _chain(o, line):
        room = await _room(p, supplier_id, line)
        if not room.ask:
            line.refused_by.append(f"{supplier_id}:FEED_SHORT")
            continue
        key = o.key(line.sku, line.hold_supplier, supplier_id)
        try:
            answer = await p.suppliers.allocate(
                supplier_id, key, line.sku, line.unshipped_qty, p.lock_s
            )
        except PartyUnavailable:
            await _give_back(p, room)
            raise
        if answer.ok:
            ship_from(line, supplier_id, cost, answer.ref)
            return cuts
        line.refused_by.append(f"{supplier_id}:{answer.code}")
        if answer.code == "OUT_OF_STOCK":
            await _close(p, room)
            cuts += await _stop_selling(p, o, line.sku, supplier_id)
        else:
            await _give_back(p, room)
    line.status = "backordered"
    return cuts


async def _room(p: Parties, supplier_id: str, line: Line) -> RoomAnswer:
    """The feed room claimed for the line (no claim: the supplier has no level to respect)."""
    if p.feed_room is None:
        return NO_LEVEL
    return await p.feed_room.claim(supplier_id, line.sku, line.unshipped_qty)


async def _give_back(p: Parties, room: RoomAnswer) -> None:
    if room.claim is not None and p.feed_room is not None:
        await p.feed_room.give_back(room.claim)


async def _close(p: Parties, room: RoomAnswer) -> None:
    """The supplier has none left, whatever its level said: no line waits on that level's room
    (a sale loaded again offers nothing from it either) until the supplier sends a newer one."""
    if room.claim is not None and p.feed_room is not None:
        await p.feed_room.close(room.claim)


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


def ship_from(line: Line, supplier_id: str, unit_cost: int, ref: str) -> None:
    line.status = "allocated"
    line.supplier_id = supplier_id
    line.cost_minor = unit_cost
    line.allocation_ref = ref
    line.confirmed = False
    line.margin_minor = line.live_qty * (line.price_minor - unit_cost)


async def _options(p: Parties, o: Order, line: Line) -> list[dict[str, Any]]:
    """The retailer's choices for a line no supplier of the sale can ship."""
    pay = "refund" if o.captured_minor else "void"
    options: list[dict[str, Any]] = [
        {
            "decision": "wait",
            "promised_date": (now() + dt.timedelta(days=p.wait_days)).date().isoformat(),
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
        if quote is not None and quote.available >= line.unshipped_qty:
            option = {"decision": "secondary", "supplier_id": supplier_id}
            options.append({**option, **secondary_margin(line, quote.cost_minor)})
    return options


def secondary_margin(line: Line, unit_cost: int) -> dict[str, int]:
    """A secondary option's price for the line's live units: its margin, and the change from
    the margin planned for those units."""
    margin = line.live_qty * (line.price_minor - unit_cost)
    planned = line.planned_margin_minor * line.live_qty // line.qty if line.qty else 0
    change = margin - planned
    return {"cost_minor": unit_cost, "margin_minor": margin, "margin_change_minor": change}


def _due(o: Order, line: Line) -> bool:
    """A line to ask for now: new, or waiting and its promised day has come."""
    if line.status == "pending":
        return True
    if line.status != "waiting":
        return False
    day = next((b.promised_date for b in o.backorders if b.ref == line.ref), None)
    return day is None or day <= now().date()


def _reroutes(lines: list[Line]) -> list[str]:
    return [
        f"{line.sku} {line.hold_supplier}->{line.supplier_id} "
        f"(margin {(line.margin_minor or 0) - line.planned_margin_minor:+d})"
        for line in lines
        if line.status == "allocated" and line.supplier_id != line.hold_supplier
    ]


async def allocate(p: Parties, o: Order) -> Decision:
    todo = [line for line in o.lines if _due(o, line)]
    was_waiting = {line.ref for line in todo if line.status == "waiting"}
    cuts: list[str] = []
    for line in todo:
        cuts += await _allocate_line(p, o, line)
    short = [line for line in todo if line.status == "backordered"]
    # A line that waited for today and is still short keeps waiting, its date moved on.
    moved, given, told = dates.move(p, o, [x for x in short if x.ref in was_waiting])
    short = [x for x in short if x.ref not in was_waiting]
    rerouted = _reroutes(todo)
    shipped = {x.ref for x in todo if x.status == "allocated"}
    touched = []
    for b in o.backorders:  # a line that waited and now ships closes its backorder
        if b.ref in was_waiting & shipped:
            b.status = "resolved"
            touched.append(b)
    note = f"; rerouted {', '.join(rerouted)}" if rerouted else ""
    note += f"; {', '.join(cuts)}" if cuts else ""
    if moved and not short and not shipped:
        return dates.later(o, todo, moved, given, told)
    if not short:
        return Decision(
            "allocated" + (" with reroute" if rerouted else ""),
            None if o.captured_minor else "ALLOCATED",
            "every line allocated" + note,
            "payment.capture",
            lines=todo,
            backorders=touched + moved,
            notices=told,
            dates=given,
        )
    for line in short:
        old = next((b for b in o.backorders if b.ref == line.ref), None)
        options = await _options(p, o, line)
        touched.append(
            Backorder(
                old.id if old else 0, *line.ref, line.unshipped_qty, "open", None, None, options
            )
        )
    d = _backordered(o, todo, short, touched + moved, note)
    d.notices += told
    d.dates = given
    return d


def _backordered(
    o: Order, todo: list[Line], short: list[Line], touched: list[Backorder], note: str
) -> Decision:
    refused = "; ".join(f"{line.sku}: {', '.join(line.refused_by)}" for line in short)
    lines = [{"sku": x.sku, "qty": x.unshipped_qty, "refused_by": x.refused_by} for x in short]
    return Decision(
        "backordered",
        None if o.status == "PARTIALLY_FULFILLED" else "BACKORDERED",
        f"no supplier can ship ({refused}){note}",
        None,
        lines=todo,
        backorders=touched,
        notices=[
            Notice("customer", "order.backordered", {"skus": [line.sku for line in short]}),
            Notice("retailer", "backorder.opened", {"lines": lines}),
        ],
    )
