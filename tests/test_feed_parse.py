"""The stock-file readers: every format's records and malformed rows with their lines, broken
files refused whole (DTDs and entities among them), and memory that does not grow with the file."""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from flashsale.engine.feeds import FeedRecord
from flashsale.loadtests.simulators.feed_docs import Item, document, write_file
from flashsale.reconciler.intake import csvstream, jsonstream
from flashsale.reconciler.intake.parse import read_records
from flashsale.reconciler.intake.records import FeedFileError, Malformed, Parsed, format_of

T1 = "2026-03-01T10:00:00+00:00"


def parse(fmt: str, data: bytes, as_of: str | None = None) -> list[Parsed]:
    return list(read_records(io.BytesIO(data), fmt, as_of))


def good(rows: list[Parsed]) -> list[FeedRecord]:
    return [r for r in rows if isinstance(r, FeedRecord)]


def bad(rows: list[Parsed]) -> list[int]:
    return [r.line for r in rows if isinstance(r, Malformed)]


ITEMS: list[Item] = [
    {"supplier_sku": "P-1", "on_hand": 5},
    {"supplier_sku": "P-2", "on_hand": 0, "as_of": "2026-03-01T11:00:00+01:00"},
    {"supplier_sku": "P,3", "on_hand": 12},
]


@pytest.mark.parametrize("fmt", ["csv", "json", "xml"])
def test_each_format_reads_the_same_records(fmt: str) -> None:
    rows = parse(fmt, document(fmt, ITEMS, T1 if fmt != "csv" else None), T1)
    records = good(rows)
    assert [r.supplier_sku for r in records] == ["P-1", "P-2", "P,3"]
    assert [int(str(r.on_hand)) for r in records] == [5, 0, 12]
    assert records[0].as_of == T1  # the file's (or the caller's) time for a row without one
    assert records[1].as_of == "2026-03-01T11:00:00+01:00"
    assert bad(rows) == []


def test_csv_malformed_rows_are_counted_with_their_line_and_reading_goes_on() -> None:
    data = (
        b"on_hand,supplier_sku,as_of,extra\n"  # any column order; extra columns ignored
        b"4,A\n"  # as_of left out: the file's
        b"\n"  # blank: skipped
        b"7\n"  # no supplier_sku
        b",B\n"  # no on_hand
        b'1,"C"x\n'  # quoting error
        b"2,D,2026-03-01\n"  # a time without a zone
        b"lots,E\n"  # not a number: the core quarantines it, listed for review
        b"3,F,2026-03-01T09:00:00Z,whatever\n"
    )
    rows = parse("csv", data, T1)
    assert bad(rows) == [4, 5, 6, 7]
    assert [(r.supplier_sku, r.on_hand, r.line) for r in good(rows)] == [
        ("A", "4", 2),
        ("E", "lots", 8),
        ("F", "3", 9),
    ]
    assert good(rows)[2].as_of == "2026-03-01T09:00:00+00:00"


def test_csv_line_too_long_or_not_utf8_is_one_malformed_row() -> None:
    long = b"X" * (csvstream.MAX_LINE_BYTES * 3) + b",1\n"
    data = b"\xef\xbb\xbfsupplier_sku,on_hand\nA,1\n" + long + b"B,2\nC\xff,3\nD,4\n"
    rows = parse("csv", data)
    assert [(r.line, r.reason) for r in rows if isinstance(r, Malformed)] == [
        (3, f"line longer than {csvstream.MAX_LINE_BYTES} bytes"),
        (5, "not UTF-8"),
    ]
    assert [r.supplier_sku for r in good(rows)] == ["A", "B", "D"]


@pytest.mark.parametrize(
    ("data", "line", "why"),
    [
        (b"", 0, "no header"),
        (b"sku,qty\nA,1\n", 1, "must name supplier_sku, on_hand"),
    ],
)
def test_csv_that_cannot_be_read_as_a_whole(data: bytes, line: int, why: str) -> None:
    with pytest.raises(FeedFileError, match=why) as caught:
        parse("csv", data)
    assert caught.value.line == line


