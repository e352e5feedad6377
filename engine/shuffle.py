"""The pre-queue shuffle: a permutation anyone can recompute from the revealed seed."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from functools import lru_cache

_SPACE = 2**64


def new_seed() -> tuple[str, str]:
    """A fresh seed (64 hex characters) and its SHA-256 (hex), the commitment published first."""
    seed = secrets.token_hex(32)
    return seed, commitment(seed)


def commitment(seed: str) -> str:
    """`printf %s SEED | sha256sum` gives the same."""
    return hashlib.sha256(seed.encode()).hexdigest()


class _Draws:
    """Uniform integers from SHA-256(seed || counter as 8 bytes big-endian), first 8 bytes as a
    big-endian integer; values past the last whole multiple of the bound are drawn again, so
    there is no modulo bias."""

    def __init__(self, seed: str) -> None:
        self._seed = seed.encode()
        self._counter = 0

    def below(self, bound: int) -> int:
        limit = _SPACE - _SPACE % bound
        while True:
            block = hashlib.sha256(self._seed + self._counter.to_bytes(8, "big")).digest()
            self._counter += 1
            value = int.from_bytes(block[:8], "big")
            if value < limit:
                return value % bound


def prequeue_order(seed: str, size: int) -> list[int]:
    """Tickets 1..size in their order after the shuffle: element p-1 is the ticket at place p.
    Fisher-Yates from the last index down: for i = size-1 .. 1, swap i with below(i + 1)."""
    order = list(range(1, size + 1))
    draws = _Draws(seed)
    for i in range(size - 1, 0, -1):
        j = draws.below(i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def places_of(order: list[int]) -> list[int]:
    """The inverse: element t is the place of ticket t (element 0 unused)."""
    places = [0] * (len(order) + 1)
    for index, ticket in enumerate(order):
        places[ticket] = index + 1
    return places


@lru_cache(maxsize=64)
def prequeue_places(seed: str, size: int) -> tuple[int, ...]:
    """places_of(prequeue_order(seed, size)), kept for the rooms in use (~60 ms per 50k)."""
    return tuple(places_of(prequeue_order(seed, size)))


@lru_cache(maxsize=8)
def prequeue_ticket_order(seed: str, size: int) -> tuple[int, ...]:
    """prequeue_order(seed, size), built from the cached places rather than drawn again."""
    places = prequeue_places(seed, size)
    order = [0] * size
    for ticket in range(1, size + 1):
        order[places[ticket] - 1] = ticket
    return tuple(order)


@lru_cache(maxsize=8)
def prequeue_order_sha256(seed: str, size: int) -> str:
    """order_sha256 of the room's draw, kept: the receipt is public and asked for again and
    again, and joining a large pre-queue's numbers for every request would be work without
    bound."""
    return order_sha256(prequeue_ticket_order(seed, size))


def order_sha256(order: Sequence[int]) -> str:
    """The order's fingerprint in the fairness receipt: SHA-256 (hex) of the ticket numbers at
    places 1, 2, ... in decimal, joined by ',' (no spaces; the empty order hashes '')."""
    return hashlib.sha256(",".join(map(str, order)).encode()).hexdigest()
