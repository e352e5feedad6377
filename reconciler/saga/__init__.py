"""The order saga: one module per step, the runner that drives them, and their compensations.

    PENDING --payment.authorize--> AUTHORIZED --supplier.allocate--> ALLOCATED
            --payment.capture--> CONFIRMED --notify--> FULFILLED
    declined authorisation  -> PAYMENT_FAILED, units back on sale (compensation)
    no supplier for a line  -> BACKORDERED: the retailer decides (backorder.apply):
        wait      -> payment captured now, the line tried again on the promised date; the other
                     lines ship (PARTIALLY_FULFILLED) and the order ends FULFILLED
        secondary -> the line ships from the named supplier at its cost (margin recorded)
        cancel    -> whole order: allocations cancelled, payment voided (CANCELLED) or refunded
                     if captured (REFUNDED), unshippable units written off, the rest back on sale
    a cancel or refund asked of the order (order.change, after the step running): lines
        cancelled at their supplier and back on sale, voided or refunded; CANCELLED / REFUNDED
        when nothing is left

A step reads an order and returns what it decided (a `Decision`); the store writes that in one
transaction (store/saga/). Every call to a party carries an idempotency key built from order,
step and round, so a step that runs again (a retry, or a restart after a crash) gets the first
answer, not a second effect.
"""

from __future__ import annotations

from flashsale.reconciler.saga.allocate import allocate
from flashsale.reconciler.saga.authorize import authorize
from flashsale.reconciler.saga.backorders import apply_backorders
from flashsale.reconciler.saga.capture import capture
from flashsale.reconciler.saga.changes import apply_changes
from flashsale.reconciler.saga.notify import notify
from flashsale.reconciler.saga.parties import Parties, Step

STEPS: dict[str, Step] = {
    "payment.authorize": authorize,
    "supplier.allocate": allocate,
    "payment.capture": capture,
    "notify": notify,
    "backorder.apply": apply_backorders,
    "order.change": apply_changes,
}

__all__ = ["STEPS", "Parties", "Step"]
