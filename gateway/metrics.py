"""Prometheus text metrics kept in-process: counters and fixed-bucket latency histograms."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    total: float = 0.0

    def observe(self, value_s: float) -> None:
        self.total += value_s
        for i, bound in enumerate(LATENCY_BUCKETS_S):
            if value_s <= bound:
                self.counts[i] += 1
                return
        self.counts[-1] += 1


@dataclass
class Metrics:
    """One per worker process; Prometheus sums workers by scraping each (or via the LB)."""

    requests: dict[tuple[str, str, int], int] = field(default_factory=lambda: defaultdict(int))
    latency: dict[str, Histogram] = field(default_factory=lambda: defaultdict(Histogram))
    counters: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def count(self, name: str, n: int = 1) -> None:
        """A counter of something that went wrong or was refused (`*_total`)."""
        self.counters[name] += n

    def observe(self, route: str, method: str, status: int, elapsed_s: float) -> None:
        self.requests[(route, method, status)] += 1
        self.latency[route].observe(elapsed_s)

    def render(self, gauges: list[tuple[str, dict[str, str], float]]) -> str:
        lines = ["# TYPE flashsale_http_requests_total counter"]
        for (route, method, status), n in sorted(self.requests.items()):
            lines.append(
                f'flashsale_http_requests_total{{route="{route}",method="{method}",'
                f'status="{status}"}} {n}'
            )
        for name, n in sorted(self.counters.items()):
            lines += [f"# TYPE {name} counter", f"{name} {n}"]
        lines.append("# TYPE flashsale_http_request_duration_seconds histogram")
        for route, hist in sorted(self.latency.items()):
            lines += _histogram_lines("flashsale_http_request_duration_seconds", route, hist)
        seen: set[str] = set()
        for name, labels, value in gauges:
            if name not in seen:
                seen.add(name)
                lines.append(f"# TYPE {name} gauge")
            label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
            lines.append(f"{name}{{{label_text}}} {value:g}")
        return "\n".join(lines) + "\n"


def _histogram_lines(name: str, route: str, hist: Histogram) -> list[str]:
    lines = []
    running = 0
    for bound, count in zip(LATENCY_BUCKETS_S, hist.counts, strict=False):
        running += count
        lines.append(f'{name}_bucket{{route="{route}",le="{bound}"}} {running}')
    running += hist.counts[-1]
    lines.append(f'{name}_bucket{{route="{route}",le="+Inf"}} {running}')
    lines.append(f'{name}_sum{{route="{route}"}} {hist.total:.6f}')
    lines.append(f'{name}_count{{route="{route}"}} {running}')
    return lines
