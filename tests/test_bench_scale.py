"""`bench scale`, small: the rows exist, and a waiting ticket costs Redis no more memory than its
three hash fields can (a per-ticket key, or more fields, would break the bound)."""

from __future__ import annotations

import pytest

from flashsale.engine.settings import load_settings
from flashsale.loadtests.bench.scale import ScaleRun, bench_scale, customer_id

TICKETS, SKUS = 20_000, 500
POINTER = 8
ENTRY = 3 * POINTER  # a hash table entry: key, value, next
JEMALLOC_CLASSES = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128)


def sds_bytes(length: int) -> int:
    """A short Redis string: 3 header bytes (sdshdr8), the bytes, a NUL; jemalloc rounds up."""
    return next(c for c in JEMALLOC_CLASSES if c >= 3 + length + 1)


def field_bytes(key_len: int, value_len: int) -> int:
    """One field of a hash past listpack size: its entry, its two strings, and at worst 3
    bucket pointers (a table of up to 2 slots per entry, plus the old one while rehashing)."""
    return ENTRY + sds_bytes(key_len) + sds_bytes(value_len) + 3 * POINTER


def ticket_bound() -> int:
    """queue_join writes tickets[customer] = n, who[n] = customer, seen[n] = 'ms:ms'."""
    customer, number = len(customer_id(0)), len(str(TICKETS))
    seen = 2 * 13 + 1  # two ms timestamps of 13 digits and a colon
    return 2 * field_bytes(customer, number) + field_bytes(number, seen)


@pytest.fixture(scope="module")
def run() -> ScaleRun:
    return bench_scale(load_settings(), TICKETS, SKUS, 1, 16, 1)


def test_rows_exist(run: ScaleRun) -> None:
    names = [r.name for r in run.rows]
    waiting = "20,000 waiting"
    assert names == [
        f"GET /healthz ({waiting})",
        f"GET .../queue/{{ticket}} ({waiting})",
        f"{waiting}: Redis used_memory added [MB]",
        f"{waiting}: bytes per ticket",
        "POST .../holds (1 sku x 3 suppliers)",
        "POST .../holds (500 skus x 3 suppliers)",
        "PUT + open of a sale of 500 skus x 3 suppliers [ms]",
    ]
    assert all(r.requests_per_s > 0 for r in run.rows)
    assert run.load_s > 0
    assert any("checkout of the 500-sku sale vs the 1-sku sale" in n for n in run.notes)


def test_memory_per_ticket_is_three_hash_fields(run: ScaleRun) -> None:
    # 2 * (24 + 16 + 16 + 24) + (24 + 16 + 32 + 24) = 256 bytes; a key per ticket would add at
    # least its entry in the keyspace (24), its object (16) and its name (>= 32): over the bound.
    assert ticket_bound() == 256
    assert 0 < run.bytes_per_ticket <= ticket_bound()


def test_each_ticket_is_one_field_in_each_room_hash(run: ScaleRun) -> None:
    """`seen` loses a place once admission passes it: one a second in the bench's room."""
    fields = {name: n for name, (n, _) in run.room_hashes.items()}
    assert fields["tickets"] == fields["who"] == TICKETS
    assert TICKETS - 120 <= fields["seen"] <= TICKETS
