"""The poller: every supplier whose feed kind is `poll` is asked for its stock every interval_s,
with If-None-Match / If-Modified-Since from the last good answer (a 304 is nothing to do), a
timeout, and after errors a capped exponential backoff with full jitter. Reconcilers share the
schedule in PostgreSQL (store/feed_leases.py): one fetch in flight per supplier, one per
interval, whoever makes it. A 200's body is spooled to disk (capped) and applied like a file."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import logging
import random
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx

from flashsale.engine.errors import EngineUnavailable, InvalidInput
from flashsale.engine.feeds import FeedApplier
from flashsale.engine.settings import Settings
from flashsale.reconciler.backoff import Backoff, full_jitter_ms
from flashsale.reconciler.intake.files import FileRun, load
from flashsale.reconciler.intake.records import FeedFileError, format_of
from flashsale.store import feed_leases
from flashsale.store.db import UNAVAILABLE, Connection
from flashsale.store.feeds import (
    FeedNotConfigured,
    SupplierFeed,
    feeds_of_kind,
    poll_state,
    record_poll,
)

logger = logging.getLogger("flashsale.reconciler.feeds")
RETRY_BASE_MS = 1_000
LIST_REFRESH_S = 5.0  # how often the list of polled suppliers is read again
APPLY_MARGIN_MS = 120_000  # a lease outlasts the fetch by this much: time to apply the body


@dataclass(frozen=True, slots=True)
class PollConfig:
    database_url: str
    timeout_s: float
    max_bytes: int
    backoff_cap_ms: int
    chunk_records: int
    tick_s: float = 0.1  # how often due polls are looked for
    only: frozenset[str] | None = None  # these suppliers alone (None: every poll feed)
    apply_margin_ms: int = APPLY_MARGIN_MS

    @classmethod
    def from_settings(cls, settings: Settings) -> PollConfig:
        return cls(
            settings.local_database_url,
            settings.feed_poll_timeout_ms / 1000,
            settings.feed_poll_max_bytes,
            settings.feed_poll_backoff_cap_ms,
            settings.feed_chunk_records,
        )

    @property
    def lease_ms(self) -> int:
        return int(self.timeout_s * 1000) + self.apply_margin_ms


@dataclass(frozen=True, slots=True)
class PollResult:
    """One poll: `status` is `applied`, `not_modified` or `error` (with why)."""

    supplier_id: str
    status: str
    detail: str = ""
    run: FileRun | None = None


class PollError(Exception):
    """A poll that brought nothing usable: recorded for feed health, retried after a backoff."""


def retry_ms(
    failures: int, interval_s: int, cap_ms: int, rand: Callable[[], float] = random.random
) -> float:
    """The wait after `failures` failed polls in a row: full jitter over a window that doubles
    from RETRY_BASE_MS up to the larger of the cap and the interval."""
    return full_jitter_ms(RETRY_BASE_MS, max(cap_ms, interval_s * 1000), failures - 1, rand)


class Poller:
    """The reconciler's job (Reconciler(jobs=...)) over the suppliers with kind `poll`."""

    def __init__(
        self,
        config: PollConfig,
        applier: FeedApplier,
        client: httpx.AsyncClient,
        on_poll: Callable[[PollResult], None] | None = None,
    ) -> None:
        self.config = config
        self.applier = applier
        self.client = client
        self.on_poll = on_poll
        self._pool: asyncpg.Pool | None = None
        self._feeds: list[SupplierFeed] = []
        self._listed_at = float("-inf")
        self._backoff = Backoff(200, 10_000)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                wait = self.config.tick_s
                try:
                    await self.tick()
                    self._backoff.reset()
                except (*UNAVAILABLE, EngineUnavailable) as exc:
                    wait = self._backoff.next_delay_s()
                    logger.warning(
                        f"feed poll: PostgreSQL unavailable ({exc}); retry in {wait:.1f}s"
                    )
                except Exception:  # a bug must not stop every supplier's polls for good
                    wait = self._backoff.next_delay_s()
                    logger.exception(
                        "feed poll: unexpected error", extra={"event": "feed.poll_bug"}
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
        finally:
            await self.close()

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def tick(self) -> list[PollResult]:
        """Every due poll this reconciler could claim, made concurrently."""
        pool = await self._pg()
        loop = asyncio.get_running_loop()
        if loop.time() - self._listed_at >= LIST_REFRESH_S:
            async with pool.acquire() as conn:
                self._feeds = await feeds_of_kind(conn, "poll")
            self._listed_at = loop.time()
        only = self.config.only
        due = [f for f in self._feeds if f.feed.url and (only is None or f.supplier_id in only)]
        polls = [self._maybe_poll(pool, feed) for feed in due]
        return [r for r in await asyncio.gather(*polls) if r is not None]

    async def _maybe_poll(self, pool: asyncpg.Pool, feed: SupplierFeed) -> PollResult | None:
        async with pool.acquire() as conn:
            claim = await feed_leases.claim(conn, feed.supplier_id, self.config.lease_ms)
            if claim is None:
                return None
            async with self._renewing(pool, feed.supplier_id):
                result = await self.poll(conn, feed, claim.due_ms)
            interval_ms = feed.feed.interval_s * 1000
            if result.status == "error":
                wait = retry_ms(
                    claim.failures + 1, feed.feed.interval_s, self.config.backoff_cap_ms
                )
                await feed_leases.failed(conn, feed.supplier_id, int(wait))
            else:
                await feed_leases.succeeded(conn, feed.supplier_id, interval_ms)
        if self.on_poll is not None:
            self.on_poll(result)
        return result

    @contextlib.asynccontextmanager
    async def _renewing(self, pool: asyncpg.Pool, supplier_id: str) -> AsyncIterator[None]:
        """The lease moved on every third of its length while the poll runs, so a body that
        takes longer than the lease to apply does not let a second poll start."""
        lease_ms = self.config.lease_ms

        async def renew() -> None:
            while True:
                await asyncio.sleep(lease_ms / 3000)
                try:
                    async with pool.acquire() as conn:
                        await feed_leases.renew(conn, supplier_id, lease_ms)
                except UNAVAILABLE as exc:
                    logger.warning(f"feed poll: {supplier_id}: lease not renewed ({exc})")

        renewer = asyncio.create_task(renew())
        try:
            yield
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def poll(self, conn: Connection, feed: SupplierFeed, due_ms: int) -> PollResult:
        """One GET and what it brought, recorded for the feed's health."""
        sid = feed.supplier_id
        state = await poll_state(conn, sid)
        headers = {}
        if state is not None and state.etag:
            headers["If-None-Match"] = state.etag
        if state is not None and state.last_modified:
            headers["If-Modified-Since"] = state.last_modified
        try:
            with tempfile.TemporaryDirectory(prefix="flashsale-poll-") as spool:
                result = await self._fetch(conn, feed, headers, Path(spool) / "body", due_ms)
        except (PollError, FeedFileError, InvalidInput, FeedNotConfigured, httpx.HTTPError) as exc:
            why = f"{type(exc).__name__}: {exc}"[:500]
            await record_poll(conn, sid, error=why)
            logger.warning(f"feed poll: {sid}: {why}", extra={"event": "feed.poll_error"})
            return PollResult(sid, "error", why)
        return result

    async def _fetch(
        self,
        conn: Connection,
        feed: SupplierFeed,
        headers: dict[str, str],
        spool: Path,
        due_ms: int,
    ) -> PollResult:
        sid = feed.supplier_id
        timeout = httpx.Timeout(self.config.timeout_s)
        async with self.client.stream("GET", feed.feed.url, headers=headers, timeout=timeout) as r:
            etag, modified = r.headers.get("etag"), r.headers.get("last-modified")
            if r.status_code == 304:
                await record_poll(
                    conn,
                    sid,
                    etag=etag or headers.get("If-None-Match"),
                    last_modified=modified or headers.get("If-Modified-Since"),
                )
                return PollResult(sid, "not_modified")
            if r.status_code != 200:
                raise PollError(f"HTTP {r.status_code} from {feed.feed.url}")
            digest = await self._spool(r, spool)
            fmt = format_of(r.headers.get("content-type", "")) or feed.feed.format
        prefix = f"poll-{due_ms}-{digest[:16]}"  # a poll retried after a crash: the same ids
        run = FileRun(sid, fmt, "poll", _now_iso(), prefix)
        await load(conn, self.applier, spool, run, chunk_records=self.config.chunk_records)
        await record_poll(conn, sid, etag=etag, last_modified=modified)
        return PollResult(sid, "applied", run=run)

    async def _spool(self, response: httpx.Response, spool: Path) -> str:
        """The body to a file, never more than max_bytes; its sha256."""
        digest, size = hashlib.sha256(), 0
        with spool.open("wb") as out:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self.config.max_bytes:
                    raise PollError(f"body larger than {self.config.max_bytes} bytes")
                digest.update(chunk)
                out.write(chunk)
        return digest.hexdigest()

    async def _pg(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self.config.database_url, min_size=0, max_size=4, command_timeout=60
            )
        return self._pool


def _now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
