"""What one gateway worker owns: settings, the Redis engine, the PostgreSQL pool, its metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from flashsale.engine import Engine, Settings
from flashsale.engine.results import SaleState
from flashsale.gateway.metrics import Metrics

PUBLIC_VIEW_TTL_S = 1.0


@dataclass
class GatewayState:
    settings: Settings
    engine: Engine
    pool: Any  # asyncpg.Pool (asyncpg ships no type hints)
    metrics: Metrics = field(default_factory=Metrics)
    _views: dict[str, tuple[float, SaleState | None]] = field(default_factory=dict)

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
