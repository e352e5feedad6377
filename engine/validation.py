"""Input checks the engine makes before any Redis call, so bad input never changes state."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from flashsale.engine.errors import InvalidInput
from flashsale.engine.keys import ID_PATTERN

SALE_STATUSES = ("scheduled", "open", "paused", "closed")
MAX_NAME_CHARS = 200
MAX_RETURN_URL_CHARS = 2048
HOLD_PLACEHOLDER = "{hold_id}"
_HOST_NAME = re.compile(r"[a-z0-9-]+(\.[a-z0-9-]+)*\.?")


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


def check_name(field: str, value: object) -> str:
    """A name shown to shoppers: 1..MAX_NAME_CHARS printable characters, no edge spaces."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_NAME_CHARS:
        raise InvalidInput(field, f"must be a string of 1 to {MAX_NAME_CHARS} characters")
    if not value.isprintable():
        raise InvalidInput(field, "must be printable (no control or formatting characters)")
    if value.strip() != value:
        raise InvalidInput(field, "must not start or end with a space")
    return value


def check_return_url(field: str, value: object) -> str:
    """Where the queue page sends a shopper after reserving: an absolute https URL (http only
    to a loopback host) with {hold_id} exactly once, in its path, query or fragment."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_RETURN_URL_CHARS:
        raise InvalidInput(field, f"must be a string of 1 to {MAX_RETURN_URL_CHARS} characters")
    if not (value.isascii() and value.isprintable()) or " " in value or "\\" in value:
        raise InvalidInput(field, "must be ASCII without spaces or backslashes (percent-encode)")
    if value.count(HOLD_PLACEHOLDER) != 1:
        raise InvalidInput(field, f"must contain {HOLD_PLACEHOLDER} exactly once")
    if {"{", "}"} & set(value.replace(HOLD_PLACEHOLDER, "")):
        raise InvalidInput(field, f"must have no placeholder but {HOLD_PLACEHOLDER}")
    try:
        parts = urlsplit(value)
        host, _port = parts.hostname, parts.port  # a port outside 0..65535 raises
    except ValueError:
        raise InvalidInput(field, "has no valid host and port") from None
    if parts.scheme not in ("https", "http") or not host or "{" in parts.netloc:
        raise InvalidInput(field, "must be an absolute https URL with {hold_id} after the host")
    if "@" in parts.netloc:
        raise InvalidInput(field, "must not carry a user name or password")
    if not _valid_host(host, bracketed=parts.netloc.startswith("[")):
        raise InvalidInput(field, "has no valid host and port")
    if parts.scheme == "http" and not _loopback(host):
        raise InvalidInput(field, "must use https (http only for a loopback host)")
    return value


def _valid_host(host: str, *, bracketed: bool) -> bool:
    """A DNS name, an IPv4 address or a bracketed IPv6 address, as browsers parse them."""
    try:
        if bracketed:
            return ipaddress.ip_address(host).version == 6
        if host.rstrip(".").rsplit(".", 1)[-1].isdigit():  # browsers read it as IPv4
            ipaddress.IPv4Address(host.rstrip("."))
        return _HOST_NAME.fullmatch(host) is not None
    except ValueError:
        return False


def _loopback(host: str) -> bool:
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
