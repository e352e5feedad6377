"""How often a waiter is told to poll, and so how long it may stay silent before it is a ghost."""

from __future__ import annotations

from flashsale.engine.settings import Settings
from flashsale.engine.waiting_room import Beat, silence_allowed_ms

SOLD_OUT_SLOWER = 5  # units come back rarely: pollers of a sold-out room come 5 times slower
# Waiters told to poll at the normal interval may stay silent silence_allowed_ms of it; the front
# is where the turn comes sooner than that (with a margin for the estimate's error).
FRONT_MARGIN = 1.3


def front_poll_ms(settings: Settings) -> int:
    return min(settings.queue_poll_front_ms, settings.queue_poll_ms)


def in_front(settings: Settings, eta_p50_s: float) -> bool:
    """Whether a waiter this far from its turn is told to poll at the front's interval. A ghost
    is found out only once the silence its last advice allowed is over: at the normal interval
    that is several seconds, so near the turn the advice is shorter, and a waiter who leaves
    there is skipped rather than admitted for nobody."""
    normal_s = silence_allowed_ms(settings, settings.queue_poll_ms) / 1000
    return eta_p50_s <= FRONT_MARGIN * normal_s


def poll_after_ms(settings: Settings, eta_p50_s: float | None, *, sold_out: bool = False) -> int:
    """The advice of one status answer; eta_p50_s None: the place is not known yet."""
    if sold_out:
        return settings.queue_poll_ms * SOLD_OUT_SLOWER
    if eta_p50_s is not None and in_front(settings, eta_p50_s):
        return front_poll_ms(settings)
    return settings.queue_poll_ms


def heard(settings: Settings, poll_ms: int) -> Beat:
    """What a heartbeat records of a waiter told to poll again in `poll_ms`."""
    return Beat(silence_allowed_ms(settings, poll_ms), poll_ms)
