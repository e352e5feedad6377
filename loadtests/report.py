"""The load-test report: Locust's figures per route, the stock, what clients were told, the
waiting room, the reconciler, and `flashsale audit`, ending with a verdict."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints

from flashsale.engine import Settings
from flashsale.loadtests.options import LoadOptions
from flashsale.loadtests.outcomes import Outcomes
from flashsale.loadtests.waits import Waits
from flashsale.reconciler.audit import Audit, audit, render
from flashsale.reconciler.cli import engine_for

Doc = dict[str, Any]


@dataclass(frozen=True, slots=True)
class RouteStats:
    method: str
    name: str
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


def _number(raw: str) -> float:
    return float(raw) if raw not in ("", "N/A") else 0.0


def read_stats(path: Path) -> list[RouteStats]:
    """Locust's <prefix>_stats.csv: one row per route, the Aggregated row last."""
    with path.open(newline="") as f:
        return [
            RouteStats(
                row["Type"],
                row["Name"],
                int(row["Request Count"]),
                int(row["Failure Count"]),
                _number(row["Requests/s"]),
                _number(row["50%"]),
                _number(row["95%"]),
                _number(row["99%"]),
            )
            for row in csv.DictReader(f)
        ]


def last_history_row(path: Path) -> dict[str, str] | None:
    """The newest Aggregated row of <prefix>_stats_history.csv (written every second)."""
    try:
        with path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("Name") == "Aggregated"]
    except (OSError, csv.Error):
        return None
    return rows[-1] if rows else None


@dataclass(slots=True)
class ServerSide:
    """What Redis and PostgreSQL hold once the run is over and the reconciler drained."""

    audit: Audit
    now_ms: int
    orders: set[str]
    expired: set[str]  # hold ids with an expire row in the ledger
    released: set[str]
    compensated: set[str]  # confirmed holds the saga undid (their units are back on sale)


_LEDGER_REFS = "SELECT DISTINCT ref FROM stock_movements WHERE sale_id = $1 AND kind = $2"


async def read_server_side(settings: Settings, sale: str, tries: int = 5) -> ServerSide:
    """`flashsale audit` in process (retried while events still arrive, so the two sides can be
    compared), plus the orders and the ledger's expired and released holds."""
    async with engine_for(settings) as engine:
        conn = await asyncpg.connect(settings.local_database_url, timeout=10)
        try:
            for _ in range(tries):
                found = await audit(engine, conn, sale)
                if found.settled or not found.ok:
                    break
            orders = await conn.fetch("SELECT order_id FROM orders WHERE sale_id = $1", sale)
            expired = await conn.fetch(_LEDGER_REFS, sale, "expire")
            released = await conn.fetch(_LEDGER_REFS, sale, "release")
            compensated = await conn.fetch(_LEDGER_REFS, sale, "compensate")
            seconds, micros = await engine.client.time()
        finally:
            await conn.close()
    return ServerSide(
        found,
        int(seconds) * 1000 + int(micros) // 1000,
        {r["order_id"] for r in orders},
        {r["ref"] for r in expired},
        {r["ref"] for r in released},
        {r["ref"] for r in compensated},
    )


@dataclass(slots=True)
class Lag:
    """The reconciler's stream length (events not flushed yet), sampled during and after."""

    max_entries: int = 0
    at_end: int = 0  # when Locust stopped
    settle_s: float = 0.0  # waiting for open holds to expire
    drain_s: float = 0.0  # then for the stream to empty
    drained: bool = False
    open_holds: int = 0  # still open when the report was made


