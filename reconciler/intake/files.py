"""A stock file to deliveries. The file is read twice as a stream: first whole, hashing it and
checking that it parses (a broken file goes to failed/ with nothing applied), then again in
chunks of records, each handed to the feed core as one delivery whose id is made of the content
hash and the chunk's number. A run killed mid-file and started again sends the same ids, and
the core answers the chunks it has as duplicates: nothing is applied twice."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from flashsale.engine.feeds import MAX_DELIVERY_RECORDS, Delivery, FeedApplier, FeedRecord
from flashsale.reconciler.intake.parse import read_records, tapped
from flashsale.reconciler.intake.records import FeedFileError, Malformed
from flashsale.store.db import Connection
from flashsale.store.feed_intake import Receipt, receive

MAX_LISTED = 100  # malformed rows kept with their line for the report; all are counted
OUTCOMES = ("applied", "stale", "quarantined", "unknown", "duplicates")


def delivery_id(prefix: str, chunk: int) -> str:
    """`<prefix>-<chunk>`; a file's prefix is `file-<40 hex of its sha256>`: the same bytes,
    the same ids."""
    return f"{prefix}-{chunk}"


def mtime_as_of(path: Path) -> str:
    """The time a file was last written, the as_of of rows and files that carry none."""
    moment = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.UTC)
    return moment.isoformat(timespec="milliseconds")


@dataclass
class FileRun:
    """One file's way through: what the progress line shows and the report keeps."""

    supplier_id: str
    fmt: str
    source: str = "file"
    as_of: str | None = None  # for rows (and files) that carry none
    id_prefix: str = ""  # of its deliveries' ids; "" = file-<40 hex of the sha256>
    size_bytes: int = 0
    sha256: str = ""
    phase: str = "check"  # check (hash and parse) -> apply -> done
    bytes_read: int = 0  # of the current phase
    records: int = 0  # valid records of the file (known once checked)
    records_sent: int = 0
    malformed: int = 0
    malformed_rows: list[Malformed] = field(default_factory=list)
    deliveries: int = 0
    duplicate_deliveries: int = 0  # chunks the core had already received (a re-run)
    counts: Counter[str] = field(default_factory=Counter)

    def take(self, receipt: Receipt, sent: int) -> None:
        self.deliveries += 1
        self.records_sent += sent
        if receipt.duplicate:
            self.duplicate_deliveries += 1
        for name, value in receipt.counts().items():
            self.counts[name] += value

    def report(self) -> dict[str, Any]:
        return {
            "supplier": self.supplier_id,
            "format": self.fmt,
            "bytes": self.size_bytes,
            "sha256": self.sha256,
            "records": self.records,
            "malformed": self.malformed,
            "malformed_rows": [{"line": m.line, "reason": m.reason} for m in self.malformed_rows],
            "deliveries": self.deliveries,
            "duplicate_deliveries": self.duplicate_deliveries,
            **{name: self.counts[name] for name in OUTCOMES},
        }


Progress = Callable[[FileRun], None]


def check(path: Path, run: FileRun, progress: Progress | None = None) -> None:
    """The first pass (blocking: run it in a thread): hash the bytes, count records and
    malformed rows; FeedFileError when the file as a whole cannot be read."""
    digest = hashlib.sha256()
    run.size_bytes = path.stat().st_size
    with path.open("rb") as raw:
        stream, tap = tapped(raw, digest)
        for n, parsed in enumerate(read_records(stream, run.fmt, run.as_of)):
            if isinstance(parsed, Malformed):
                run.malformed += 1
                if len(run.malformed_rows) < MAX_LISTED:
                    run.malformed_rows.append(parsed)
            else:
                run.records += 1
            if progress is not None and n % 4096 == 0:
                run.bytes_read = tap.bytes_read
                progress(run)
        run.bytes_read = tap.bytes_read
    run.sha256 = digest.hexdigest()


def _chunks(stream: BinaryIO, run: FileRun, size: int) -> Iterator[list[FeedRecord]]:
    chunk: list[FeedRecord] = []
    for parsed in read_records(stream, run.fmt, run.as_of):
        if isinstance(parsed, FeedRecord):
            chunk.append(parsed)
            if len(chunk) == size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


async def deliver(
    conn: Connection,
    applier: FeedApplier,
    path: Path,
    run: FileRun,
    *,
    chunk_records: int,
    progress: Progress | None = None,
) -> None:
    """The second pass: chunks of at most `chunk_records` records, one delivery each, in file
    order. Parsing runs in a thread, a chunk at a time, so a big file does not stall the event
    loop of a reconciler that also flushes sales."""
    size = max(1, min(chunk_records, MAX_DELIVERY_RECORDS))
    run.phase, run.bytes_read = "apply", 0
    with path.open("rb") as raw:
        stream, tap = tapped(raw)
        chunks = _chunks(stream, run, size)
        number = 0
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            ids = delivery_id(run.id_prefix or f"file-{run.sha256[:40]}", number)
            delivery = Delivery(run.supplier_id, ids, run.source, run.as_of, chunk)
            run.take(await receive(conn, applier, delivery), len(chunk))
            run.bytes_read = tap.bytes_read
            number += 1
            if progress is not None:
                progress(run)
    run.phase = "done"


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


async def load(
    conn: Connection,
    applier: FeedApplier,
    path: Path,
    run: FileRun,
    *,
    chunk_records: int,
    progress: Progress | None = None,
) -> FileRun:
    """Both passes; FeedFileError (nothing applied) when the file is broken or changed between
    them (the ids of its chunks would no longer name their content)."""
    before = _stamp(path)
    await asyncio.to_thread(check, path, run, progress)
    if _stamp(path) != before:
        raise FeedFileError(0, "the file changed while it was read; drop it again when complete")
    await deliver(conn, applier, path, run, chunk_records=chunk_records, progress=progress)
    return run
