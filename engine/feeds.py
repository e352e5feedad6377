"""Supplier stock feeds, the types: what a connector hands in, a supplier's feed config, what
Redis is asked to apply. No I/O; the rules live in engine/feed_rules.py."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from flashsale.engine.errors import InvalidInput
from flashsale.engine.validation import check_id

MAX_DELIVERY_RECORDS = 10_000  # a bigger file is split into several deliveries
MAX_SKU_MAP_ROWS = 20_000
KINDS = ("webhook", "poll", "file")
FORMATS = ("csv", "json", "xml")
CONNECTORS = ("webhook", "poll", "file")  # a Delivery's source
# What a ledger row may name: a connector, a reviewed replay, or a sale (re)loaded after levels
# were known.
SOURCES = (*CONNECTORS, "replay", "sale")
# A supplier's own SKU: printable ASCII, no leading or trailing blank, at most 128 characters.
SUPPLIER_SKU = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]{0,126}[\x21-\x7e])?")


@dataclass(frozen=True, slots=True)
class FeedRecord:
    """One row as a connector parsed it, not yet validated."""

    supplier_sku: str
    on_hand: object  # int from JSON, str from CSV or XML ("12"); validation decides
    as_of: str | None = None  # ISO 8601 with a zone; None: the delivery's as_of
    line: int = 0  # where it came from (file line, item index; on a replay its quarantine row)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One hand-in of records; `delivery_id` is the idempotency key per supplier."""

    supplier_id: str
    delivery_id: str
    source: str  # one of CONNECTORS
    as_of: str | None
    records: Sequence[FeedRecord]

    def check(self) -> None:
        """Refuses a delivery whose envelope is wrong (its records are judged one by one)."""
        check_id("supplier_id", self.supplier_id)
        check_id("delivery_id", self.delivery_id)
        if self.source not in CONNECTORS:
            raise InvalidInput("source", f"must be one of {', '.join(CONNECTORS)}")
        if len(self.records) > MAX_DELIVERY_RECORDS:
            raise InvalidInput("records", f"at most {MAX_DELIVERY_RECORDS} per delivery")
        if self.as_of is not None:
            time_ms(self.as_of, "as_of")


@dataclass(frozen=True, slots=True)
class SkuMapping:
    sku: str  # ours
    pack_size: int = 1  # units per supplier unit: on_hand x pack_size = our units


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a record is quarantined instead of applied, and when a feed counts as stale."""

    max_units: int = 1_000_000  # more than this (after the pack size) is absurd
    max_drop_pct: int = 100  # a fall of more than this % of the last level (100: never)
    max_spike_pct: int = 0  # a rise of more than this % of the last level (0: never)
    min_base_units: int = 10  # drop and spike rules apply from this last level up
    stale_after_s: int = 900  # no applied update (nor good poll) for this long: stale (0: never)
    max_future_s: int = 300  # an as_of more than this after its arrival: quarantined


@dataclass(frozen=True, slots=True)
class FeedConfig:
    kind: str  # one of KINDS
    url: str = ""  # the poll URL
    interval_s: int = 0  # the poll interval
    format: str = "json"  # one of FORMATS: file and poll bodies
    sku_map: Mapping[str, SkuMapping] = field(default_factory=dict)  # supplier_sku -> ours
    thresholds: Thresholds = Thresholds()


@dataclass(frozen=True, slots=True)
class Level:
    """The newest accepted level of one (supplier, sku), in our units."""

    units: int
    as_of_ms: int


# --- what Redis is asked to do ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeedRow:
    """One offer to set: `on_hand` our units the supplier can still ship; `settled` units of
    this sale held at it that need it no more (allocated there or elsewhere, or backordered)."""

    sku: str
    supplier_id: str
    on_hand: int
    settled: int


@dataclass(frozen=True, slots=True)
class FeedRef:
    """What the ledger row of every change names."""

    source: str
    delivery_id: str
    as_of_ms: int


@dataclass(frozen=True, slots=True)
class FeedChange:
    """One row's outcome: `code` OK, UNKNOWN_SKU or UNKNOWN_SUPPLIER (not in this sale);
    `shortfall` units sold or held at the supplier beyond its on_hand: the saga reroutes them."""

    sku: str
    supplier_id: str
    code: str
    before: int = 0
    after: int = 0
    shortfall: int = 0


class FeedApplier(Protocol):
    """The Redis side of a delivery (flashsale.engine.Engine is one): sets each offer of one
    sale in one atomic call."""

    async def apply_feed(
        self, sale_id: str, rows: Sequence[FeedRow], ref: FeedRef
    ) -> list[FeedChange]: ...


def time_ms(value: object, where: str) -> int:
    """An ISO 8601 time with a zone, as epoch milliseconds (UTC)."""
    if not isinstance(value, str) or len(value) > 40:
        raise InvalidInput(where, "must be an ISO 8601 time with a zone")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(where, "is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise InvalidInput(where, "needs a time zone (use Z for UTC)")
    return int(moment.timestamp() * 1000)


def iso_of_ms(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC with a Z (what time_ms reads back exactly)."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"
