"""Wait estimates: the admission rate set now, times how many places each admission passes
(ghosts skipped, sessions capped) as measured since the line last stood still (at most 2
minutes, the last seconds weighing most, its drift followed); the p90 from how much that pace
wavers over a wait as long as the one estimated."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from itertools import pairwise
from typing import NamedTuple

SAMPLE_EVERY_MS = 1000
WINDOW_SAMPLES = 121  # 120 one-second intervals
RATE_SAMPLES = 31  # the measured admit rate (a metric) is over the last 30 of them
MIN_BUSY_INTERVALS = 10  # ~100 admissions: fewer let chance in the ghost share skew the crowd
UNMEASURED_P90_FACTOR = 1.5
Z90 = 1.2816  # the standard normal's 90th percentile
# Older intervals weigh less (e^-age/15 s): a line whose ghost share drifts (more and more
# waiters have left by their turn as waits grow) is followed within seconds, not minutes.
RECENCY_INTERVALS = 15.0
TREND_LIMIT = 1.25  # the line's trend moves the factor by a quarter at most
# The share of ghosts among the places ahead is known to within this share of itself.
GHOST_DOUBT = 0.25
FLOOR_S = 0.4  # what no spread measures: the loop's 0.1 s ticks, the sampling, the rounding


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
        with one rate setting, oldest first, since the line last stood still. An idle room, a
        pause, a sold-out stretch or the time before the opening says nothing of how fast a
        line moves (counting them made every estimate pessimistic), and the line that comes out
        of one is not the one that went in: people left while it stood still, so it is
        measured anew, from its second interval (the first spends the credit saved while it
        stood still). An interval across a change of the setting has no one rate."""
        intervals: list[tuple[int, float]] = []
        restarted = False
        for a, b in pairwise(self.points):
            if not b.busy:
                intervals, restarted = [], True
            elif restarted and a.busy:
                restarted = False
            elif a.busy and a.rate_per_s == b.rate_per_s > 0:
                intervals.append(
                    (b.serving - a.serving, a.rate_per_s * (b.now_ms - a.now_ms) / 1000)
                )
        return intervals

    def admit_rate(self) -> float:
        """Admissions per second over the whole window (0 before two samples)."""
        if len(self.points) < 2:
            return 0.0
        first, last = self.points[max(len(self.points) - RATE_SAMPLES, 0)], self.points[-1]
        return (last.admitted - first.admitted) * 1000 / (last.now_ms - first.now_ms)


@dataclass(frozen=True, slots=True)
class Pace:
    """How fast the line moves at the rate set now, and how much it wavers."""

    per_s: float  # places passed per second
    factor: float = 1.0  # places passed per place the rate allows (measured)
    dispersion: float = 0.0  # variance of places passed, per place the rate allows
    factor_var: float = 0.0  # the variance of `factor` as measured (the window is finite)
    measured: bool = False  # from the window; else the setting alone


def pace_of(intervals: list[tuple[int, float]], rate_per_s: float) -> Pace:
    """The window gives the places passed per place the rate allowed (above 1 with ghosts,
    below 1 when the session cap or the stock held admissions back) and how much that varies
    from one interval to the next; scaling the current setting by it follows a rate raised or
    lowered at once instead of 30 s late. Before 10 busy intervals with progress: the setting."""
    rate = max(rate_per_s, 1e-9)
    if len(intervals) < MIN_BUSY_INTERVALS or not any(p > 0 for p, _ in intervals):
        return Pace(rate)
    n = len(intervals)
    weights = [math.exp(-(n - 1 - i) / RECENCY_INTERVALS) for i in range(n)]
    allowed = sum(w * a for w, (_, a) in zip(weights, intervals, strict=True))
    factor = sum(w * p for w, (p, _) in zip(weights, intervals, strict=True)) / allowed
    residuals = [p - factor * a for p, a in intervals]
    squares = sum(w * r**2 for w, r in zip(weights, residuals, strict=True))
    dispersion = squares / allowed * n / (n - 1) * _persistence(residuals)
    effective = allowed**2 / sum(w * w * a for w, (_, a) in zip(weights, intervals, strict=True))
    now, trend_var = _trend(intervals, weights, rate, factor)
    return Pace(now * rate, now, dispersion, dispersion / effective + trend_var, True)


