"""One entry to the stock-file readers, and the tap that counts (and hashes) the bytes they
read: the progress line's share of the file, and the content hash that names its deliveries."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator
from typing import BinaryIO

from flashsale.engine.feeds import FORMATS
from flashsale.reconciler.intake.csvstream import read_csv
from flashsale.reconciler.intake.jsonstream import read_json
from flashsale.reconciler.intake.records import Parsed
from flashsale.reconciler.intake.xmlstream import read_xml

Reader = Callable[[BinaryIO, str | None], Iterator[Parsed]]
READERS: dict[str, Reader] = {"csv": read_csv, "json": read_json, "xml": read_xml}
BUFFER_BYTES = 65_536
assert tuple(READERS) == FORMATS


class Tap(io.RawIOBase):
    """Reads through to `source`, counting the bytes and, with `digest`, hashing them."""

    def __init__(self, source: BinaryIO, digest: hashlib._Hash | None = None) -> None:
        self.source = source
        self.digest = digest
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.source.read(len(buffer))
        size = len(data)
        buffer[:size] = data
        self.bytes_read += size
        if self.digest is not None:
            self.digest.update(data)
        return size


def read_records(source: BinaryIO, fmt: str, file_as_of: str | None = None) -> Iterator[Parsed]:
    """Every record or malformed row of a stock file, in file order; FeedFileError when the
    file as a whole cannot be read. `file_as_of` stands for rows (and files) that carry none."""
    reader = READERS[fmt]
    yield from reader(io.BufferedReader(Tap(source), BUFFER_BYTES), file_as_of)


def tapped(source: BinaryIO, digest: hashlib._Hash | None = None) -> tuple[BinaryIO, Tap]:
    """`source` behind a Tap, buffered as the readers want it; the Tap tells the bytes read."""
    tap = Tap(source, digest)
    return io.BufferedReader(tap, BUFFER_BYTES), tap
