"""Capped exponential backoff with jitter, and the batch size that follows the load."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Waits base, 2*base, 4*base ... up to cap, each drawn from [d/2, d] so that reconcilers
    that lost PostgreSQL together do not all come back in the same millisecond."""

    def __init__(
        self, base_ms: int, cap_ms: int, rand: Callable[[], float] = random.random
    ) -> None:
        self.base_ms = base_ms
        self.cap_ms = cap_ms
        self.attempt = 0
        self._rand = rand

    def next_delay_s(self) -> float:
        delay_ms = jittered_ms(self.base_ms, self.cap_ms, self.attempt, self._rand)
        self.attempt = min(self.attempt + 1, 30)  # 2**30 * base is far past any cap
        return delay_ms / 1000

    def reset(self) -> None:
        self.attempt = 0


def jittered_ms(
    base_ms: int, cap_ms: int, attempt: int, rand: Callable[[], float] = random.random
) -> float:
    """The wait before try `attempt + 1` (0-based): min(cap, base * 2**attempt), drawn from
    [d/2, d]. Also for the saga's steps and the outbox, whose attempt counts live in PostgreSQL."""
    ceiling: float = min(cap_ms, base_ms * 2 ** min(attempt, 30))
    return ceiling / 2 + rand() * ceiling / 2


def next_batch_size(current: int, got: int, low: int, high: int) -> int:
    """A full read means the stream is behind: double. A read under a quarter full means it
    has caught up: halve. Big batches amortise the transaction; small ones keep latency low."""
    if got >= current:
        return min(high, current * 2)
    if got < current // 4:
        return max(low, current // 2)
    return current


def full_jitter_ms(
    base_ms: int, cap_ms: int, attempt: int, rand: Callable[[], float] = random.random
) -> float:
    """Anywhere in [0, min(cap, base * 2**attempt)]: the feed poller's wait after `attempt + 1`
    failed polls. Pollers of many suppliers that failed together spread over the whole window."""
    ceiling: float = min(cap_ms, base_ms * 2 ** min(attempt, 30))
    return rand() * ceiling