def _trend(
    intervals: list[tuple[int, float]], weights: list[float], rate: float, mean: float
) -> tuple[float, float]:
    """(the factor now, the variance its trend adds to it): the end of a weighted straight line
    through the intervals' factors over time, its slope shrunk towards 0 as much as it is
    uncertain. The line's share of ghosts drifts while waits grow (more of those who leave have
    gone by their turn): a mean of the past lags behind it."""
    ends, t = [], 0.0
    for _, a in reversed(intervals):
        ends.append(t - a / rate / 2)  # the interval's middle, in seconds before now
        t -= a / rate
    xs = ends[::-1]
    ws = [w * a for w, (_, a) in zip(weights, intervals, strict=True)]
    rs = [p / a for p, a in intervals]
    total = sum(ws)
    x_mean = sum(w * x for w, x in zip(ws, xs, strict=True)) / total
    sxx = sum(w * (x - x_mean) ** 2 for w, x in zip(ws, xs, strict=True))
    if sxx <= 0:
        return mean, 0.0
    slope = sum(w * (x - x_mean) * (r - mean) for w, x, r in zip(ws, xs, rs, strict=True)) / sxx
    fit = [mean + slope * (x - x_mean) for x in xs]
    noise = sum(w * (r - f) ** 2 for w, r, f in zip(ws, rs, fit, strict=True)) / total
    doubt = noise * len(xs) / max(len(xs) - 2, 1) / (sxx / total * len(xs))
    shrink = slope**2 / (slope**2 + doubt) if slope else 0.0
    now = mean - slope * shrink * x_mean
    limited = min(max(now, mean / TREND_LIMIT), mean * TREND_LIMIT)
    return limited, (x_mean * shrink) ** 2 * doubt


def _persistence(residuals: list[float]) -> float:
    """How much of one interval's variance lasts over many: 1 + 2 x the lag-1 autocorrelation
    (a sum of n intervals varies n x one interval's variance x this). The admission loop's
    ticks fall on one side of a sample or the other, so one interval's excess is the next
    one's shortfall: that noise cancels over a wait and must not widen its p90."""
    squares = sum(r * r for r in residuals)
    if squares == 0:
        return 1.0
    lag1 = sum(a * b for a, b in pairwise(residuals)) / squares
    return min(max(1 + 2 * lag1, 0.1), 3.0)


def eta_s(places: int, pace: Pace, age_s: float = 0.0) -> tuple[float, float]:
    """(p50, p90) seconds until `places` more places are passed, counted from a room state read
    `age_s` ago (the line has moved on since; without this every answer from the cache was
    late by the cache's age). The p90 adds the spread of a wait this long: places passed over
    it vary as the sum of its intervals (sd grows with the square root of its length, not with
    its length), and the measured mean itself is uncertain by the window's length."""
    p50 = places / pace.per_s
    if not pace.measured:
        p90 = p50 * UNMEASURED_P90_FACTOR
    else:
        over_wait = pace.dispersion * places / pace.factor  # variance of the places passed
        of_mean = (places / pace.factor) ** 2 * pace.factor_var
        # The ghosts ahead are not the ghosts passed: their share drifts as waits change (the
        # longer the wait, the more of those who leave have gone by their turn).
        of_ghosts = (GHOST_DOUBT * max(pace.factor - 1, 0) * places / pace.factor) ** 2
        spread_s = math.sqrt((over_wait + of_mean + of_ghosts) / pace.per_s**2 + FLOOR_S**2)
        p90 = p50 + Z90 * spread_s
    return max(p50 - age_s, 0.0), max(p90 - age_s, 0.0)


def shown(eta: tuple[float, float]) -> tuple[int, int]:
    """The whole seconds an answer gives: both rounded to the nearest (the p90's spread has a
    floor for what a second's rounding and the loop's ticks add, so rounding it down at times
    does not undercut it)."""
    return round(eta[0]), round(eta[1])
