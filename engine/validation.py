"""Input checks the engine makes before any Redis call, so bad input never changes state."""

from __future__ import annotations

from collections.abc import Sequence

from flashsale.engine.errors import InvalidInput
from flashsale.engine.keys import ID_PATTERN

SALE_STATUSES = ("scheduled", "open", "paused", "closed")


def check_id(field: str, value: object) -> str:
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise InvalidInput(field, "must be 1-64 characters of A-Z a-z 0-9 _ -")
    return value


def check_int(field: str, value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(field, "must be an integer")
    if not low <= value <= high:
        raise InvalidInput(field, f"must be between {low} and {high}")
    return value


def check_cart(
    lines: Sequence[tuple[str, int]], *, max_lines: int, max_qty: int
) -> list[tuple[str, int]]:
    """A cart is 1..max_lines lines of (sku, qty), each sku once, 1 <= qty <= max_qty."""
    if not isinstance(lines, Sequence) or isinstance(lines, str | bytes):
        raise InvalidInput("items", "must be a list of (sku, qty)")
    if not 1 <= len(lines) <= max_lines:
        raise InvalidInput("items", f"must hold 1 to {max_lines} lines")
    seen: set[str] = set()
    cart = []
    for i, line in enumerate(lines):
        if not isinstance(line, tuple | list) or len(line) != 2:
            raise InvalidInput(f"items[{i}]", "must be (sku, qty)")
        sku = check_id(f"items[{i}].sku", line[0])
        qty = check_int(f"items[{i}].qty", line[1], 1, max_qty)
        if sku in seen:
            raise InvalidInput(f"items[{i}].sku", "appears twice in the cart")
        seen.add(sku)
        cart.append((sku, qty))
    return cart


def check_status(value: object) -> str:
    if value not in SALE_STATUSES:
        raise InvalidInput("status", f"must be one of {', '.join(SALE_STATUSES)}")
    return str(value)
