"""XML stock files as a stream: `<stock as_of="..."><item supplier_sku="..." on_hand="..."
as_of="..."/>...</stock>`, the fields as attributes or as child elements. expat is fed one chunk
at a time and keeps no tree; a DOCTYPE (and with it any entity: no XXE, no billion laughs) ends
the file before anything of it is used."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO
from xml.parsers import expat

from flashsale.reconciler.intake.records import (
    FeedFileError,
    Malformed,
    Parsed,
    record,
    timestamp,
)

CHUNK_BYTES = 65_536
FIELDS = ("supplier_sku", "on_hand", "as_of")
MAX_FIELD_CHARS = 1024


class _Refused(Exception):
    """Raised inside an expat handler; expat hands it back out of Parse()."""


class _Items:
    """expat's handlers: each finished <item> becomes a Parsed in `out`, drained per chunk."""

    def __init__(self, parser: expat.XMLParserType, file_as_of: str | None) -> None:
        self.parser = parser
        self.as_of = file_as_of
        self.depth = 0
        self.out: list[Parsed] = []
        self.item: dict[str, str] | None = None
        self.item_line = 0
        self.field: str | None = None
        self.too_long = False

    def start(self, name: str, attrs: dict[str, str]) -> None:
        self.depth += 1
        if self.depth == 1:
            self._root(attrs)
        elif self.depth == 2 and name == "item":
            self.item = {k: v for k, v in attrs.items() if k in FIELDS}
            self.item_line = self.parser.CurrentLineNumber
            self.too_long = any(len(v) > MAX_FIELD_CHARS for v in self.item.values())
        elif self.depth == 3 and self.item is not None and name in FIELDS:
            self.field = name
            self.item[name] = ""

    def _root(self, attrs: dict[str, str]) -> None:
        if "as_of" in attrs:
            self.as_of = timestamp(attrs["as_of"])
            if self.as_of is None:
                line = self.parser.CurrentLineNumber
                raise FeedFileError(line, "as_of is not an ISO 8601 time with a zone")

    def text(self, data: str) -> None:
        if self.field is not None and self.item is not None:
            if len(self.item[self.field]) + len(data) > MAX_FIELD_CHARS:
                self.too_long = True
            else:
                self.item[self.field] += data

    def end(self, name: str) -> None:
        if self.depth == 3:
            self.field = None
        elif self.depth == 2 and self.item is not None:
            self.out.append(self._finish(self.item))
            self.item = None
        self.depth -= 1

    def _finish(self, item: dict[str, str]) -> Parsed:
        if self.too_long:
            return Malformed(self.item_line, f"a field longer than {MAX_FIELD_CHARS} characters")
        as_of = item.get("as_of", "").strip() or None
        return record(
            self.item_line, item.get("supplier_sku"), item.get("on_hand"), as_of, self.as_of
        )


def _refuse_doctype(*_args: object) -> None:
    raise _Refused("a DOCTYPE is not allowed (no DTDs, no entities)")


def _refuse_external(*_args: object) -> int:
    raise _Refused("an external entity is not allowed")


def _parser(file_as_of: str | None) -> tuple[expat.XMLParserType, _Items]:
    parser = expat.ParserCreate()
    items = _Items(parser, file_as_of)
    parser.StartElementHandler = items.start
    parser.EndElementHandler = items.end
    parser.CharacterDataHandler = items.text
    parser.StartDoctypeDeclHandler = _refuse_doctype
    parser.EntityDeclHandler = _refuse_doctype
    parser.ExternalEntityRefHandler = _refuse_external
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    return parser, items


def read_xml(stream: BinaryIO, file_as_of: str | None) -> Iterator[Parsed]:
    parser, items = _parser(file_as_of)
    while True:
        chunk = stream.read(CHUNK_BYTES)
        try:
            parser.Parse(chunk, not chunk)
        except _Refused as exc:
            raise FeedFileError(parser.CurrentLineNumber, str(exc)) from None
        except expat.ExpatError as exc:
            raise FeedFileError(exc.lineno, f"XML: {expat.errors.messages[exc.code]}") from None
        yield from items.out
        items.out.clear()
        if not chunk:
            return