@dataclass(slots=True)
class Report:
    options: LoadOptions
    routes: list[RouteStats]
    outcomes: Outcomes
    view: Doc  # the admin view after the run
    room: Doc | None
    server: ServerSide
    lag: Lag
    waits: Waits | None = None  # the waiters' estimates and ghosts (loadtests/waits.py)
    notes: list[str] = field(default_factory=list)

    def stock_by_sku(self) -> dict[str, int]:
        return {s["sku"]: s["loaded"] + s["adjusted"] for s in self.view["skus"]}

    def oversold(self) -> dict[str, int]:
        """Units sold past the stock, as Redis, PostgreSQL and the clients' confirmations see
        it (all three must be 0)."""
        redis = pg = 0
        state = self.server.audit.state
        for sku in state.skus if state else ():
            for s in sku.suppliers:
                redis += max(0, s.sold + s.reserved - s.loaded - s.adjusted, -s.available)
        for p in self.server.audit.pg.values():
            pg += max(0, p.sold - p.loaded - p.adjusted)
        told = self.outcomes.units_confirmed(self.server.compensated)
        stock = self.stock_by_sku()
        clients = sum(max(0, units - stock.get(sku, 0)) for sku, units in told.items())
        return {"Redis": redis, "PostgreSQL": pg, "clients": clients}

    def lost_confirmations(self) -> list[str]:
        """Holds a client was told are confirmed that are no order in PostgreSQL."""
        return sorted(set(self.outcomes.confirmed) - self.server.orders)

    def wrong_fates(self) -> list[str]:
        """Holds released, or left alone, that the ledger does not show released or expired
        (left ones only once no hold is open any more)."""
        wrong = sorted(set(self.outcomes.released) - self.server.released)
        if not self.lag.open_holds:
            wrong += sorted(set(self.outcomes.left) - self.server.expired)
        return wrong

    def problems(self) -> list[str]:
        found = list(self.notes)
        over = sum(self.oversold().values())
        if over:
            found.append(f"oversold {over} units {self.oversold()}")
        audit_found = self.server.audit
        if not audit_found.ok:
            count = sum(len(v) for v in audit_found.violations.values())
            found.append(f"audit: {count} violations")
        elif not audit_found.settled:
            found.append("audit: the PostgreSQL comparison is still pending (events kept coming)")
        if not self.lag.drained:
            found.append(f"the reconciler did not drain within {self.options.drain_timeout_s} s")
        if lost := self.lost_confirmations():
            found.append(f"{len(lost)} confirmed holds are no order in PostgreSQL: {lost[:5]}")
        if wrong := self.wrong_fates():
            found.append(f"{len(wrong)} released or abandoned holds did not end so: {wrong[:5]}")
        if self.outcomes.bot_holds:
            found.append(f"bots got {len(self.outcomes.bot_holds)} holds without admission")
        failures = self.routes[-1].failures if self.routes else 0
        if failures:
            found.append(f"{failures} requests failed (see report.html / locust_failures.csv)")
        return found

    def render(self) -> str:
        sections = (
            self._head(),
            self._routes(),
            self._stock(),
            self._clients(),
            self._room_and_reconciler(),
            *self._waits(),
            f"audit (flashsale audit --sale {self.options.sale}):\n"
            + render(self.server.audit, self.options.sale, self.server.now_ms),
        )
        problems = self.problems()
        verdict = "result: OK" if not problems else "result: FAILED\n  - " + "\n  - ".join(problems)
        return "\n\n".join((*sections, verdict))

    def _head(self) -> str:
        o = self.options
        mix = f"shopper {o.shopper_weight} : bot {o.bot_weight} : admin {o.admin_weight}"
        where = f"{o.processes} Locust processes" if o.processes > 1 else "1 Locust process"
        return (
            f"== load test of sale {o.sale} at {o.url} ==\n"
            f"{o.duration_s} s, {o.users} users ({mix}), spawn {o.spawn_rate:g}/s, {where}\n"
            f"files: {o.out}/ (report.html, locust_stats.csv, outcomes.json, report.txt)"
        )

    def _routes(self) -> str:
        head = (
            f"{'requests by route':<48} {'reqs':>7} {'fails':>6} {'req/s':>7} "
            f"{'p50':>6} {'p95':>6} {'p99':>6} (ms)"
        )
        rows = [head]
        for r in self.routes:
            name = "all routes" if r.name == "Aggregated" else f"{r.method} {r.name}"
            rows.append(
                f"{name:<48} {r.requests:>7} {r.failures:>6} {r.rps:>7.1f} "
                f"{r.p50_ms:>6.0f} {r.p95_ms:>6.0f} {r.p99_ms:>6.0f}"
            )
        return "\n".join(rows)

    def _stock(self) -> str:
        rows = [f"{'stock (Redis)':<20} {'sold':>6} {'of':>6} {'held':>6} {'available':>10}"]
        sold = stock = 0
        for s in self.view["skus"]:
            total = s["loaded"] + s["adjusted"]
            sold, stock = sold + s["sold"], stock + total
            rows.append(
                f"{s['sku']:<20} {s['sold']:>6} {total:>6} {s['reserved']:>6} {s['available']:>10}"
            )
        share = 100 * sold / stock if stock else 0.0
        over = self.oversold()
        rows.append(
            f"units sold {sold} of {stock} ({share:.1f}%); oversold {sum(over.values())} "
            f"(Redis {over['Redis']}, PostgreSQL {over['PostgreSQL']}, "
            f"confirmations told to clients {over['clients']})"
        )
        return "\n".join(rows)

    def _clients(self) -> str:
        c: Counter[str] = self.outcomes.counts
        told = sum(self.outcomes.units_confirmed().values())
        refusals = ", ".join(
            f"{n} {code}" for code, n in sorted(self.outcomes.bot_refusals.items())
        )
        return (
            f"shoppers: {c['journeys']} journeys, {c['joined']} joined the line, "
            f"{c['admitted']} admitted, {c['sold_out_seen']} told sold out, "
            f"{c['ticket_expired']} tickets expired, {c['gave_up']} left the line "
            f"(patience or end of run), {c['left_waiting']} left on purpose (--leave-share "
            f"{self.options.leave_share:g}), {c['errors']} broken, {c['cut']} cut off\n"
            f"holds: {c['holds']} placed ({c['replays']} idempotent replays): "
            f"{c['confirmed']} confirmed ({told} units), {c['released']} released, "
            f"{c['abandoned']} abandoned, {c['confirm_late']} paid too late; "
            f"checkout refused: {c['refused_sold_out']} sold out, {c['refused_limit']} over "
            f"the limit; {c['rate_limited']} times rate limited\n"
            f"bots: {c['bot_checkouts']} checkouts, {len(self.outcomes.bot_holds)} holds; "
            f"refused: {refusals or 'none'}"
        )

    def _room_and_reconciler(self) -> str:
        room = self.room
        line = (
            f"waiting room: {room['tickets']} tickets, {room['admitted']} admitted, "
            f"{room['abandoned']} skipped as ghosts, {room['waiting']} still waiting, "
            f"{room['active']} active sessions; admit rate set {room['admit_rate_per_s']}/s "
            f"(over the gateway's recent window, now: {room['measured_admit_rate_per_s']}/s; "
            "0 once sold out)"
            if room
            else "waiting room: none (the sale has no waiting room)"
        )
        s, lag = self.server, self.lag
        return (
            f"{line}\n"
            f"PostgreSQL (whole sale): {len(s.orders)} orders, {len(s.expired)} holds expired, "
            f"{len(s.released)} released; of the holds clients placed, "
            f"{len(self.lost_confirmations())} confirmed ones are missing and "
            f"{len(self.wrong_fates())} others did not end as told\n"
            f"reconciler lag: at most {lag.max_entries} events during the run, {lag.at_end} "
            f"when it ended; open holds expired {lag.settle_s:.1f} s after the run "
            f"({lag.open_holds} still open), stream "
            + (f"drained {lag.drain_s:.1f} s later" if lag.drained else "NOT drained")
        )

    def _waits(self) -> tuple[str, ...]:
        """The estimates and, with --leave-share, the ghosts; nothing without a waiting room."""
        if self.waits is None:
            return ()
        ghosts = self.waits.ghosts
        if not self.options.leave_share and not ghosts.left:
            return (self.waits.estimates.line(),)
        return (self.waits.estimates.line() + "\n" + ghosts.line(),)
