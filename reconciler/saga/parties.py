"""What a saga step works with: the engine (for compensations in Redis), the payment provider and
the suppliers behind their adapters, and the sale's policy for backorders."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from flashsale.engine import Engine
from flashsale.reconciler.adapters import PaymentProvider, Suppliers
from flashsale.store.saga.feed_room import FeedRoom
from flashsale.store.saga.model import Decision, Notice, Order


@dataclass(slots=True)
class Parties:
    engine: Engine
    payment: PaymentProvider
    suppliers: Suppliers
    lock_s: int  # how long a supplier holds an allocation before it is made firm
    secondary_suppliers: tuple[str, ...]  # offered on a backorder
    wait_days: int  # the promised date offered with "wait"
    # The room supplier stock feeds leave, claimed before a supplier is asked (None: no feeds).
    feed_room: FeedRoom | None = None


Step = Callable[[Parties, Order], Awaitable[Decision]]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def both(topic: str, **details: Any) -> list[Notice]:
    """The same notice to the customer and to the retailer."""
    return [Notice("customer", topic, details), Notice("retailer", topic, details)]
