"""What the Locust shoppers and bots were told, counted per process and summed on the master."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Lines = dict[str, int]  # sku -> units

# The counters, by name (docs/load-testing.md explains them).
JOURNEY = ("journeys", "joined", "no_waiting_room", "admitted", "sold_out_seen", "ticket_expired")
LEFT = ("gave_up", "left_waiting", "sale_not_open", "cut", "stopped_before_joining")
CHECKOUT = ("holds", "replays", "refused_sold_out", "refused_limit", "rate_limited")
AFTER = ("confirmed", "confirm_late", "released", "release_late", "abandoned")
BOT = ("bot_checkouts", "bot_holds")


@dataclass(slots=True)
class Outcomes:
    """Counters plus the holds by fate, so the report (and the test) can compare what clients were
    told with what Redis and PostgreSQL hold: every confirmed hold must be one order, every hold
    left alone must expire, and no bot may hold anything."""

    counts: Counter[str] = field(default_factory=Counter)
    confirmed: dict[str, Lines] = field(default_factory=dict)
    released: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)  # abandoned, or confirmed too late: to expire
    bot_holds: list[str] = field(default_factory=list)
    bot_refusals: Counter[str] = field(default_factory=Counter)  # "401 TOKEN_INVALID" -> n
    # A waiter's first estimate from a measured pace: [ticket, given_at_ms, p50_s, p90_s,
    # position].
    estimates: list[list[Any]] = field(default_factory=list)
    leavers: list[list[Any]] = field(default_factory=list)  # [ticket, left_at_ms] (--leave-share)

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def to_json(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "confirmed": self.confirmed,
            "released": self.released,
            "left": self.left,
            "bot_holds": self.bot_holds,
            "bot_refusals": dict(self.bot_refusals),
            "estimates": self.estimates,
            "leavers": self.leavers,
        }

    def take(self) -> dict[str, Any]:
        """A worker's report to the master: everything since the last one, then reset."""
        doc = self.to_json()
        self.counts, self.confirmed, self.released = Counter(), {}, []
        self.left, self.bot_holds, self.bot_refusals = [], [], Counter()
        self.estimates, self.leavers = [], []
        return doc

    def add(self, doc: dict[str, Any]) -> None:
        """Merges a worker's report (or a file) into this one."""
        self.counts.update(doc.get("counts", {}))
        self.confirmed.update(doc.get("confirmed", {}))
        self.released += doc.get("released", [])
        self.left += doc.get("left", [])
        self.bot_holds += doc.get("bot_holds", [])
        self.bot_refusals.update(doc.get("bot_refusals", {}))
        self.estimates += doc.get("estimates", [])
        self.leavers += doc.get("leavers", [])

    def units_confirmed(self, undone: AbstractSet[str] = frozenset()) -> Counter[str]:
        """Units of the confirmations clients were told of, but the `undone` holds (the saga
        gave their units back: a declined payment, a cancelled backorder)."""
        total: Counter[str] = Counter()
        for hold_id, lines in self.confirmed.items():
            if hold_id not in undone:
                total.update(lines)
        return total

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1, sort_keys=True))

    @classmethod
    def read(cls, path: Path) -> Outcomes:
        found = cls()
        found.add(json.loads(path.read_text()))
        return found
