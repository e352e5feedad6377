"""Every Redis key name of the engine, hash-tagged with its sale so a sale lives in one slot."""

from __future__ import annotations

import re

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def prefix(sale_id: str) -> str:
    """The common prefix of a sale's keys; scripts append the suffixes below to it."""
    return f"fs:{{{sale_id}}}:"


def sale(sale_id: str) -> str:
    return prefix(sale_id) + "sale"


def skus(sale_id: str) -> str:
    return prefix(sale_id) + "skus"


def stock(sale_id: str, sku: str) -> str:
    return prefix(sale_id) + "stock:" + sku


def holds(sale_id: str) -> str:
    return prefix(sale_id) + "holds"


def hold(sale_id: str, hold_id: str) -> str:
    return prefix(sale_id) + "hold:" + hold_id


def user(sale_id: str, customer_id: str) -> str:
    return prefix(sale_id) + "user:" + customer_id


def idem(sale_id: str, customer_id: str, idempotency_key: str) -> str:
    """Scoped per customer: one shopper's key can never collide with, or reveal, another's hold."""
    return prefix(sale_id) + "idem:" + customer_id + ":" + idempotency_key


def adjusted(sale_id: str, ref: str) -> str:
    """The marker of an adjustment made once for `ref` (the saga's cancelled line)."""
    return prefix(sale_id) + "adjusted:" + ref


def events(sale_id: str) -> str:
    return prefix(sale_id) + "events"


def sales_index() -> str:
    """The set of sale ids loaded into this Redis (reconciler and sweeper iterate it)."""
    return "fs:sales"


# --- waiting room: same {sale} hash tag, so a room's keys share the slot of its sale ------------


def room_prefix(sale_id: str) -> str:
    return f"wr:{{{sale_id}}}:"


def room(sale_id: str) -> str:
    """Hash: seq, serving, prequeue, opened_at_ms, seed, seed_sha256, counters, allowance."""
    return room_prefix(sale_id) + "room"


def room_tickets(sale_id: str) -> str:
    """Hash customer -> ticket number (one ticket per customer)."""
    return room_prefix(sale_id) + "tickets"


def room_who(sale_id: str) -> str:
    """Hash ticket number -> customer."""
    return room_prefix(sale_id) + "who"


def room_seen(sale_id: str) -> str:
    """Hash place -> server ms by which a waiting place must be heard from again (a ghost after)."""
    return room_prefix(sale_id) + "seen"


def room_active(sale_id: str) -> str:
    """Zset place -> session end ms: admitted sessions that have not placed a hold yet."""
    return room_prefix(sale_id) + "active"


def room_admitted(sale_id: str) -> str:
    """Hash place -> 'admitted_at_ms:session_end_ms' (':r' appended when let in again after it
    came back) for every admission that stands (not taken back)."""
    return room_prefix(sale_id) + "admitted"


def room_unclaimed(sale_id: str) -> str:
    """Zset place -> server ms by which its admission must be picked up (a status read)."""
    return room_prefix(sale_id) + "unclaimed"


def room_back(sale_id: str) -> str:
    """Zset place -> ms it came back: passed places without an admission that polled again."""
    return room_prefix(sale_id) + "back"


def room_released(sale_id: str) -> str:
    """Hash place -> 'admitted_at_ms:released_at_ms': admissions taken back, never picked up."""
    return room_prefix(sale_id) + "released"


def room_lease(sale_id: str) -> str:
    """String: the id of the gateway process whose admission loop runs this room."""
    return room_prefix(sale_id) + "lease"


def room_keys(sale_id: str) -> list[str]:
    """The room's long-lived keys (the lease, the tries and the rate buckets expire on their
    own)."""
    return [
        room(sale_id),
        room_tickets(sale_id),
        room_who(sale_id),
        room_seen(sale_id),
        room_active(sale_id),
        room_admitted(sale_id),
        room_unclaimed(sale_id),
        room_back(sale_id),
        room_released(sale_id),
    ]


def room_tries(sale_id: str, place: int | None) -> str:
    """Checkout attempts made with the admission token of `place`; None: no token (unused)."""
    return room_prefix(sale_id) + "tries:" + ("-" if place is None else str(place))


def rate_bucket(sale_id: str, kind: str, client: str) -> str:
    """Token bucket of one client (kind 'c' customer, 'a' address) or of the sale ('s', '')."""
    return room_prefix(sale_id) + "rl:" + kind + ":" + client
