"""What one gateway worker owns: settings, the Redis engine, the PostgreSQL pool and the sale
records over it, the customer-token verifier, the rate limits, its metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from flashsale.engine import Engine, Settings
from flashsale.engine.rate_limit import RateLimiter
from flashsale.engine.results import SaleState
from flashsale.gateway.feed_status import FeedViews
from flashsale.gateway.feed_turns import SupplierTurns
from flashsale.gateway.identity import CustomerTokens
from flashsale.gateway.metrics import RequestMetrics
from flashsale.gateway.rate_limits import RateLimits
from flashsale.gateway.sale_records import SaleRecords

PUBLIC_VIEW_TTL_S = 1.0


@dataclass
class GatewayState:
    settings: Settings
    engine: Engine
    pool: Any  # asyncpg.Pool (asyncpg ships no type hints)
    records: SaleRecords
    customers: CustomerTokens
    limits: RateLimits
    metrics: RequestMetrics
    feeds: FeedViews  # supplier feed freshness and health, from PostgreSQL
    feed_turns: SupplierTurns = field(default_factory=SupplierTurns)  # webhook deliveries
    _views: dict[str, tuple[float, SaleState | None]] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings, engine: Engine, pool: Any) -> GatewayState:
        """Everything a worker needs; bad settings (a malformed key list, an unreadable JWKS)
        fail here, at start-up, not on a request."""
        metrics = RequestMetrics()
        records = SaleRecords(pool)
        limits = RateLimits(settings, RateLimiter(engine), records)
        customers = CustomerTokens.from_settings(settings)
        return cls(settings, engine, pool, records, customers, limits, metrics, FeedViews(pool))

    async def cached_stock(self, sale_id: str) -> SaleState | None:
        """A sale's stock at most PUBLIC_VIEW_TTL_S old: a crowd refreshing the sale page costs
        Redis one read per second per worker, not one per request."""
        now = time.monotonic()
        hit = self._views.get(sale_id)
        if hit is not None and now - hit[0] < PUBLIC_VIEW_TTL_S:
            return hit[1]
        state = await self.engine.stock(sale_id)
        if len(self._views) > 10_000:
            self._views.clear()
        self._views[sale_id] = (now, state)
        return state
