"""The drop folder: FLASHSALE_FEED_DIR/<supplier>/ watched by the reconciler. A file that has
settled is applied through the feed core (files.py), then moved to done/ with a JSON report, or
to failed/ with a .reason file; a file that failed for want of Redis or PostgreSQL stays and is
tried again. Reconcilers sharing the folder take one supplier each at a time (an advisory lock)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints

from flashsale.engine.errors import EngineUnavailable, InvalidInput
from flashsale.engine.feeds import FeedApplier
from flashsale.engine.keys import ID_PATTERN
from flashsale.engine.settings import Settings
from flashsale.reconciler.backoff import Backoff
from flashsale.reconciler.intake.files import FileRun, load, mtime_as_of
from flashsale.reconciler.intake.records import FeedFileError, format_of
from flashsale.store import feed_leases
from flashsale.store.db import UNAVAILABLE, Connection
from flashsale.store.feeds import FeedNotConfigured, load_feed

logger = logging.getLogger("flashsale.reconciler.feeds")
DONE, FAILED = "done", "failed"
PARTIAL_SUFFIX = ".part"  # written but not complete: an upload in progress, a supplier's copy


@dataclass(frozen=True, slots=True)
class DropConfig:
    root: Path
    database_url: str
    scan_s: float
    settle_s: float
    chunk_records: int

    @classmethod
    def from_settings(cls, settings: Settings) -> DropConfig:
        return cls(
            settings.feed_path,
            settings.local_database_url,
            settings.feed_scan_ms / 1000,
            settings.feed_settle_ms / 1000,
            settings.feed_chunk_records,
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one file: `done`, `failed` (with why) or `retry` (storage away)."""

    path: Path
    status: str
    detail: str = ""
    run: FileRun | None = None


def ready_files(folder: Path, settle_s: float, now: float | None = None) -> list[Path]:
    """The files of a supplier's folder to take now, oldest first: not hidden, not partial,
    unchanged for `settle_s`."""
    now = time.time() if now is None else now
    found = []
    for path in folder.iterdir():
        if not path.is_file() or path.name.startswith(".") or path.name.endswith(PARTIAL_SUFFIX):
            continue
        with contextlib.suppress(FileNotFoundError):  # taken by another reconciler meanwhile
            mtime = path.stat().st_mtime
            if now - mtime >= settle_s:
                found.append((mtime, path))
    return [path for _, path in sorted(found)]


def _stamped(folder: Path, name: str) -> Path:
    folder.mkdir(exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return folder / f"{stamp}-{name}"


def finish(path: Path, outcome: str, note: dict[str, object] | str) -> Path:
    """Moves a processed file to done/ or failed/ of its folder, its report or reason beside."""
    target = _stamped(path.parent / outcome, path.name)
    if isinstance(note, str):
        target.with_name(target.name + ".reason").write_text(note + "\n")
    else:
        target.with_name(target.name + ".json").write_text(json.dumps(note, indent=1) + "\n")
    path.replace(target)
    return target


async def process(
    conn: Connection, applier: FeedApplier, supplier_id: str, path: Path, chunk_records: int
) -> Outcome:
    """One file of one supplier, start to end (the caller holds the supplier's lock)."""
    feed = await load_feed(conn, supplier_id)
    if feed is None:
        return _failed(path, f"supplier {supplier_id} has no feed configured")
    fmt = format_of(path.name) or feed.feed.format
    run = FileRun(supplier_id, fmt, as_of=await asyncio.to_thread(mtime_as_of, path))
    try:
        await load(conn, applier, path, run, chunk_records=chunk_records)
    except FeedFileError as exc:
        return _failed(path, f"{exc} (nothing of the file was applied)")
    except (InvalidInput, FeedNotConfigured) as exc:
        return _failed(path, f"{exc} (chunks before it were applied: {run.deliveries})")
    finish(path, DONE, run.report())
    return Outcome(path, DONE, run=run)


def _failed(path: Path, why: str) -> Outcome:
    finish(path, FAILED, why)
    return Outcome(path, FAILED, why)


class DropWatcher:
    """The reconciler's job (Reconciler(jobs=...)) over the drop folder."""

    def __init__(
        self,
        config: DropConfig,
        applier: FeedApplier,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.config = config
        self.applier = applier
        self.on_outcome = on_outcome
        self._conn: Connection | None = None
        self._backoff = Backoff(200, 10_000)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            wait = self.config.scan_s
            try:
                await self.scan(stop)
                self._backoff.reset()
            except (*UNAVAILABLE, EngineUnavailable) as exc:
                await self._close()
                wait = self._backoff.next_delay_s()
                logger.warning(f"feed drop: storage unavailable ({exc}); retry in {wait:.1f}s")
            except Exception:  # a bug must not stop the folder for good
                await self._close()
                wait = self._backoff.next_delay_s()
                logger.exception("feed drop: unexpected error", extra={"event": "feed.drop_bug"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
        await self._close()

    async def scan(self, stop: asyncio.Event | None = None) -> list[Outcome]:
        """One look at every supplier folder; what became of the files taken."""
        root = self.config.root
        if not root.is_dir():
            return []
        outcomes: list[Outcome] = []
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            if stop is not None and stop.is_set():
                break
            if ID_PATTERN.fullmatch(folder.name):
                files = ready_files(folder, self.config.settle_s)
                if files:
                    outcomes += await self._supplier(folder.name, files)
        return outcomes

    async def _supplier(self, supplier_id: str, files: list[Path]) -> list[Outcome]:
        conn = await self._connection()
        if not await feed_leases.try_lock_files(conn, supplier_id):
            return []  # another reconciler has this supplier's folder
        outcomes = []
        try:
            for path in files:
                if not path.exists():
                    continue  # taken by the reconciler that held the lock before us
                outcome = await process(
                    conn, self.applier, supplier_id, path, self.config.chunk_records
                )
                self._say(outcome)
                outcomes.append(outcome)
        finally:
            await feed_leases.unlock_files(conn, supplier_id)
        return outcomes

    def _say(self, outcome: Outcome) -> None:
        name = f"{outcome.path.parent.name}/{outcome.path.name}"
        if outcome.run is not None:
            r = outcome.run.report()
            counts = " ".join(f"{k}={r[k]}" for k in ("records", "malformed", "deliveries"))
            logger.info(f"feed drop: {name} done: {counts}", extra={"event": "feed.file_done"})
        else:
            logger.warning(
                f"feed drop: {name} failed: {outcome.detail}", extra={"event": "feed.file_failed"}
            )
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    async def _connection(self) -> Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self.config.database_url, timeout=5)
        return self._conn

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)
