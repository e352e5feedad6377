"""Reading a Prometheus page the way a scraper does: prometheus_client's own text parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
Scrape = dict[tuple[str, Labels], float]  # (sample name, sorted labels) -> value


def parse_metrics(text: str) -> Scrape:
    """Every sample of the page; the parser raises on a malformed line."""
    out: Scrape = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in out, f"series {key} appears twice"
            out[key] = sample.value
    return out


def value(scrape: Scrape, name: str, labels: dict[str, str] | None = None) -> float:
    """One series' value; 0 when absent (a counter not yet incremented has no series)."""
    return scrape.get((name, tuple(sorted((labels or {}).items()))), 0.0)


def delta(before: Scrape, after: Scrape, name: str, labels: dict[str, str] | None = None) -> float:
    return value(after, name, labels) - value(before, name, labels)


def series(scrape: Scrape, name: str) -> list[tuple[dict[str, str], float]]:
    """Every series of one sample name, with its labels."""
    return [(dict(labels), v) for (n, labels), v in scrape.items() if n == name]
