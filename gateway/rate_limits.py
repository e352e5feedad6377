"""Who is calling: the client address (X-Forwarded-For only from trusted proxies) and the rate-limit
buckets of a request."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from starlette.types import Scope

from flashsale.engine import keys
from flashsale.engine.rate_limit import Bucket
from flashsale.engine.sale import RateLimitConfig
from flashsale.engine.settings import Settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, raw: str) -> TrustedProxies:
        """`10.0.0.0/8, 192.168.1.7, ::1`; a bad entry fails at start-up, not per request."""
        parts = [p.strip() for p in raw.split(",") if p.strip()]
        try:
            return cls(tuple(ipaddress.ip_network(p, strict=False) for p in parts))
        except ValueError as exc:
            raise ValueError(f"FLASHSALE_TRUSTED_PROXIES: {exc}") from None

    def trusts(self, address: str) -> bool:
        if not self.networks:
            return False
        ip = _ip(address)
        return ip is not None and any(ip in net for net in self.networks)


def _forwarded_for(scope: Scope) -> list[str]:
    """Every X-Forwarded-For hop, first (the original client) to last, over repeated headers."""
    hops: list[str] = []
    for name, value in scope["headers"]:
        if name == b"x-forwarded-for":
            hops += [h.strip() for h in value.decode("latin-1").split(",") if h.strip()]
    return hops


def client_address(scope: Scope, proxies: TrustedProxies) -> str:
    """The peer's address, unless the peer is a trusted proxy: then the nearest hop of
    X-Forwarded-For that is not one (walking from the right: left hops are client-written)."""
    peer = scope.get("client")
    address = str(peer[0]) if peer else "unknown"
    if not proxies.trusts(address):
        return address
    for hop in reversed(_forwarded_for(scope)):
        if _ip(hop) is None:
            break  # a garbled hop: nothing left of it can be believed
        address = str(_ip(hop))
        if not proxies.trusts(address):
            return address
    return address


def _pick(value: int | None, default: int) -> int:
    return default if value is None else value


@dataclass(frozen=True, slots=True)
class Limits:
    """A sale's effective limits: its rate_limit, else the settings; 0 = that limit is off."""

    per_client_per_s: int
    burst: int
    per_sale_per_s: int

    @classmethod
    def of(cls, config: RateLimitConfig, settings: Settings) -> Limits:
        per_client = _pick(config.per_client_per_s, settings.rate_per_client_per_s)
        burst = _pick(config.burst, settings.rate_burst) or per_client
        per_sale = _pick(config.per_sale_per_s, settings.rate_per_sale_per_s)
        return cls(per_client, burst, per_sale)

    @property
    def on(self) -> bool:
        return self.per_client_per_s > 0 or self.per_sale_per_s > 0


def buckets(sale_id: str, customer_id: str, address: str, limits: Limits) -> list[Bucket]:
    """The customer's and the address's buckets, and the sale's; a rate of 0 is no bucket."""
    out = []
    if limits.per_client_per_s > 0:
        rate, burst = limits.per_client_per_s, limits.burst
        out.append(Bucket(keys.rate_bucket(sale_id, "c", customer_id), rate, burst))
        out.append(Bucket(keys.rate_bucket(sale_id, "a", address), rate, burst))
    if limits.per_sale_per_s > 0:
        rate = limits.per_sale_per_s
        out.append(Bucket(keys.rate_bucket(sale_id, "s", "all"), rate, rate))
    return out
