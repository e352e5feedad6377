"""JSON stock files as a stream, for the documented shape only: one object whose optional
`as_of` comes before its `items` array of {supplier_sku, on_hand, as_of?} objects (the webhook's
body; other keys are read past). Each item is decoded on its own by the json module, so memory
holds one item and one read chunk, whatever the file's size."""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from typing import Any, BinaryIO

from flashsale.reconciler.intake.records import (
    FeedFileError,
    Malformed,
    Parsed,
    record,
    timestamp,
)

CHUNK_BYTES = 65_536
MAX_VALUE_CHARS = 65_536  # one item, or one other top-level value; longer is a broken file
_WHITESPACE = " \t\n\r"
_DECODER = json.JSONDecoder()


class _Reader:
    """A window on the text: `buf[pos:]` is unread, `line` the line of `buf[pos]`."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self.buf = ""
        self.pos = 0
        self.line = 1
        self.eof = False

    def _more(self) -> bool:
        if self.eof:
            return False
        data = self.stream.read(CHUNK_BYTES)
        try:
            chunk = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            line = self.line + self.buf.count("\n", self.pos) + data.count(b"\n", 0, exc.start)
            raise FeedFileError(line, "the file is not UTF-8") from None
        if not data:
            self.eof = True
            self.buf = self.buf[self.pos :] + chunk
            self.pos = 0
            return bool(chunk)
        self.buf = self.buf[self.pos :] + chunk
        self.pos = 0
        return True

    def _advance(self, to: int) -> None:
        self.line += self.buf.count("\n", self.pos, to)
        self.pos = to

    def peek(self) -> str:
        """The next character that is not whitespace ('' at the end)."""
        while True:
            end = len(self.buf)
            at = self.pos
            while at < end and self.buf[at] in _WHITESPACE:
                at += 1
            self._advance(at)
            if at < end:
                return self.buf[at]
            if not self._more():
                return ""

    def expect(self, chars: str) -> str:
        found = self.peek()
        if not found or found not in chars:
            wanted = " or ".join(repr(c) for c in chars)
            raise FeedFileError(self.line, f"expected {wanted}, found {found or 'the end'!r}")
        self._advance(self.pos + 1)
        return found

    def value(self) -> tuple[Any, int]:
        """The next JSON value and the line it starts on. A value is final only once a character
        follows it in the window (or the file ends): `12` may be the start of `123`."""
        self.peek()
        line = self.line
        while True:
            try:
                found, end = _DECODER.raw_decode(self.buf, self.pos)
                if end < len(self.buf) or self.eof:
                    self._advance(end)
                    return found, line
            except json.JSONDecodeError as exc:
                if self.eof or len(self.buf) - self.pos > MAX_VALUE_CHARS:
                    raise FeedFileError(line + exc.lineno - 1, f"JSON: {exc.msg}") from None
            if len(self.buf) - self.pos > MAX_VALUE_CHARS:
                raise FeedFileError(line, f"a value longer than {MAX_VALUE_CHARS} characters")
            self._more()


def read_json(stream: BinaryIO, file_as_of: str | None) -> Iterator[Parsed]:
    yield from _document(_Reader(stream), file_as_of)


def _document(reader: _Reader, as_of: str | None) -> Iterator[Parsed]:
    reader.expect("{")
    seen_items = False
    if reader.peek() == "}":
        reader.expect("}")
    else:
        while True:
            key, line = reader.value()
            if not isinstance(key, str):
                raise FeedFileError(line, "an object key must be a string")
            reader.expect(":")
            if key == "items":
                seen_items = True
                yield from _items(reader, as_of)
            else:
                found, line = reader.value()
                if key == "as_of":
                    if seen_items:
                        raise FeedFileError(line, "as_of must come before items")
                    as_of = timestamp(found)
                    if as_of is None:
                        raise FeedFileError(line, "as_of is not an ISO 8601 time with a zone")
            if reader.expect(",}") == "}":
                break
    if reader.peek():
        raise FeedFileError(reader.line, "text after the end of the document")
    if not seen_items:
        raise FeedFileError(reader.line, "the document has no items array")


def _items(reader: _Reader, as_of: str | None) -> Iterator[Parsed]:
    reader.expect("[")
    if reader.peek() == "]":
        reader.expect("]")
        return
    while True:
        item, line = reader.value()
        if isinstance(item, dict):
            yield record(
                line, item.get("supplier_sku"), item.get("on_hand"), item.get("as_of"), as_of
            )
        else:
            yield Malformed(line, "an item must be an object")
        if reader.expect(",]") == "]":
            return
