"""Who is calling and how often: the client address (X-Forwarded-For only from trusted proxies,
IPv6 counted per /64), and the token buckets of each route class in Redis.

Each route class has buckets of its own, so a flood of joins cannot drain the checkouts of
admitted buyers: `join`, `checkout` and `hold` (confirm, release, extend) take from Redis
buckets per customer, per client address and per sale; the status poll, which must not cost a
Redis call, takes from a bucket per address in the worker, and the order view from one per
customer.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from dataclasses import dataclass

from starlette.types import Scope

from flashsale.engine import Engine, keys
from flashsale.engine.errors import EngineUnavailable
from flashsale.engine.rate_limit import Bucket, RateLimiter
from flashsale.engine.sale import RateLimitConfig
from flashsale.engine.settings import Settings
from flashsale.gateway.metrics import RATE_LIMIT_UNREADABLE
from flashsale.gateway.problems import Problem, engine_call
from flashsale.gateway.sale_records import SaleRecords

log = logging.getLogger("flashsale.rate_limits")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ROUTE_CLASSES = ("join", "checkout", "hold")
INDEX_FRESH_S = 1.0  # the loaded sales, re-read at most this often
UNKNOWN_S = 1.0  # an id Redis did not hold is answered 404 from memory this long
MAX_UNKNOWN = 100_000
LOG_EVERY_S = 10.0


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


def address_key(address: str) -> str:
    """What a per-address bucket counts: the address, or its /64 for IPv6 (one subscriber
    usually holds a whole /64, so counting single addresses would count nothing)."""
    ip = _ip(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
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


def buckets(
    sale_id: str, route_class: str, customer_id: str | None, address: str, limits: Limits
) -> list[Bucket]:
    """The customer's (when known), the address's and the sale's buckets of one route class; a
    rate of 0 is no bucket."""
    out = []
    if limits.per_client_per_s > 0:
        rate, burst = limits.per_client_per_s, limits.burst
        if customer_id:
            c_key = keys.rate_bucket(sale_id, route_class + ":c", customer_id)
            out.append(Bucket(c_key, rate, burst))
        out.append(Bucket(keys.rate_bucket(sale_id, route_class + ":a", address), rate, burst))
    if limits.per_sale_per_s > 0:
        rate = limits.per_sale_per_s
        out.append(Bucket(keys.rate_bucket(sale_id, route_class + ":s", "all"), rate, rate))
    return out


def too_many(retry_after_s: float) -> Problem:
    retry_s = max(1, math.ceil(retry_after_s))
    return Problem(
        429, "RATE_LIMITED", f"slow down: retry in {retry_s} s", {"Retry-After": str(retry_s)}
    )


class SaleIndex:
    """Which sales Redis holds, as this worker knows it: an id that is not there is answered 404
    without a PostgreSQL query, however many distinct ids a client invents. The loaded sales
    are re-read once a second; an id not among them costs one SISMEMBER, and if Redis does not
    hold it either, it is answered from memory for UNKNOWN_S (a sale created since is seen at
    once, unless someone asked for its id in the second before)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._ids: frozenset[str] = frozenset()
        self._read_at = -math.inf
        self._unknown: dict[str, float] = {}  # id -> until (monotonic)
        self._lock = asyncio.Lock()

    async def known(self, sale_id: str) -> bool:
        now = time.monotonic()
        if now - self._read_at >= INDEX_FRESH_S:
            async with self._lock:
                if time.monotonic() - self._read_at >= INDEX_FRESH_S:
                    self._ids = frozenset(await engine_call(self._engine.sale_ids()))
                    self._read_at = time.monotonic()
        if sale_id in self._ids:
            return True
        if self._unknown.get(sale_id, -math.inf) > now:
            return False
        if await engine_call(self._engine.sale_loaded(sale_id)):
            self._ids |= {sale_id}
            return True
        if len(self._unknown) >= MAX_UNKNOWN:
            self._unknown.clear()
        self._unknown[sale_id] = now + UNKNOWN_S
        return False


class LocalBuckets:
    """Token buckets kept in the worker (no Redis), one per key (a client address, a
    customer): for routes that must stay cheap, the status poll and the order view."""

    def __init__(self, rate_per_s: int, burst: int, max_entries: int = 100_000) -> None:
        self.rate_per_s = rate_per_s
        self.burst = max(burst, 1)
        self.max_entries = max_entries
        self._levels: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)

    def take(self, key: str) -> float:
        """0 when a token was taken, else the seconds until one comes back."""
        now = time.monotonic()
        tokens, at = self._levels.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate_per_s)
        if tokens < 1:
            self._levels[key] = (tokens, now)
            return (1 - tokens) / self.rate_per_s
        if len(self._levels) >= self.max_entries:
            self._levels.clear()
        self._levels[key] = (tokens - 1, now)
        return 0.0


class RateLimits:
    """What a route asks before it acts: is the sale known, and may this caller go on?"""

    def __init__(
        self,
        settings: Settings,
        limiter: RateLimiter,
        records: SaleRecords,
    ) -> None:
        self.settings = settings
        self.limiter = limiter
        self.records = records
        self.proxies = TrustedProxies.parse(settings.trusted_proxies)
        self.index = SaleIndex(limiter.engine)
        self.status = LocalBuckets(settings.rate_status_per_s, settings.rate_status_burst)
        self.orders = LocalBuckets(settings.rate_order_per_s, settings.rate_order_burst)
        self._logged_at = -math.inf

    def address(self, scope: Scope) -> str:
        return address_key(client_address(scope, self.proxies))

    async def take(
        self, scope: Scope, sale_id: str, route_class: str, customer_id: str | None
    ) -> None:
        """404 for a sale Redis does not hold; 429 when a bucket of the route class is empty.
        `customer_id` None (the admin; dev mode without a token): no customer bucket."""
        if not await self.index.known(sale_id):
            raise Problem(404, "NOT_FOUND", f"no sale {sale_id}")
        limits = Limits.of(await self._config(sale_id), self.settings)
        if not limits.on:
            return
        wanted = buckets(sale_id, route_class, customer_id, self.address(scope), limits)
        decision = await engine_call(self.limiter.rate_limit(wanted))
        if not decision.allowed:
            raise too_many(decision.retry_after_ms / 1000)

    async def _config(self, sale_id: str) -> RateLimitConfig:
        """The sale's limits; when PostgreSQL cannot say, the settings' defaults, counted in
        /metrics and logged (never silently)."""
        try:
            record = await self.records.get(sale_id)
        except EngineUnavailable as exc:
            RATE_LIMIT_UNREADABLE.inc()
            if time.monotonic() - self._logged_at >= LOG_EVERY_S:
                self._logged_at = time.monotonic()
                log.warning("rate limits of %s unreadable, using the defaults: %s", sale_id, exc)
            return RateLimitConfig()
        return record.rate_limit if record else RateLimitConfig()

    def take_status(self, scope: Scope) -> None:
        """The status poll's bucket of the client address (off unless configured)."""
        if self.status.rate_per_s > 0:
            wait_s = self.status.take(self.address(scope))
            if wait_s:
                raise too_many(wait_s)

    def take_order(self, scope: Scope, customer_id: str) -> None:
        """The order view's bucket of the customer (of the address, for the admin): every view
        costs PostgreSQL queries."""
        if self.orders.rate_per_s > 0:
            wait_s = self.orders.take(customer_id or "@" + self.address(scope))
            if wait_s:
                raise too_many(wait_s)
