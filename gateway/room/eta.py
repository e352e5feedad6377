"""Wait estimates from the measured pace of a room: places passed per second over the last 30 s."""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field
from itertools import pairwise

SAMPLE_EVERY_MS = 1000
WINDOW_SAMPLES = 31  # 30 one-second intervals
UNMEASURED_P90_FACTOR = 1.5


@dataclass
class RateWindow:
    """(server ms, serving, admitted) at most once a second, from the room reads of one worker."""

    points: deque[tuple[int, int, int]] = field(
        default_factory=lambda: deque(maxlen=WINDOW_SAMPLES)
    )

    def add(self, now_ms: int, serving: int, admitted: int) -> None:
        if not self.points or now_ms - self.points[-1][0] >= SAMPLE_EVERY_MS:
            self.points.append((now_ms, serving, admitted))

    def pass_rates(self) -> list[float]:
        """Places passed per second (admitted or skipped) in each interval of the window."""
        return [(b[1] - a[1]) * 1000 / (b[0] - a[0]) for a, b in pairwise(self.points)]

    def admit_rate(self) -> float:
        """Admissions per second over the whole window (0 before two samples)."""
        if len(self.points) < 2:
            return 0.0
        first, last = self.points[0], self.points[-1]
        return (last[2] - first[2]) * 1000 / (last[0] - first[0])


def paces(rates: list[float], configured_per_s: float) -> tuple[float, float]:
    """(p50, p90) paces in places per second. p50 is the mean pace of the window, p90 its
    slowest tenth (at least half the mean, so one stalled second does not make the estimate
    useless). Before 3 measured seconds with progress: the configured rate, and 2/3 of it."""
    if len(rates) >= 3 and any(r > 0 for r in rates):
        mean = statistics.fmean(rates)
        slow = sorted(rates)[(len(rates) - 1) // 10]
        return mean, min(max(slow, mean / 2), mean)
    rate = max(configured_per_s, 1e-9)
    return rate, rate / UNMEASURED_P90_FACTOR


def eta_s(places: int, rates: list[float], configured_per_s: float) -> tuple[float, float]:
    """(p50, p90) seconds until `places` more places are passed (see `paces`)."""
    p50_pace, p90_pace = paces(rates, configured_per_s)
    return places / p50_pace, places / p90_pace
