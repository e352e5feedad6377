"""The reconciler's pure parts: event decoding, ledger rows, backoff, batch sizing, shares."""

from __future__ import annotations

import pytest

from flashsale.engine.events import AdjustEvent, HoldEvent, PoisonEntry, decode, parse, parse_lines
from flashsale.engine.results import Allocation
from flashsale.engine.settings import load_settings
from flashsale.reconciler.backoff import Backoff, next_batch_size
from flashsale.reconciler.config import ReconcilerConfig
from flashsale.reconciler.metrics import Metrics
from flashsale.store.flush import level_deltas, movements
from flashsale.store.ownership import fair_share
from tests.metrics_helpers import parse_metrics, value

CONFIRMED = {
    "type": "confirmed",
    "hold": "h1",
    "user": "c1",
    "lines": "A:p:2,A:q:1",
    "at_ms": "1700000000123",
    "payment": "tok",
}


def test_a_confirmation_decodes_with_its_lines() -> None:
    event = parse("1-0", CONFIRMED)
    assert event == HoldEvent(
        "1-0",
        "confirmed",
        "h1",
        "c1",
        (Allocation("A", "p", 2), Allocation("A", "q", 1)),
        1_700_000_000_123,
        "tok",
    )


def test_an_adjustment_decodes() -> None:
    fields = {
        "type": "adjusted",
        "sku": "A",
        "supplier": "p",
        "delta": "-5",
        "applied": "-3",
        "shortfall": "2",
        "reason": "feed",
        "at_ms": "7",
    }
    assert parse("2-0", fields) == AdjustEvent("2-0", "A", "p", -5, -3, 2, "feed", 7)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"type": "shipped"}, "unknown event type"),
        ({"hold": None}, "missing field 'hold'"),
        ({"lines": ""}, "bad line"),
        ({"lines": "A:p:0"}, "bad quantity"),
        ({"lines": "A:p:-1"}, "bad quantity"),
        ({"lines": "A:p:1,A:p:2"}, "appear twice"),
        ({"lines": "A:p"}, "bad line"),
        ({"user": "no spaces please"}, "not an id"),
        ({"at_ms": "soon"}, "not an integer"),
    ],
)
def test_malformed_entries_are_poison(change: dict[str, str | None], why: str) -> None:
    fields = {k: v for k, v in {**CONFIRMED, **change}.items() if v is not None}
    with pytest.raises(PoisonEntry, match=why):
        parse("1-0", fields)


def test_decode_sets_poison_aside_and_keeps_order() -> None:
    entries = [("1-0", CONFIRMED), ("2-0", {"type": "??"}), ("3-0", {**CONFIRMED, "hold": "h2"})]
    decoded = decode(entries)
    assert [e.entry_id for e in decoded.events] == ["1-0", "3-0"]
    assert decoded.poison == [("2-0", "unknown event type '??'")]


def test_parse_lines_reads_what_lua_writes() -> None:
    assert parse_lines("X_1:sup-2:10") == (Allocation("X_1", "sup-2", 10),)


def test_ledger_signs_follow_the_stock_level_columns() -> None:
    hold = {**CONFIRMED, "lines": "A:p:2"}
    events = [
        parse("1-0", hold),
        parse("2-0", {**hold, "type": "released", "hold": "h2"}),
        parse("3-0", {**hold, "type": "expired", "hold": "h3"}),
        parse("4-0", {**hold, "type": "compensated", "reason": "declined"}),
        parse("5-0", {**hold, "type": "compensated", "hold": "h9"}),  # no such order
        AdjustEvent("6-0", "A", "p", -5, -3, 2, "feed", 9),
    ]
    rows = movements("S", events, known_orders={"h1"})
    assert [(r[2], r[3], r[4]) for r in rows] == [
        ("confirm", 2, "h1"),
        ("release", 2, "h2"),
        ("expire", 2, "h3"),
        ("compensate", -2, "h1"),
        ("adjust", -3, "S:6-0"),
    ]
    assert rows[4][5] == "feed [requested -5, shortfall 2]"
    inserted = [(r[0], r[1], r[2], r[3], r[4]) for r in rows]
    assert level_deltas(inserted) == {("A", "p"): (0, -3)}
    assert level_deltas(inserted[:1]) == {("A", "p"): (2, 0)}


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    top = Backoff(100, 1000, rand=lambda: 1.0)
    assert [top.next_delay_s() for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    low = Backoff(100, 1000, rand=lambda: 0.0)
    assert [low.next_delay_s() for _ in range(3)] == [0.05, 0.1, 0.2]
    low.reset()
    assert low.next_delay_s() == 0.05


def test_batch_size_grows_when_behind_and_shrinks_when_caught_up() -> None:
    assert next_batch_size(100, 100, 50, 1000) == 200
    assert next_batch_size(800, 800, 50, 1000) == 1000
    assert next_batch_size(200, 60, 50, 1000) == 200
    assert next_batch_size(200, 10, 50, 1000) == 100
    assert next_batch_size(60, 0, 50, 1000) == 50


def test_fair_share() -> None:
    assert fair_share(3, 1) == 3
    assert fair_share(3, 2) == 2
    assert fair_share(3, 5) == 1
    assert fair_share(0, 0) == 0


def test_metrics_text() -> None:
    m = Metrics()
    m.observe_batch(10, 0.02, 7, 1)
    assert "flushed=10 orders=7 batches=1 batch=10 flush_ms=20.0" in m.line()
    m.saga("payment.authorize", "done")
    m.saga("payment.authorize", "retry")
    m.allocations[("acme", "refused")] += 2
    text = m.prometheus().decode()
    scrape = parse_metrics(text)
    assert value(scrape, "flashsale_reconciler_flushed_events_total") == 10
    assert value(scrape, "flashsale_reconciler_dead_letters_total") == 1
    assert value(scrape, "flashsale_reconciler_flush_seconds_bucket", {"le": "0.01"}) == 0
    assert value(scrape, "flashsale_reconciler_flush_seconds_bucket", {"le": "0.025"}) == 1
    assert value(scrape, "flashsale_reconciler_flush_seconds_count") == 1
    assert "# TYPE flashsale_reconciler_lag_entries gauge" in text
    done = {"step": "payment.authorize", "outcome": "done"}
    assert value(scrape, "flashsale_saga_steps_total", done) == 1 and m.saga_retries == 1
    refused = {"supplier": "acme", "outcome": "refused"}
    assert value(scrape, "flashsale_supplier_allocations_total", refused) == 2


def test_settings_reach_the_config_and_flags_win() -> None:
    settings = load_settings(
        {"FLASHSALE_RECONCILE_MAX_BATCH": "200", "FLASHSALE_SWEEP_INTERVAL_MS": "75"}
    )
    config = ReconcilerConfig.from_settings(settings)
    assert (config.max_batch, config.sweep_interval_ms) == (200, 75)
    flagged = ReconcilerConfig.from_settings(settings, max_batch=300, sweep_interval_ms=None)
    assert (flagged.max_batch, flagged.sweep_interval_ms) == (300, 75)
