"""`flashsale feeds load FILE --supplier S` and `flashsale feeds replay --delivery ID`: the
async bodies (flashsale/cli.py parses). Exit codes: 0 done; 1 the file is broken (nothing of it
applied); 2 bad input (no such supplier or feed, an unreadable file, a format that cannot be
told, no such delivery); 3 Redis or PostgreSQL unavailable."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import TextIO

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints

from flashsale.engine import Engine
from flashsale.engine.errors import EngineUnavailable, InvalidInput
from flashsale.engine.settings import Settings
from flashsale.reconciler.cli import engine_for
from flashsale.reconciler.intake.files import FileRun, load, mtime_as_of
from flashsale.reconciler.intake.records import FeedFileError, format_of, timestamp
from flashsale.store.db import UNAVAILABLE, Connection
from flashsale.store.feed_intake import DeliveryNotFound, replay
from flashsale.store.feeds import FeedNotConfigured, load_feed
from flashsale.store.migrate import migrate

OK, BROKEN, BAD_INPUT, UNAVAILABLE_EXIT = 0, 1, 2, 3


class Bad(Exception):
    """Bad input of the command: said on stderr, exit 2."""


class ProgressLine:
    """`records, rate, % of bytes` on stderr: redrawn in place on a terminal, a line every
    `every_s` otherwise (a log keeps a few lines, not thousands)."""

    def __init__(self, out: TextIO = sys.stderr, every_s: float | None = None) -> None:
        self.out = out
        self.tty = out.isatty()
        self.every_s = every_s if every_s is not None else (0.2 if self.tty else 2.0)
        self.started = time.monotonic()
        self.shown_at = float("-inf")

    def __call__(self, run: FileRun, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.shown_at < self.every_s:
            return
        self.shown_at = now
        line = self.text(run, now - self.started)
        end = "\n" if final or not self.tty else ""
        self.out.write(("\r\x1b[K" if self.tty else "") + line + end)
        self.out.flush()

    @staticmethod
    def text(run: FileRun, elapsed_s: float) -> str:
        share = 100 * run.bytes_read / run.size_bytes if run.size_bytes else 100.0
        if run.phase == "check":
            done, what = run.records + run.malformed, "read"
        else:
            done, what = run.records_sent, "applied"
        rate = done / elapsed_s if elapsed_s > 0 else 0.0
        return (
            f"feeds load {run.supplier_id}: {run.phase} {share:5.1f}% of {_size(run.size_bytes)}, "
            f"{done} records {what} ({rate:.0f}/s), {run.malformed} malformed, "
            f"{run.deliveries} deliveries"
        )


def _size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    raise AssertionError


def summary(run: FileRun) -> str:
    r = run.report()
    counts = ", ".join(f"{k} {r[k]}" for k in ("applied", "stale", "quarantined", "unknown"))
    again = f" ({r['duplicate_deliveries']} received before)" if r["duplicate_deliveries"] else ""
    return (
        f"loaded {r['records']} records of supplier {r['supplier']} in {r['deliveries']} "
        f"deliveries{again}: {counts}, duplicates {r['duplicates']}; malformed rows "
        f"{r['malformed']}; sha256 {r['sha256'][:16]}"
    )


def _opened(path: Path) -> None:
    """Bad unless the file can be opened and read."""
    try:
        with path.open("rb") as f:
            f.read(1)
    except IsADirectoryError:
        raise Bad(f"{path} is a directory") from None
    except OSError as exc:
        raise Bad(f"cannot read {path}: {exc.strerror or exc}") from None


async def _connect(settings: Settings) -> Connection:
    conn = await asyncpg.connect(settings.local_database_url, timeout=10)
    await migrate(conn)
    return conn


async def _load(settings: Settings, args: argparse.Namespace, engine: Engine) -> FileRun:
    path = Path(args.file)
    await asyncio.to_thread(_opened, path)
    as_of = None
    if args.as_of:
        as_of = timestamp(args.as_of)
        if as_of is None:
            raise Bad(f"--as-of {args.as_of!r} is not an ISO 8601 time with a zone")
    conn = await _connect(settings)
    try:
        feed = await load_feed(conn, args.supplier)
        if feed is None:
            raise Bad(f"supplier {args.supplier} has no feed (PUT /v1/admin/suppliers/... first)")
        fmt = args.format or format_of(path.name) or feed.feed.format
        run = FileRun(args.supplier, fmt, as_of=as_of or await asyncio.to_thread(mtime_as_of, path))
        show = ProgressLine()
        chunk = args.chunk or settings.feed_chunk_records
        try:
            await load(conn, engine, path, run, chunk_records=chunk, progress=show)
        finally:
            show(run, final=True)
        return run
    finally:
        await conn.close()


async def load_main(settings: Settings, args: argparse.Namespace) -> int:
    try:
        async with engine_for(settings) as engine:
            run = await _load(settings, args, engine)
    except Bad as exc:
        print(f"feeds load: {exc}", file=sys.stderr)
        return BAD_INPUT
    except (InvalidInput, FeedNotConfigured) as exc:
        print(f"feeds load: {exc}", file=sys.stderr)
        return BAD_INPUT
    except FeedFileError as exc:
        print(f"feeds load: {args.file}: {exc}; nothing of it was applied", file=sys.stderr)
        return BROKEN
    except (*UNAVAILABLE, EngineUnavailable) as exc:
        print(f"feeds load: storage unavailable: {type(exc).__name__}: {exc}", file=sys.stderr)
        return UNAVAILABLE_EXIT
    print(summary(run))
    for row in run.malformed_rows:
        print(f"  line {row.line}: {row.reason}")
    if run.malformed > len(run.malformed_rows):
        print(f"  ... and {run.malformed - len(run.malformed_rows)} more malformed rows")
    return OK


async def replay_main(settings: Settings, args: argparse.Namespace) -> int:
    try:
        async with engine_for(settings) as engine:
            conn = await _connect(settings)
            try:
                receipt = await replay(conn, engine, args.delivery, args.supplier)
            finally:
                await conn.close()
    except (DeliveryNotFound, InvalidInput, FeedNotConfigured) as exc:
        print(f"feeds replay: {exc}", file=sys.stderr)
        return BAD_INPUT
    except (*UNAVAILABLE, EngineUnavailable) as exc:
        print(f"feeds replay: storage unavailable: {type(exc).__name__}: {exc}", file=sys.stderr)
        return UNAVAILABLE_EXIT
    counts = ", ".join(f"{k} {v}" for k, v in receipt.counts().items())
    print(f"replayed delivery {args.delivery}: {counts}; offers set in {receipt.sales} sales")
    return OK
