"""The order saga's data as PostgreSQL keeps it (orders, order_allocations, backorders), and the
`Decision` a step hands back for the store to write in one transaction.

The saga's steps (reconciler/saga/) read an `Order` and return a `Decision`; they never write
themselves. These types live in the store, below the reconciler, because the store is what
turns them into rows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

# Statuses an order never leaves; a retailer's decision on a backorder of one is refused.
FINAL = frozenset({"FULFILLED", "PAYMENT_FAILED", "CANCELLED", "REFUNDED"})
BACKORDER_STATUSES = ("open", "decided", "waiting", "cancelled", "secondary", "resolved")


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
    cancelled_qty: int = 0  # units cancelled: never shipped, never charged (or refunded)
    refunded_qty: int = 0  # units refunded by line (a return, an operator's line refund)
    refunded_minor: int = 0  # money refunded for this line
    shipped_qty: int = 0  # units its supplier reported shipped (written by store/shipments.py)
    restocked_qty: int = 0  # units returns put back on sale (return_lines; read, never written)
    returned_qty: int = 0  # units returned, whatever became of them (return_lines; read only)

    @property
    def live_qty(self) -> int:
        """The units still ordered: what is allocated, shipped and charged."""
        return self.qty - self.cancelled_qty

    @property
    def unshipped_qty(self) -> int:
        """The live units its supplier has not reported shipped: what an allocation asks for."""
        return self.live_qty - min(self.shipped_qty, self.live_qty)

    @property
    def amount_minor(self) -> int:
        return self.live_qty * self.price_minor

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
    status: str  # one of BACKORDER_STATUSES
    decision: dict[str, Any] | None
    promised_date: dt.date | None
    options: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ref(self) -> tuple[str, str]:
        return (self.sku, self.hold_supplier)


@dataclass(slots=True)
class Change:
    """A change asked of the order after the sale (order_changes): a cancel or a refund, carried
    out by the order.change step, which sets `status` (applied | refused) and `outcome`."""

    id: int
    kind: str  # cancel | refund
    whole: bool  # a cancel of every unit left on the order
    lines: list[dict[str, Any]]  # [{sku, hold_supplier, qty}]
    amount_minor: int
    reason: str
    source: str  # customer | operator | return
    status: str = "pending"
    outcome: str = ""


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
    changes: list[Change] = field(default_factory=list)  # pending cancels and refunds, in order
    paused: tuple[str | None, dt.datetime | None] = (None, None)  # the step a change displaced
    reporting: frozenset[str] = frozenset()  # its suppliers whose lines wait for shipments

    def key(self, *parts: object) -> str:
        """An idempotency key for a call to a party: order, step, round, then `parts`."""
        return ":".join([self.order_id, self.step, str(self.round), *map(str, parts)])


@dataclass(frozen=True, slots=True)
class DateChange:
    """A promised date a waiting backorder was given (a row of backorder_dates)."""

    backorder_id: int
    promised_date: dt.date
    reason: str
    source: str  # retailer | saga


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
    order: dict[str, Any] = field(default_factory=dict)  # orders money columns to set
    lines: list[Line] = field(default_factory=list)  # lines to write back
    backorders: list[Backorder] = field(default_factory=list)  # to open (status open) or update
    notices: list[Notice] = field(default_factory=list)
    history: list[tuple[str, str]] = field(default_factory=list)  # (step, outcome) done here
    changes: list[Change] = field(default_factory=list)  # applied or refused here
    dates: list[DateChange] = field(default_factory=list)  # promised dates given here
