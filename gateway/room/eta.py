"""Wait estimates: the admission rate set now, times how many places each admission has passed
(ghosts skipped, sessions capped) over the last 2 minutes in which the line was moving."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from itertools import pairwise
from typing import NamedTuple

SAMPLE_EVERY_MS = 1000
WINDOW_SAMPLES = 121  # 120 one-second intervals
RATE_SAMPLES = 31  # the measured admit rate (a metric) is over the last 30 of them
MIN_BUSY_INTERVALS = 10  # ~100 admissions: fewer let chance in the ghost share skew the crowd
UNMEASURED_P90_FACTOR = 1.5
SLOW_SHARE = 10  # p90 uses the slowest tenth of the busy intervals


class Sample(NamedTuple):
    now_ms: int
    serving: int
    admitted: int
    busy: bool  # the room was admitting, someone waited and units were left
    rate_per_s: float  # the admission loop's setting


@dataclass
class RateWindow:
    """Samples at most once a second, from the room reads of one worker."""

    points: deque[Sample] = field(default_factory=lambda: deque(maxlen=WINDOW_SAMPLES))

    def add(
        self, now_ms: int, serving: int, admitted: int, *, busy: bool = True, rate_per_s: float = 0
    ) -> None:
        if not self.points or now_ms - self.points[-1].now_ms >= SAMPLE_EVERY_MS:
            self.points.append(Sample(now_ms, serving, admitted, busy, rate_per_s))

    def busy_intervals(self) -> list[tuple[int, float]]:
        """(places passed, places the set rate allowed) of each interval busy at both ends and
        with one rate setting. An idle room, a pause, a sold-out stretch or the time before the
        opening says nothing of how fast a line moves (counting them made every estimate
        pessimistic), and an interval across a change of the setting has no one rate."""
        return [
            (b.serving - a.serving, a.rate_per_s * (b.now_ms - a.now_ms) / 1000)
            for a, b in pairwise(self.points)
            if a.busy and b.busy and a.rate_per_s == b.rate_per_s > 0
        ]

    def admit_rate(self) -> float:
        """Admissions per second over the whole window (0 before two samples)."""
        if len(self.points) < 2:
            return 0.0
        first, last = self.points[max(len(self.points) - RATE_SAMPLES, 0)], self.points[-1]
        return (last.admitted - first.admitted) * 1000 / (last.now_ms - first.now_ms)


def paces(intervals: list[tuple[int, float]], rate_per_s: float) -> tuple[float, float]:
    """(p50, p90) paces in places per second for the rate set now. The window gives the places
    passed per place the rate allowed (above 1 with ghosts, below 1 when the session cap or
    the stock held admissions back); scaling the current setting by it follows a rate raised or
    lowered at once instead of 30 s late. p90: the slowest tenth of the intervals (at least half
    the mean). Before 10 busy intervals with progress: the setting, and 2/3 of it."""
    rate = max(rate_per_s, 1e-9)
    if len(intervals) < MIN_BUSY_INTERVALS or not any(p > 0 for p, _ in intervals):
        return rate, rate / UNMEASURED_P90_FACTOR
    mean = sum(p for p, _ in intervals) / sum(a for _, a in intervals)
    each = sorted(p / a for p, a in intervals)
    slow = each[(len(each) - 1) // SLOW_SHARE]
    return mean * rate, min(max(slow, mean / 2), mean) * rate


def eta_s(places: int, pace: tuple[float, float], age_s: float = 0.0) -> tuple[float, float]:
    """(p50, p90) seconds until `places` more places are passed, counted from a room state read
    `age_s` ago (the line has moved on since; without this every answer from the cache was
    late by the cache's age)."""
    return max(places / pace[0] - age_s, 0.0), max(places / pace[1] - age_s, 0.0)
