"""Every Redis key name of the engine, hash-tagged with its sale so a sale lives in one slot."""

from __future__ import annotations

import re

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def prefix(sale_id: str) -> str:
    """The common prefix of a sale's keys; scripts append the suffixes below to it."""
    return f"fs:{{{sale_id}}}:"


def sale(sale_id: str) -> str:
    return prefix(sale_id) + "sale"


def skus(sale_id: str) -> str:
    return prefix(sale_id) + "skus"


def stock(sale_id: str, sku: str) -> str:
    return prefix(sale_id) + "stock:" + sku


def suppliers(sale_id: str, sku: str) -> str:
    return prefix(sale_id) + "suppliers:" + sku


def holds(sale_id: str) -> str:
    return prefix(sale_id) + "holds"


def hold(sale_id: str, hold_id: str) -> str:
    return prefix(sale_id) + "hold:" + hold_id


def user(sale_id: str, customer_id: str) -> str:
    return prefix(sale_id) + "user:" + customer_id


def idem(sale_id: str, customer_id: str, idempotency_key: str) -> str:
    """Scoped per customer: one shopper's key can never collide with, or reveal, another's hold."""
    return prefix(sale_id) + "idem:" + customer_id + ":" + idempotency_key


def events(sale_id: str) -> str:
    return prefix(sale_id) + "events"


def sales_index() -> str:
    """The set of sale ids loaded into this Redis (reconciler and sweeper iterate it)."""
    return "fs:sales"
