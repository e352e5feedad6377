"""Sale records from PostgreSQL cached per worker: waiting-room and rate-limit settings."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from flashsale.engine.errors import EngineUnavailable
from flashsale.engine.sale import SaleRecord
from flashsale.gateway.cache import Cached
from flashsale.store import sales

RECORD_FRESH_S = 3.0
RECORD_STALE_S = 30.0
LOAD_TIMEOUT_S = 0.5


class SaleRecords:
    """A sale's record at most RECORD_FRESH_S old (None: PostgreSQL does not know the sale)."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._cache: Cached[str, SaleRecord | None] = Cached(
            self._load, RECORD_FRESH_S, RECORD_STALE_S
        )

    async def get(self, sale_id: str) -> SaleRecord | None:
        return await self._cache.get(sale_id)

    async def _load(self, sale_id: str) -> SaleRecord | None:
        # Bounded: the checkout path asks for rate limits here, and a PostgreSQL that hangs must
        # cost it half a second at most (it then uses the settings' defaults).
        try:
            async with asyncio.timeout(LOAD_TIMEOUT_S), self._pool.acquire() as conn:
                found = await sales.load_sale_record(conn, sale_id)
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            raise EngineUnavailable(f"postgresql call failed: {exc!r}") from exc
        return found[0] if found else None

    async def room_sale_ids(self) -> list[str]:
        """Sales with a waiting room that are not closed or over."""
        try:
            async with self._pool.acquire() as conn:
                return await sales.room_sale_ids(conn)
        except (OSError, asyncpg.PostgresError) as exc:
            raise EngineUnavailable(f"postgresql call failed: {exc}") from exc
