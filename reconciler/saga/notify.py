"""notify: every line is confirmed by its supplier; the customer and the retailer are told."""

from __future__ import annotations

from flashsale.reconciler.saga.parties import Parties
from flashsale.store.saga.model import Decision, Notice, Order


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
