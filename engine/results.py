"""Typed answers of the engine: business outcomes are values with a Code, never exceptions."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from flashsale.engine.errors import InvalidInput


class Code(StrEnum):
    OK = "OK"
    SOLD_OUT = "SOLD_OUT"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    SALE_NOT_OPEN = "SALE_NOT_OPEN"
    UNKNOWN_SALE = "UNKNOWN_SALE"
    UNKNOWN_SKU = "UNKNOWN_SKU"
    UNKNOWN_SUPPLIER = "UNKNOWN_SUPPLIER"
    UNKNOWN_HOLD = "UNKNOWN_HOLD"
    HOLD_EXPIRED = "HOLD_EXPIRED"
    HOLD_RELEASED = "HOLD_RELEASED"
    HOLD_CONFIRMED = "HOLD_CONFIRMED"
    NOT_CONFIRMED = "NOT_CONFIRMED"
    INVALID_WRITEOFF = "INVALID_WRITEOFF"
    ALREADY_EXTENDED = "ALREADY_EXTENDED"
    IDEMPOTENCY_CONFLICT = "IDEMPOTENCY_CONFLICT"
    ALREADY_LOADED = "ALREADY_LOADED"
    STALE_VERSION = "STALE_VERSION"
    STOCK_COMMITTED = "STOCK_COMMITTED"
    BAD_TRANSITION = "BAD_TRANSITION"
    NOT_ADMITTED = "NOT_ADMITTED"
    TOKEN_EXHAUSTED = "TOKEN_EXHAUSTED"
    TOKEN_EXPIRED = "TOKEN_EXPIRED"
    NO_WAITING_ROOM = "NO_WAITING_ROOM"
    NOT_LEADER = "NOT_LEADER"
    RATE_LIMITED = "RATE_LIMITED"
    INVALID = "INVALID"  # a script refused its arguments (never reaches a client as such)


@dataclass(frozen=True, slots=True)
class Allocation:
    sku: str
    supplier: str
    qty: int


def parse_allocations(lines: str) -> tuple[Allocation, ...]:
    """Decode a hold's `sku:supplier:qty,...` string (the format of lua/_shared.lua)."""
    out = []
    for part in lines.split(","):
        if part:
            sku, supplier, qty = part.split(":")
            out.append(Allocation(sku, supplier, int(qty)))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class ReserveResult:
    code: Code
    hold_id: str = ""
    expires_at_ms: int = 0
    allocations: tuple[Allocation, ...] = ()
    replay: bool = False
    sku: str = ""
    units: int = 0  # SOLD_OUT: units available; LIMIT_EXCEEDED: units the customer already has
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.code is Code.OK


@dataclass(frozen=True, slots=True)
class HoldOutcome:
    """Answer of confirm, release, compensate: the hold's status after the call."""

    code: Code
    status: str = ""
    replay: bool = False
    at_ms: int = 0


@dataclass(frozen=True, slots=True)
class ExtendResult:
    code: Code
    expires_at_ms: int = 0
    status: str = ""


@dataclass(frozen=True, slots=True)
class SweepResult:
    expired: int
    more: bool


@dataclass(frozen=True, slots=True)
class AdjustResult:
    code: Code
    applied: int = 0
    shortfall: int = 0
    available: int = 0
    replay: bool = False  # made before under the same `once` ref: nothing changed now


@dataclass(frozen=True, slots=True)
class LoadResult:
    code: Code
    version: int = 0
    sku: str = ""
    supplier: str = ""


@dataclass(frozen=True, slots=True)
class SupplierStock:
    supplier: str
    loaded: int
    adjusted: int
    available: int
    reserved: int
    sold: int


@dataclass(frozen=True, slots=True)
class SkuStock:
    sku: str
    loaded: int
    adjusted: int
    available: int
    reserved: int
    sold: int
    suppliers: tuple[SupplierStock, ...]


@dataclass(frozen=True, slots=True)
class SaleState:
    sale_id: str
    status: str
    version: int
    starts_at_ms: int
    ends_at_ms: int
    hold_ttl_ms: int
    extend_ms: int
    per_user_limit: int
    now_ms: int
    open_holds: int
    skus: tuple[SkuStock, ...] = field(default_factory=tuple)

    def sku(self, sku: str) -> SkuStock:
        return next(s for s in self.skus if s.sku == sku)


@dataclass(frozen=True, slots=True)
class HoldView:
    hold_id: str
    customer_id: str
    status: str
    expires_at_ms: int
    created_at_ms: int
    extended: bool
    allocations: tuple[Allocation, ...]
    confirmed_at_ms: int = 0


# --- decoding lua/stock.lua's reply ---------------------------------------------------------


def _ints(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _sku_stock(sku: str, flat: list[str]) -> SkuStock:
    h = _ints(flat)
    sups = tuple(
        SupplierStock(
            supplier=sup,
            loaded=int(h.get(f"loaded:{sup}", 0)),
            adjusted=int(h.get(f"adj:{sup}", 0)),
            available=int(h.get(f"avail:{sup}", 0)),
            reserved=int(h.get(f"resv:{sup}", 0)),
            sold=int(h.get(f"sold:{sup}", 0)),
        )
        for sup in h.get("suppliers", "").split(",")
        if sup
    )
    return SkuStock(
        sku=sku,
        loaded=int(h.get("loaded", 0)),
        adjusted=int(h.get("adjusted", 0)),
        available=int(h.get("available", 0)),
        reserved=int(h.get("reserved", 0)),
        sold=int(h.get("sold", 0)),
        suppliers=sups,
    )


def sale_state(sale_id: str, reply: list[Any]) -> SaleState:
    """lua/stock.lua's reply: {sale hash flat, now_ms, open holds, sku, stock hash flat, ...}."""
    sale = _ints(reply[0])
    skus = tuple(_sku_stock(reply[i], reply[i + 1]) for i in range(3, len(reply), 2))
    return SaleState(
        sale_id=sale_id,
        status=sale.get("status", ""),
        version=int(sale.get("version", 0)),
        starts_at_ms=int(sale.get("starts_at_ms", 0)),
        ends_at_ms=int(sale.get("ends_at_ms", 0)),
        hold_ttl_ms=int(sale.get("hold_ttl_ms", 0)),
        extend_ms=int(sale.get("extend_ms", 0)),
        per_user_limit=int(sale.get("per_user_limit", 0)),
        now_ms=int(reply[1]),
        open_holds=int(reply[2]),
        skus=skus,
    )


def reserve_result(reply: list[Any]) -> ReserveResult:
    """A reserve script's reply as a result; a line the script found invalid raises."""
    code = Code(reply[0])
    if code is Code.INVALID:  # the script's own check of a line; the Python checks come first
        raise InvalidInput("items", str(reply[1]))
    if code is Code.OK:
        return ReserveResult(
            code,
            hold_id=reply[1],
            expires_at_ms=int(reply[2]),
            allocations=parse_allocations(reply[3]),
            replay=bool(reply[4]),
        )
    if code in (Code.SOLD_OUT, Code.LIMIT_EXCEEDED):
        return ReserveResult(code, sku=reply[1], units=int(reply[2]))
    if code is Code.UNKNOWN_SKU:
        return ReserveResult(code, sku=reply[1])
    return ReserveResult(code, detail=str(reply[1]) if len(reply) > 1 else "")
