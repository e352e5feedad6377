"""Supplier stock feeds, the rules (no I/O): map supplier SKUs and pack sizes to our SKUs and
units, times to UTC, drop exact duplicates, quarantine what cannot be true, and let the newest
`as_of` per (supplier, SKU) win whatever order records arrive in."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from flashsale.engine.errors import InvalidInput
from flashsale.engine.feeds import Delivery, FeedConfig, FeedRecord, Level, Thresholds, time_ms

INTEGER = re.compile(r"[+-]?[0-9]{1,18}")
RAW_CHARS = 64  # how much of a refused value the review list keeps
UNKNOWN_SAMPLE = 20  # unknown supplier SKUs named per delivery (all are counted)


@dataclass(frozen=True, slots=True)
class Accepted:
    """A record that becomes the newest level of its (supplier, sku)."""

    sku: str
    units: int
    as_of_ms: int
    supplier_sku: str
    line: int
    raw: str  # on_hand as the supplier gave it (before the pack size)


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A record held back for review: not applied, listed, alerted on."""

    supplier_sku: str
    on_hand: str  # the value as given, cut to RAW_CHARS
    as_of_ms: int | None
    line: int
    # negative | non-integer | absurd | drop | spike | no as_of | bad as_of | future as_of
    reason: str


@dataclass(slots=True)
class Resolution:
    accepted: dict[str, Accepted] = field(default_factory=dict)  # by our sku
    quarantined: list[Quarantined] = field(default_factory=list)
    unknown: int = 0
    unknown_sample: list[str] = field(default_factory=list)
    stale: int = 0
    duplicates: int = 0


def raw_text(value: object) -> str:
    """The value as text PostgreSQL can keep for review: cut to RAW_CHARS, NUL and lone
    surrogates (which a text column refuses, failing the whole delivery) replaced."""
    text = str(value)[:RAW_CHARS].replace("\x00", "\ufffd")
    return text.encode("utf-8", "replace").decode("utf-8")


def quantity(value: object) -> int | None:
    """An integer count, or None when the value is not one (5.0, "5.5", "", true, ...)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    return None


def beyond_thresholds(units: int, last: Level | None, t: Thresholds) -> str:
    """'drop' or 'spike' when the change from the last level is too large to believe, else ''."""
    if last is None or last.units < t.min_base_units or last.units == 0:
        return ""
    change_pct = (units - last.units) * 100 / last.units
    if t.max_drop_pct < 100 and -change_pct > t.max_drop_pct:
        return "drop"
    if t.max_spike_pct > 0 and change_pct > t.max_spike_pct:
        return "spike"
    return ""


def _judge(
    record: FeedRecord, as_of: str | None, config: FeedConfig, received_at_ms: int, res: Resolution
) -> Accepted | None:
    """A record on its own: mapped, timed, counted; None when it is unknown or quarantined."""
    mapping = config.sku_map.get(record.supplier_sku)
    if mapping is None:
        res.unknown += 1
        if len(res.unknown_sample) < UNKNOWN_SAMPLE:
            res.unknown_sample.append(raw_text(record.supplier_sku))
        return None

    def hold(reason: str, as_of_ms: int | None) -> None:
        raw = raw_text(record.on_hand)
        res.quarantined.append(Quarantined(record.supplier_sku, raw, as_of_ms, record.line, reason))

    if as_of is None:
        hold("no as_of", None)
        return None
    try:
        as_of_ms = time_ms(as_of, "as_of")
    except InvalidInput:
        hold("bad as_of", None)
        return None
    if as_of_ms < 0:  # before 1970: no stock level is that old (and Redis refuses it)
        hold("bad as_of", as_of_ms)
        return None
    if as_of_ms > received_at_ms + config.thresholds.max_future_s * 1000:
        # A level dated ahead of its arrival would be the newest for that long, and every real
        # record until then stale: the supplier's clock is wrong, so a person looks first.
        hold("future as_of", as_of_ms)
        return None
    count = quantity(record.on_hand)
    if count is None:
        hold("non-integer", as_of_ms)
        return None
    if count < 0:
        hold("negative", as_of_ms)
        return None
    units = count * mapping.pack_size
    if units > config.thresholds.max_units:
        hold("absurd", as_of_ms)
        return None
    raw = raw_text(record.on_hand)
    return Accepted(mapping.sku, units, as_of_ms, record.supplier_sku, record.line, raw)


def resolve(
    delivery: Delivery,
    config: FeedConfig,
    latest: Mapping[str, Level],
    *,
    received_at_ms: int | None = None,
    waive_thresholds: bool = False,
) -> Resolution:
    """What a delivery changes, given the newest levels held (`latest`, by our sku).

    Exact duplicates inside the delivery are dropped. Per sku the newest as_of wins (a tie: the
    record that came later); an older or equal as_of than the held level is stale (equal and the
    same units: a duplicate). An as_of more than thresholds.max_future_s after `received_at_ms`
    (None: now) is quarantined. Drop and spike thresholds judge the winner against the held
    level, unless `waive_thresholds` (a reviewed replay)."""
    received = int(time.time() * 1000) if received_at_ms is None else received_at_ms
    res = Resolution()
    seen: set[tuple[str, str, str | None]] = set()
    best: dict[str, Accepted] = {}  # by sku; on a tie of as_of the later record wins
    for record in delivery.records:
        as_of = record.as_of if record.as_of is not None else delivery.as_of
        key = (record.supplier_sku, raw_text(record.on_hand), as_of)
        if key in seen:
            res.duplicates += 1
            continue
        seen.add(key)
        found = _judge(record, as_of, config, received, res)
        if found is None:
            continue
        rival = best.get(found.sku)
        if rival is not None:
            res.stale += 1
            if rival.as_of_ms > found.as_of_ms:
                continue
        best[found.sku] = found
    for sku, found in best.items():
        _settle(found, latest.get(sku), config.thresholds, waive_thresholds, res)
    return res


def _settle(
    found: Accepted, last: Level | None, t: Thresholds, waive: bool, res: Resolution
) -> None:
    """The newest record of a sku in the delivery against the level held."""
    if last is not None and found.as_of_ms < last.as_of_ms:
        res.stale += 1
        return
    if last is not None and found.as_of_ms == last.as_of_ms:
        if found.units == last.units:
            res.duplicates += 1
        else:
            res.stale += 1  # the first level accepted for an instant stays
        return
    why = "" if waive else beyond_thresholds(found.units, last, t)
    if why:
        res.quarantined.append(
            Quarantined(found.supplier_sku, found.raw, found.as_of_ms, found.line, why)
        )
        return
    res.accepted[found.sku] = found
