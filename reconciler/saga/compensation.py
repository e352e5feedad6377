"""Undoing what earlier steps did: units back on sale, the payment voided, the suppliers'
allocations cancelled. Each is idempotent (the engine's compensate answers a replay with OK; the
parties answer a repeated key with their first answer)."""

from __future__ import annotations

from flashsale.engine import Code
from flashsale.reconciler.adapters import PartyUnavailable
from flashsale.reconciler.saga.parties import Parties
from flashsale.store.saga.change_rooms import COUNTED
from flashsale.store.saga.model import Line, Order

Writeoff = tuple[tuple[str, str, int], ...]  # (sku, supplier, qty) that leave the stock


async def give_back(p: Parties, o: Order, reason: str, writeoff: Writeoff) -> str:
    """The compensation in Redis: the order's units back on sale (but `writeoff`); the flush
    then books the ledger rows, reason included."""
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


def gone(o: Order, line: Line) -> int:
    """The line's live units that left its supplier, returned since or not, as the order's
    status counts them (status_of): those its supplier reported; all of a confirmed line whose
    supplier does not report shipments, once the order's status counts them."""
    if line.status != "allocated" or line.live_qty <= 0:
        return 0
    if line.supplier_id not in o.reporting:
        return line.live_qty if line.confirmed and o.status in COUNTED else 0
    return min(line.shipped_qty, line.live_qty)


def kept_out(o: Order) -> Writeoff:
    """The hold's units a compensation must not put back on sale (written off instead), so no
    unit is given back twice: per line the units cancelled (a partial cancel gave them back
    already, or they were unshippable), the live units of lines no supplier could ship
    (backordered, waiting), and the units that left (shipped: a return put some back on sale
    already). Read it before cancel_allocations, which marks every line cancelled."""
    out = []
    for line in o.lines:
        unshippable = line.status in ("backordered", "waiting")
        left = max(gone(o, line), line.shipped_qty, line.restocked_qty)
        n = line.cancelled_qty + (line.live_qty if unshippable else left)
        if n > 0:
            out.append((line.sku, line.hold_supplier, min(n, line.qty)))
    return tuple(out)


async def cancel_allocations(p: Parties, o: Order) -> list[Line]:
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


async def void(
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
