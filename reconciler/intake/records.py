"""What a stock file's reader yields: a record as the file gives it, or a malformed row with its
line; and the checks of one field that every format shares."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from flashsale.engine.feeds import FORMATS, SUPPLIER_SKU, FeedRecord


@dataclass(frozen=True, slots=True)
class Malformed:
    """A row that is no record (a field missing, not a number, a time without a zone)."""

    line: int
    reason: str


Parsed = FeedRecord | Malformed  # a record as the file gave it, for the feed core to judge


class FeedFileError(Exception):
    """The file as a whole cannot be read (not UTF-8, broken JSON or XML, a DTD, no header): it
    goes to failed/ and nothing of it is applied."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


def timestamp(raw: object) -> str | None:
    """An ISO 8601 time with its zone, or None (no zone is as bad as no time: a supplier's
    local midnight is not ours)."""
    if not isinstance(raw, str) or not 10 <= len(raw.strip()) <= 40:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(raw.strip())
    except ValueError:
        return None
    return parsed.isoformat() if parsed.tzinfo is not None else None


def supplier_sku(raw: object) -> str | None:
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)  # a numeric SKU in JSON
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    return text if SUPPLIER_SKU.fullmatch(text) else None


def record(
    line: int, sku_raw: object, on_hand_raw: object, as_of_raw: object, file_as_of: str | None
) -> Parsed:
    """A FeedRecord (its on_hand as the file gave it: a non-integer, negative or absurd one is
    the core's to quarantine and list for review), or why the fields make none. An empty
    as_of means the file's."""
    sku = supplier_sku(sku_raw)
    if sku is None:
        return Malformed(line, "supplier_sku missing, or not 1-128 printable ASCII characters")
    if on_hand_raw is None or (isinstance(on_hand_raw, str) and not on_hand_raw.strip()):
        return Malformed(line, "on_hand missing")
    if isinstance(on_hand_raw, str):
        on_hand_raw = on_hand_raw.strip()
    if as_of_raw is None or as_of_raw == "":
        return FeedRecord(sku, on_hand_raw, file_as_of, line)
    as_of = timestamp(as_of_raw)
    if as_of is None:
        return Malformed(
            line, f"as_of is not an ISO 8601 time with a zone: {str(as_of_raw)[:40]!r}"
        )
    return FeedRecord(sku, on_hand_raw, as_of, line)


def format_of(name: str) -> str | None:
    """The format a file name or media type names (`stock.csv`, `text/csv`, `application/xml`)."""
    lowered = name.lower().split(";", 1)[0].strip()
    for fmt in FORMATS:
        if lowered.endswith((f".{fmt}", f"/{fmt}", f"+{fmt}")):
            return fmt
    return None
