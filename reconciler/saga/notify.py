"""notify: every line is confirmed by its supplier; the customer and the retailer are told. An
order with lines of a supplier that reports shipments is FULFILLED only once they shipped: until
then the saga parks it (CONFIRMED, or PARTIALLY_FULFILLED when some units count as shipped) and
the shipment webhook (store/shipments.py) moves it on."""

from __future__ import annotations

from flashsale.reconciler.saga.parties import Parties
from flashsale.store.saga.model import Decision, Notice, Order
from flashsale.store.shipments import status_of


async def notify(p: Parties, o: Order) -> Decision:
    lines = [
        {
            "sku": line.sku,
            "qty": line.live_qty,
            "supplier_id": line.supplier_id,
            "margin_minor": line.margin_minor,
            "planned_margin_minor": line.planned_margin_minor,
        }
        for line in o.lines
    ]
    status = status_of(
        (x.status, x.live_qty, x.shipped_qty, x.supplier_id in o.reporting) for x in o.lines
    )
    confirmed = Notice("customer", "order.confirmed", {"total_minor": o.captured_minor})
    if status == "FULFILLED":
        return Decision(
            "notified",
            "FULFILLED",
            "every line confirmed by its supplier",
            notices=[confirmed, Notice("retailer", "order.fulfilled", {"lines": lines})],
        )
    waiting = sum(x.live_qty - x.shipped_qty for x in o.lines if x.supplier_id in o.reporting)
    return Decision(
        "notified, awaiting shipments",
        status,
        f"every line confirmed; {waiting} unit(s) wait for their suppliers' shipments",
        notices=[confirmed, Notice("retailer", "order.awaiting_shipment", {"lines": lines})],
    )
