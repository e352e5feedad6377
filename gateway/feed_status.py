"""What the gateway reads about supplier feeds from PostgreSQL, cached per worker: a sale's
freshness for its public view (`stock_as_of`, `updating`) and the feed families of /metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from flashsale.engine.errors import EngineUnavailable
from flashsale.gateway.cache import Cached
from flashsale.gateway.metrics import Sample
from flashsale.store import feeds
from flashsale.store.feeds import FeedHealth, SaleFeedStatus

# What PostgreSQL going away looks like (InterfaceError: a pool closed, a connection lost).
PG_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
LOAD_TIMEOUT_S = 0.5  # the public sale view waits at most this long for PostgreSQL
SALE_FRESH_S, SALE_STALE_S = 2.0, 30.0
HEALTH_FRESH_S, HEALTH_STALE_S = 5.0, 60.0  # an anonymous scrape flood costs one query per 5 s

HELP = {
    "flashsale_feed_update_age_seconds": "Seconds since the supplier's feed was last heard "
    "from: a record applied or a good poll (since it was configured, before either).",
    "flashsale_feed_stale": "1 while the supplier's feed is older than its stale_after_s.",
    "flashsale_feed_last_lag_seconds": "From the newest as_of of the last applied delivery to "
    "its application.",
    "flashsale_feed_deliveries_total": "Feed deliveries by outcome (accepted, duplicate).",
    "flashsale_feed_records_total": "Feed records by outcome (applied, stale, quarantined, "
    "unknown, duplicate).",
    "flashsale_feed_quarantine_open": "Feed records held back for review and not replayed.",
    "flashsale_feed_poll_errors_total": "Polls of the supplier's stock endpoint that failed.",
    "flashsale_feeds_unreadable": "1 when PostgreSQL could not be asked for feed health.",
}


class FeedViews:
    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._sales: Cached[str, SaleFeedStatus] = Cached(self._sale, SALE_FRESH_S, SALE_STALE_S)
        self._health: Cached[str, list[FeedHealth]] = Cached(
            self._all, HEALTH_FRESH_S, HEALTH_STALE_S, max_entries=1
        )

    async def _sale(self, sale_id: str) -> SaleFeedStatus:
        try:
            async with asyncio.timeout(LOAD_TIMEOUT_S), self._pool.acquire() as conn:
                return await feeds.sale_feed_status(conn, sale_id)
        except PG_ERRORS as exc:
            raise EngineUnavailable(f"postgresql call failed: {exc!r}") from exc

    async def _all(self, _: str) -> list[FeedHealth]:
        try:
            async with asyncio.timeout(2 * LOAD_TIMEOUT_S), self._pool.acquire() as conn:
                return await feeds.all_health(conn)
        except PG_ERRORS as exc:
            raise EngineUnavailable(f"postgresql call failed: {exc!r}") from exc

    async def sale(self, sale_id: str) -> SaleFeedStatus | None:
        """None while PostgreSQL cannot say."""
        try:
            return await self._sales.get(sale_id)
        except EngineUnavailable:
            return None

    async def samples(self) -> list[Sample]:
        try:
            found = await self._health.get("")
        except EngineUnavailable:
            return [("flashsale_feeds_unreadable", {}, 1)]
        out: list[Sample] = [("flashsale_feeds_unreadable", {}, 0)]
        for h in found:
            who = {"supplier": h.supplier_id}
            out.append(("flashsale_feed_update_age_seconds", who, h.age_s))
            out.append(("flashsale_feed_stale", who, int(h.stale)))
            if h.last_lag_ms is not None:
                out.append(("flashsale_feed_last_lag_seconds", who, h.last_lag_ms / 1000))
            for outcome, n in h.deliveries.items():
                out.append(("flashsale_feed_deliveries_total", {**who, "outcome": outcome}, n))
            for outcome, n in h.records.items():
                out.append(("flashsale_feed_records_total", {**who, "outcome": outcome}, n))
            out.append(("flashsale_feed_quarantine_open", who, h.quarantine_open))
            out.append(("flashsale_feed_poll_errors_total", who, h.poll_errors))
        return out
