"""The feed rules without I/O (engine/feed_rules.py): mapping, pack sizes, times, duplicates,
quarantine reasons, newest as_of wins."""

from __future__ import annotations

import pytest

from flashsale.engine.errors import InvalidInput
from flashsale.engine.feed_rules import quantity, resolve
from flashsale.engine.feeds import (
    MAX_DELIVERY_RECORDS,
    Delivery,
    FeedConfig,
    FeedRecord,
    Level,
    SkuMapping,
    Thresholds,
    iso_of_ms,
    time_ms,
)

T0 = "2026-11-21T18:00:00Z"
T0_MS = time_ms(T0, "t")
CONFIG = FeedConfig(
    "webhook",
    sku_map={"ACME-1": SkuMapping("A"), "ACME-6PK": SkuMapping("B", 6), "ACME-3": SkuMapping("C")},
    thresholds=Thresholds(max_units=1000, max_drop_pct=50, max_spike_pct=200, min_base_units=10),
)


def delivery(*records: FeedRecord, as_of: str | None = T0) -> Delivery:
    return Delivery("acme", "d1", "webhook", as_of, records)


def at(seconds: int) -> str:
    return iso_of_ms(T0_MS + seconds * 1000)


def test_pack_sizes_and_zones_become_our_units_in_utc() -> None:
    res = resolve(
        delivery(
            FeedRecord("ACME-1", 7),
            FeedRecord("ACME-6PK", "3", as_of="2026-11-21T19:00:00+01:00"),
        ),
        CONFIG,
        {},
    )
    assert res.accepted["A"].units == 7
    assert res.accepted["B"].units == 18
    assert res.accepted["B"].as_of_ms == T0_MS  # 19:00 at +01:00 is 18:00 UTC
    assert (res.stale, res.unknown, res.duplicates, res.quarantined) == (0, 0, 0, [])


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (-1, "negative"),
        ("-3", "negative"),
        (2.5, "non-integer"),
        (5.0, "non-integer"),
        ("5.5", "non-integer"),
        ("", "non-integer"),
        (True, "non-integer"),
        (None, "non-integer"),
        ([1], "non-integer"),
        (1001, "absurd"),
        (10**30, "absurd"),
    ],
)
def test_values_that_cannot_be_true_are_quarantined(value: object, reason: str) -> None:
    res = resolve(delivery(FeedRecord("ACME-1", value, line=4)), CONFIG, {})
    assert res.accepted == {}
    [held] = res.quarantined
    assert (held.reason, held.line, held.supplier_sku) == (reason, 4, "ACME-1")
    assert held.on_hand == str(value)[:64]


def test_refused_values_are_kept_as_text_postgresql_can_store() -> None:
    """NUL and lone surrogates (a JSON file read by the json module may carry them) would make
    PostgreSQL refuse the whole delivery: the review list keeps them replaced."""
    res = resolve(
        delivery(
            FeedRecord("ACME-1", "4\x00"), FeedRecord("ACME-3", "\ud800"), FeedRecord("NO\x00PE", 1)
        ),
        CONFIG,
        {},
    )
    assert [q.on_hand for q in res.quarantined] == ["4\ufffd", "?"]
    assert res.unknown_sample == ["NO\ufffdPE"]


def test_absurd_is_judged_after_the_pack_size() -> None:
    res = resolve(delivery(FeedRecord("ACME-6PK", 200)), CONFIG, {})  # 1200 units > 1000
    assert [q.reason for q in res.quarantined] == ["absurd"]


def test_a_record_without_a_usable_time_is_quarantined() -> None:
    res = resolve(
        delivery(FeedRecord("ACME-1", 1), FeedRecord("ACME-3", 1, as_of="yesterday"), as_of=None),
        CONFIG,
        {},
    )
    assert sorted(q.reason for q in res.quarantined) == ["bad as_of", "no as_of"]


def test_a_time_far_ahead_of_arrival_or_before_1970_is_quarantined() -> None:
    """A record dated years ahead would stay the newest level until then, every real record
    after it stale: more than max_future_s (300 s) past its arrival is held for review."""
    arrived = T0_MS
    res = resolve(
        delivery(
            FeedRecord("ACME-1", 1, as_of=at(300)),  # exactly the allowance: fine
            FeedRecord("ACME-3", 2, as_of=at(301)),
            FeedRecord("ACME-6PK", 3, as_of="2062-01-01T00:00:00Z"),
        ),
        CONFIG,
        {},
        received_at_ms=arrived,
    )
    assert list(res.accepted) == ["A"]
    assert sorted((q.supplier_sku, q.reason) for q in res.quarantined) == [
        ("ACME-3", "future as_of"),
        ("ACME-6PK", "future as_of"),
    ]
    old = resolve(delivery(FeedRecord("ACME-1", 1, as_of="1969-12-31T23:59:59Z")), CONFIG, {})
    assert [(q.reason, q.as_of_ms) for q in old.quarantined] == [("bad as_of", -1000)]
    strict = FeedConfig("webhook", sku_map=CONFIG.sku_map, thresholds=Thresholds(max_future_s=0))
    res = resolve(
        delivery(FeedRecord("ACME-1", 1, as_of=at(1))), strict, {}, received_at_ms=arrived
    )
    assert [q.reason for q in res.quarantined] == ["future as_of"]


