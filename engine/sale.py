"""A sale's configuration as the engine loads it into Redis (PostgreSQL keeps the full record)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from flashsale.engine.errors import InvalidInput
from flashsale.engine.validation import check_id, check_int, check_name, check_return_url

MAX_UNITS = 10**12
CREDIT_POLICY = re.compile(r"none|full|0\.[0-9]{1,12}")
MAX_MS = 2**52


@dataclass(frozen=True, slots=True)
class SupplierStockConfig:
    supplier_id: str
    stock: int
    cost_minor: int = 0
    priority: int = 0


@dataclass(frozen=True, slots=True)
class ItemConfig:
    sku: str
    price_minor: int
    suppliers: tuple[SupplierStockConfig, ...]
    name: str = ""  # shown to shoppers instead of the sku; checked, never loaded into Redis

    def by_priority(self) -> list[SupplierStockConfig]:
        """Lowest priority number first; equal numbers keep the order they were given in."""
        return sorted(self.suppliers, key=lambda s: s.priority)


@dataclass(frozen=True, slots=True)
class SaleConfig:
    sale_id: str
    version: int
    starts_at_ms: int
    ends_at_ms: int  # 0 = no end
    hold_ttl_ms: int
    per_user_limit: int  # units per customer per sku; 0 = no limit
    items: tuple[ItemConfig, ...]
    extend_ms: int = 0  # 0 = the hold TTL again
    waiting_room: bool = False  # checkout needs an admission

    def validate(self) -> None:
        check_id("sale_id", self.sale_id)
        check_int("version", self.version, 1, MAX_MS)
        check_int("starts_at_ms", self.starts_at_ms, 0, MAX_MS)
        check_int("ends_at_ms", self.ends_at_ms, 0, MAX_MS)
        if self.ends_at_ms and self.ends_at_ms <= self.starts_at_ms:
            raise InvalidInput("ends_at_ms", "must be after starts_at_ms")
        check_int("hold_ttl_ms", self.hold_ttl_ms, 1, 86_400_000)
        check_int("extend_ms", self.extend_ms, 0, 86_400_000)
        check_int("per_user_limit", self.per_user_limit, 0, MAX_UNITS)
        if not 1 <= len(self.items) <= 1000:
            raise InvalidInput("items", "must hold 1 to 1000 items")
        skus = [check_id(f"items[{i}].sku", it.sku) for i, it in enumerate(self.items)]
        if len(set(skus)) != len(skus):
            raise InvalidInput("items", "a sku appears twice")
        for i, item in enumerate(self.items):
            self._validate_item(i, item)

    @staticmethod
    def _validate_item(i: int, item: ItemConfig) -> None:
        check_int(f"items[{i}].price_minor", item.price_minor, 0, MAX_UNITS)
        if item.name:
            check_name(f"items[{i}].name", item.name)
        if not 1 <= len(item.suppliers) <= 50:
            raise InvalidInput(f"items[{i}].suppliers", "must hold 1 to 50 suppliers")
        ids = [
            check_id(f"items[{i}].suppliers[{j}].id", s.supplier_id)
            for j, s in enumerate(item.suppliers)
        ]
        if len(set(ids)) != len(ids):
            raise InvalidInput(f"items[{i}].suppliers", "a supplier appears twice")
        for j, sup in enumerate(item.suppliers):
            check_int(f"items[{i}].suppliers[{j}].stock", sup.stock, 0, MAX_UNITS)
            check_int(f"items[{i}].suppliers[{j}].cost_minor", sup.cost_minor, 0, MAX_UNITS)
            check_int(f"items[{i}].suppliers[{j}].priority", sup.priority, -1000, 1000)

    def load_args(self) -> list[str | int]:
        """The ARGV tail of lua/load_sale.lua from ARGV[2] on."""
        args: list[str | int] = [
            self.version,
            self.starts_at_ms,
            self.ends_at_ms,
            self.hold_ttl_ms,
            self.extend_ms or self.hold_ttl_ms,
            self.per_user_limit,
            int(self.waiting_room),
            len(self.items),
        ]
        for item in self.items:
            args += [item.sku, len(item.suppliers)]
            for sup in item.by_priority():
                args += [sup.supplier_id, sup.stock]
        return args


@dataclass(frozen=True, slots=True)
class WaitingRoomConfig:
    enabled: bool = False
    admit_rate_per_s: int = 50
    max_active: int = 500
    token_ttl_s: int = 300


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """None = the settings' default; 0 turns that limit off."""

    per_client_per_s: int | None = None
    burst: int | None = None
    per_sale_per_s: int | None = None


@dataclass(frozen=True, slots=True)
class SaleRecord:
    """A sale as the admin API defines it and PostgreSQL stores it; Redis gets `to_config`."""

    sale_id: str
    name: str
    starts_at_ms: int
    ends_at_ms: int
    hold_ttl_s: int
    per_user_limit: int
    items: tuple[ItemConfig, ...]
    waiting_room: WaitingRoomConfig = WaitingRoomConfig()
    rate_limit: RateLimitConfig = RateLimitConfig()
    return_url: str = ""  # the shop's checkout for a hold, with {hold_id}; "" = none
    # The retailer's credit when a line's margin drops: none, full, or a share "0.<digits>".
    credit_policy: str = "none"

    def validate(self) -> None:
        """What Redis gets, and what only the record keeps for shoppers."""
        self.to_config(1).validate()
        if self.return_url:
            check_return_url("return_url", self.return_url)
        if not CREDIT_POLICY.fullmatch(self.credit_policy):
            raise InvalidInput("credit_policy", "must be none, full or a share 0.<digits>")

    def to_config(self, version: int) -> SaleConfig:
        return SaleConfig(
            sale_id=self.sale_id,
            version=version,
            starts_at_ms=self.starts_at_ms,
            ends_at_ms=self.ends_at_ms,
            hold_ttl_ms=self.hold_ttl_s * 1000,
            per_user_limit=self.per_user_limit,
            items=self.items,
            waiting_room=self.waiting_room.enabled,
        )