def test_json_items_anywhere_in_the_document_with_lines() -> None:
    data = (
        b'{"supplier": {"name": "P", "tags": [1, 2]},\n'
        b' "as_of": "2026-03-01T10:00:00Z",\n'
        b' "items": [\n'
        b'  {"supplier_sku": "A", "on_hand": 3},\n'
        b"  17,\n"
        b'  {"supplier_sku": "B"},\n'
        b'  {"supplier_sku": "C", "on_hand": 2.5,\n'
        b'   "as_of": "2026-03-01T12:00:00+02:00"}\n'
        b" ],\n"
        b' "trailer": null}\n'
    )
    rows = parse("json", data)
    assert bad(rows) == [5, 6]
    records = good(rows)
    assert [(r.supplier_sku, r.on_hand, r.line) for r in records] == [("A", 3, 4), ("C", 2.5, 7)]
    assert records[0].as_of == T1


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b'{"items": [{"supplier_sku": "A", "on_hand": 1}, {"a": ]}', "JSON"),
        (b'{"items": [{"supplier_sku": "A", "on_hand": 1}]', "expected"),
        (b'{"items": [], "as_of": "2026-03-01T10:00:00Z"}', "as_of must come before items"),
        (b'{"as_of": "yesterday", "items": []}', "as_of is not an ISO 8601"),
        (b'{"stock": []}', "no items array"),
        (b'[{"supplier_sku": "A", "on_hand": 1}]', "expected"),
        (b'{"items": []} {"items": []}', "text after the end"),
        (b'{"items": [\n{"supplier_sku": "A", "on_hand": 1},\n"\xff"]}', "not UTF-8"),
    ],
)
def test_json_that_cannot_be_read_as_a_whole(data: bytes, why: str) -> None:
    with pytest.raises(FeedFileError, match=why) as caught:
        parse("json", data)
    if why == "not UTF-8":
        assert caught.value.line == 3


def test_json_value_split_across_read_chunks_is_read_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonstream, "CHUNK_BYTES", 7)  # every value straddles chunks
    items = [{"supplier_sku": f"S{i}", "on_hand": 123456789 + i} for i in range(50)]
    rows = parse("json", document("json", items, T1))
    assert [r.on_hand for r in good(rows)] == [123456789 + i for i in range(50)]


def test_xml_fields_as_attributes_or_children_with_lines() -> None:
    data = (
        b'<?xml version="1.0"?>\n'
        b'<stock as_of="2026-03-01T10:00:00Z">\n'
        b'  <item supplier_sku="A" on_hand="4"/>\n'
        b"  <item><supplier_sku>B</supplier_sku><on_hand> 9 </on_hand>\n"
        b"        <as_of>2026-03-01T12:00:00+02:00</as_of></item>\n"
        b'  <item supplier_sku="C"/>\n'
        b"  <note>ignored</note>\n"
        b"</stock>\n"
    )
    rows = parse("xml", data)
    assert bad(rows) == [6]
    records = good(rows)
    assert [(r.supplier_sku, r.on_hand, r.line) for r in records] == [("A", "4", 3), ("B", "9", 4)]
    assert records[0].as_of == T1 and records[1].as_of == "2026-03-01T12:00:00+02:00"


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<stock><item supplier_sku="&lol3;" on_hand="1"/></stock>"""
XXE = b"""<?xml version="1.0"?>
<!DOCTYPE stock [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<stock><item supplier_sku="A" on_hand="&secret;"/></stock>"""


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (BILLION_LAUGHS, "DOCTYPE is not allowed"),
        (XXE, "DOCTYPE is not allowed"),
        (b'<stock><item supplier_sku="&foo;" on_hand="1"/></stock>', "undefined entity"),
        (b'<stock><item supplier_sku="A" on_hand="1"></stock>', "mismatched tag"),
        (b'<stock as_of="noon"></stock>', "as_of is not an ISO 8601"),
    ],
)
def test_xml_with_a_dtd_or_entities_or_broken_is_refused_whole(data: bytes, why: str) -> None:
    with pytest.raises(FeedFileError, match=why):
        parse("xml", data)


def test_formats_told_by_name_and_media_type() -> None:
    assert format_of("stock.CSV") == "csv"
    assert format_of("text/csv; charset=utf-8") == "csv"
    assert format_of("application/json") == "json"
    assert format_of("application/xml") == "xml"
    assert format_of("text/xml") == "xml"
    assert format_of("stock.txt") is None


def _items(count: int) -> Iterator[Item]:
    return ({"supplier_sku": f"SKU-{i:09d}", "on_hand": i % 1000} for i in range(count))


def _peak_bytes(path: Path, fmt: str) -> tuple[int, int]:
    """(records read, tracemalloc's peak) reading the file as the loader does."""
    tracemalloc.start()
    try:
        with path.open("rb") as f:
            records = sum(1 for r in read_records(f, fmt, T1) if isinstance(r, FeedRecord))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return records, peak


@pytest.mark.parametrize("fmt", ["csv", "json", "xml"])
def test_memory_stays_bounded_whatever_the_size_of_the_file(fmt: str, tmp_path: Path) -> None:
    """A file 16 times bigger takes no more memory to read: the readers hold one line, item or
    element and one read buffer, never the file (so a 1 GB file reads like a 1 MB one)."""
    small, big = 5_000, 80_000
    small_path = write_file(tmp_path / f"small.{fmt}", fmt, _items(small), T1)
    big_path = write_file(tmp_path / f"big.{fmt}", fmt, _items(big), T1)
    assert big_path.stat().st_size > 1_400_000  # more than the bound below allows
    read_small, peak_small = _peak_bytes(small_path, fmt)
    read_big, peak_big = _peak_bytes(big_path, fmt)
    assert (read_small, read_big) == (small, big)
    assert peak_big < 1024 * 1024, peak_big
    assert peak_big < peak_small * 1.5 + 64 * 1024, (peak_small, peak_big)