def test_unknown_supplier_skus_are_counted_and_sampled() -> None:
    records = [FeedRecord(f"NOPE-{i}", 1) for i in range(30)] + [FeedRecord("ACME-1", 2)]
    res = resolve(delivery(*records), CONFIG, {})
    assert res.unknown == 30
    assert len(res.unknown_sample) == 20 and res.unknown_sample[0] == "NOPE-0"
    assert list(res.accepted) == ["A"]


def test_exact_duplicates_are_dropped_once() -> None:
    same = FeedRecord("ACME-1", 5)
    res = resolve(delivery(same, same, FeedRecord("ACME-1", "5")), CONFIG, {})
    # "5" and 5 read the same: three copies of one record.
    assert (res.duplicates, res.stale, res.accepted["A"].units) == (2, 0, 5)


def test_the_newest_as_of_wins_whatever_the_order_inside_a_delivery() -> None:
    res = resolve(
        delivery(
            FeedRecord("ACME-1", 9, as_of=at(30)),
            FeedRecord("ACME-1", 4, as_of=at(10)),
            FeedRecord("ACME-1", 6, as_of=at(20)),
        ),
        CONFIG,
        {},
    )
    assert res.accepted["A"].units == 9
    assert res.stale == 2


def test_a_tie_of_as_of_goes_to_the_later_record() -> None:
    res = resolve(delivery(FeedRecord("ACME-1", 9), FeedRecord("ACME-1", 4)), CONFIG, {})
    assert (res.accepted["A"].units, res.stale) == (4, 1)


def test_older_than_the_held_level_is_stale_equal_is_a_duplicate() -> None:
    held = {"A": Level(50, T0_MS), "C": Level(50, T0_MS)}
    res = resolve(
        delivery(
            FeedRecord("ACME-1", 40, as_of=at(-5)),  # older: stale
            FeedRecord("ACME-3", 50),  # same instant, same units: duplicate
        ),
        CONFIG,
        held,
    )
    assert (res.stale, res.duplicates, res.accepted) == (1, 1, {})
    res = resolve(delivery(FeedRecord("ACME-3", 49)), CONFIG, held)  # same instant, other units
    assert (res.stale, res.accepted) == (1, {})


def test_drops_and_spikes_beyond_the_thresholds_are_quarantined() -> None:
    held = {"A": Level(100, T0_MS), "C": Level(100, T0_MS), "B": Level(6, T0_MS)}
    later = at(60)
    res = resolve(
        delivery(
            FeedRecord("ACME-1", 49, as_of=later),  # -51 %: drop
            FeedRecord("ACME-3", 301, as_of=later),  # +201 %: spike
            FeedRecord("ACME-6PK", 100, as_of=later),  # base 6 < min_base_units: not judged
        ),
        CONFIG,
        held,
    )
    assert sorted((q.supplier_sku, q.reason, q.on_hand) for q in res.quarantined) == [
        ("ACME-1", "drop", "49"),
        ("ACME-3", "spike", "301"),
    ]
    assert list(res.accepted) == ["B"]
    edge = resolve(
        delivery(FeedRecord("ACME-1", 50, as_of=later), FeedRecord("ACME-3", 300, as_of=later)),
        CONFIG,
        held,
    )
    assert sorted(edge.accepted) == ["A", "C"]  # exactly -50 % and +200 % pass


def test_a_reviewed_replay_waives_the_thresholds_only() -> None:
    held = {"A": Level(100, T0_MS)}
    res = resolve(
        delivery(FeedRecord("ACME-1", 1, as_of=at(60)), FeedRecord("ACME-3", -1)),
        CONFIG,
        held,
        waive_thresholds=True,
    )
    assert res.accepted["A"].units == 1
    assert [q.reason for q in res.quarantined] == ["negative"]


def test_quantities() -> None:
    assert [quantity(v) for v in (3, "3", " 4 ", "+2", "-2", 0)] == [3, 3, 4, 2, -2, 0]
    assert [quantity(v) for v in (3.0, "3.0", "x", False, "1e3", "0x10")] == [None] * 6


def test_a_delivery_envelope_is_checked_before_anything() -> None:
    with pytest.raises(InvalidInput):
        Delivery("acme", "bad id!", "webhook", T0, []).check()
    with pytest.raises(InvalidInput):
        Delivery("acme", "d1", "telepathy", T0, []).check()
    with pytest.raises(InvalidInput):
        Delivery("acme", "d1", "file", "noon", []).check()
    records = [FeedRecord("x", 1)] * (MAX_DELIVERY_RECORDS + 1)
    with pytest.raises(InvalidInput):
        Delivery("acme", "d1", "file", T0, records).check()
    Delivery("acme", "d1", "poll", None, [FeedRecord("x", 1)]).check()
