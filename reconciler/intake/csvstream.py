"""CSV stock files as a stream: a header naming supplier_sku, on_hand and optionally as_of, then
one record a row; only one line (of bounded length) is in memory at a time."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import BinaryIO

from flashsale.reconciler.intake.records import (
    FeedFileError,
    Malformed,
    Parsed,
    record,
)

MAX_LINE_BYTES = 65_536  # a longer line is one malformed row, read past without keeping it
REQUIRED = ("supplier_sku", "on_hand")


class _Lines:
    """The file's lines for csv.reader, decoded one by one: a line longer than MAX_LINE_BYTES
    or not UTF-8 is replaced by an empty line (the reader sees a blank row) and its number kept
    in `bad` with why, so one bad line is one malformed row."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.number = 0
        self.bad: dict[int, str] = {}

    def __iter__(self) -> Iterator[str]:
        while line := self.stream.readline(MAX_LINE_BYTES):
            self.number += 1
            if len(line) == MAX_LINE_BYTES and not line.endswith(b"\n"):
                self._skip_rest()
                self.bad[self.number] = f"line longer than {MAX_LINE_BYTES} bytes"
                yield "\n"
                continue
            try:
                text = line.decode("utf-8-sig" if self.number == 1 else "utf-8")
            except UnicodeDecodeError:
                self.bad[self.number] = "not UTF-8"
                text = "\n"
            yield text

    def _skip_rest(self) -> None:
        while part := self.stream.readline(MAX_LINE_BYTES):
            if part.endswith(b"\n"):
                return


def _columns(header: list[str], line: int) -> dict[str, int]:
    names = [name.strip().lower() for name in header]
    missing = [name for name in REQUIRED if name not in names]
    if missing:
        raise FeedFileError(line, f"the header must name {', '.join(REQUIRED)} (missing {missing})")
    return {name: names.index(name) for name in (*REQUIRED, "as_of") if name in names}


def _row(line: int, fields: list[str], columns: dict[str, int], file_as_of: str | None) -> Parsed:
    """A row may leave out trailing optional fields (as_of), not the required ones."""
    if len(fields) <= max(columns[name] for name in REQUIRED):
        return Malformed(line, f"{len(fields)} fields: supplier_sku or on_hand is missing")
    at = columns.get("as_of", len(fields))
    as_of = fields[at] if at < len(fields) else None
    return record(
        line, fields[columns["supplier_sku"]], fields[columns["on_hand"]], as_of, file_as_of
    )


def read_csv(stream: BinaryIO, file_as_of: str | None) -> Iterator[Parsed]:
    """The records of a CSV file (header first; blank lines skipped). Rows with too few fields,
    a quoting error, bytes that are not UTF-8 or a line too long are Malformed, with their line."""
    yield from _rows(_Lines(stream), file_as_of)


def _rows(lines: _Lines, file_as_of: str | None) -> Iterator[Parsed]:
    reader = csv.reader(lines, strict=True)
    columns: dict[str, int] | None = None
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            yield Malformed(reader.line_num, f"CSV: {exc}")
            continue
        line = reader.line_num
        if line in lines.bad:
            yield Malformed(line, lines.bad[line])
            continue
        if not any(field.strip() for field in fields):
            continue
        if columns is None:
            columns = _columns(fields, line)
            continue
        yield _row(line, fields, columns, file_as_of)
    if columns is None:
        raise FeedFileError(lines.number, "no header: the file is empty")
