"""`flashsale audit`: invariants 1-4 of docs/design.md of one sale, Redis against PostgreSQL."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from flashsale.engine import Engine, keys
from flashsale.engine.invariants import check_sale
from flashsale.engine.results import SaleState
from flashsale.reconciler.streams import Lag, SaleStream, consumer_name, count_dead
from flashsale.store import feeds
from flashsale.store.audit import (
    FedLevel,
    Key,
    Ledger,
    PgStock,
    fed_levels,
    ledger_sums,
    order_units,
    orders_undone,
    stock_levels,
)
from flashsale.store.db import Connection

INVARIANTS = {
    1: "stock balances, never oversold",
    2: "no hold confirmed after its expiry",
    3: "PostgreSQL matches Redis (flushed)",
    4: "per-user limit",
}


@dataclass(slots=True)
class Audit:
    state: SaleState | None
    pg: dict[Key, PgStock]
    ledger: dict[Key, Ledger]
    order_units: dict[Key, int]  # lines of orders no compensation undid
    lag: Lag
    dead: int
    settled: bool  # nothing unflushed and nothing new while reading: sides comparable
    strict: bool
    violations: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    # Supplier stock feeds of the sale's suppliers: shown, never a violation (a level describes
    # the supplier, not the sale's books).
    fed: dict[Key, FedLevel] = field(default_factory=dict)
    feed_health: list[feeds.FeedHealth] = field(default_factory=list)

    @property
    def pending(self) -> bool:
        return not self.settled and not self.strict

    @property
    def ok(self) -> bool:
        return not any(self.violations.values())


# --- the checks ---------------------------------------------------------------------------------


def _invariant_of(message: str) -> int:
    """engine.invariants.check_sale returns untagged messages; its wording tells them apart."""
    if "confirmed at" in message or "holds index" in message:
        return 2
    if message.startswith("customer "):
        return 4
    return 1


def _redis_levels(state: SaleState) -> dict[Key, PgStock]:
    return {
        (sku.sku, s.supplier): PgStock(s.loaded, s.adjusted, s.sold)
        for sku in state.skus
        for s in sku.suppliers
    }


def compare_stock(audit: Audit) -> list[str]:
    """Invariant 3 on the stock: Redis = PostgreSQL stock levels = ledger sums = order lines."""
    redis = _redis_levels(audit.state) if audit.state else {}
    bad = []
    for key in sorted(redis.keys() | audit.pg.keys()):
        r, p = redis.get(key, PgStock()), audit.pg.get(key, PgStock())
        sums = audit.ledger.get(key, Ledger())
        where = f"{key[0]}/{key[1]}"
        if r != p:
            bad.append(f"{where}: Redis {r} but PostgreSQL {p}")
        if (sums.load, sums.adjust, sums.sold) != (p.loaded, p.adjusted, p.sold):
            bad.append(f"{where}: ledger sums {sums} do not match the stock level {p}")
        if audit.order_units.get(key, 0) != p.sold:
            bad.append(f"{where}: orders hold {audit.order_units.get(key, 0)} units, sold {p.sold}")
    return bad


async def hold_statuses(engine: Engine, sale_id: str) -> dict[str, str]:
    """hold id -> status of every hold hash Redis still has, read 1000 to a pipeline (one round
    trip per hold costs ~1 ms in redis-py, seconds for a sale's worth)."""
    found = [k async for k in engine.client.scan_iter(match=keys.hold(sale_id, "*"), count=1000)]
    out: dict[str, str] = {}
    for start in range(0, len(found), 1000):
        page = [str(k) for k in found[start : start + 1000]]
        pipe = engine.client.pipeline(transaction=False)
        for key in page:
            pipe.hget(key, "status")
        for key, status in zip(page, await pipe.execute(), strict=True):
            if status is not None:
                out[key.rsplit(":", 1)[1]] = str(status)
    return out


async def compare_holds(engine: Engine, conn: Connection, sale_id: str) -> list[str]:
    """Invariant 3 on the orders: every confirmed hold Redis still has is one live order, every
    compensated one an undone order. With the units equal (compare_stock) that is one order per
    confirmed hold; holds past their retention are gone from Redis and not checked here."""
    orders = await orders_undone(conn, sale_id)
    bad = []
    for hold_id, status in sorted((await hold_statuses(engine, sale_id)).items()):
        if status == "confirmed" and orders.get(hold_id) is not False:
            bad.append(f"confirmed hold {hold_id} is not a live order in PostgreSQL")
        if status == "compensated" and orders.get(hold_id) is not True:
            bad.append(f"compensated hold {hold_id} is not undone in PostgreSQL")
    return bad


async def audit(engine: Engine, conn: Connection, sale_id: str, *, strict: bool = False) -> Audit:
    stream = SaleStream(engine.client, sale_id, consumer_name())
    before = await stream.lag()
    state = await engine.stock(sale_id)
    found = Audit(
        state=state,
        pg=await stock_levels(conn, sale_id),
        ledger=await ledger_sums(conn, sale_id),
        order_units=await order_units(conn, sale_id),
        lag=before,
        dead=await count_dead(engine.client, sale_id),
        settled=False,
        strict=strict,
    )
    found.fed = await fed_levels(conn, sale_id)
    for supplier_id in sorted({supplier for _, supplier in found.fed}):
        health = await feeds.health(conn, supplier_id)
        if health is not None:
            found.feed_health.append(health)
    holds_bad = await compare_holds(engine, conn, sale_id)
    after = await stream.lag()
    # Comparable only if everything was flushed before the reads and nothing new came since.
    found.settled = before.entries == 0 and before.last_id == after.last_id
    for message in await check_sale(engine, sale_id):
        found.violations[_invariant_of(message)].append(message)
    if found.dead:
        found.violations[3].append(f"{found.dead} events are in the dead letters, not applied")
    if strict and not found.settled:
        found.violations[3].append(f"{after.entries} events not flushed yet (--strict)")
    if not found.pending:
        found.violations[3] += compare_stock(found) + holds_bad
    return found


# --- the printout -------------------------------------------------------------------------------

_HEAD = (
    f"{'sku':<12} {'supplier':<10}|{'Redis: loaded':>14} {'adjusted':>9} {'available':>10}"
    f" {'reserved':>9} {'sold':>8} |{'PG: loaded':>11} {'adjusted':>9} {'sold':>8} "
    f"|{'ledger: load':>13} {'adjust':>7} {'sold':>8} |{'orders':>8}"
)


def _rows(found: Audit) -> list[str]:
    redis = {
        (sku.sku, s.supplier): s
        for sku in (found.state.skus if found.state else ())
        for s in sku.suppliers
    }
    rows = []
    for key in sorted(redis.keys() | found.pg.keys()):
        r, p = redis.get(key), found.pg.get(key, PgStock())
        sums = found.ledger.get(key, Ledger())
        live = (
            f"{r.loaded:>14} {r.adjusted:>9} {r.available:>10} {r.reserved:>9} {r.sold:>8}"
            if r
            else f"{'-':>14} {'-':>9} {'-':>10} {'-':>9} {'-':>8}"
        )
        rows.append(
            f"{key[0]:<12} {key[1]:<10}|{live} |{p.loaded:>11} {p.adjusted:>9} {p.sold:>8} "
            f"|{sums.load:>13} {sums.adjust:>7} {sums.sold:>8} |{found.order_units.get(key, 0):>8}"
        )
    return rows


def _verdict(found: Audit, number: int) -> str:
    if found.violations.get(number):
        return f"VIOLATED ({len(found.violations[number])})"
    if number == 3 and found.pending:
        return f"pending: {found.lag.entries} events not flushed yet"
    return "ok"


def _feed_lines(found: Audit) -> list[str]:
    """Per fed supplier its health, per fed (sku, supplier) what the sale offers, holds and owes
    against the level (offered + held + sold-not-allocated stays within on_hand less what was
    allocated since, unless the level came after the units were taken: its shortfall)."""
    lines = []
    for h in found.feed_health:
        lines.append(
            f"feed {h.supplier_id}: {'STALE' if h.stale else 'fresh'}, last update "
            f"{h.age_s:.1f} s ago, {h.quarantine_open} quarantined for review, "
            f"{h.poll_errors} poll errors"
        )
    skus = found.state.skus if found.state else ()
    redis = {(k.sku, s.supplier): s for k in skus for s in k.suppliers}
    for (sku, supplier), level in sorted(found.fed.items()):
        r = redis.get((sku, supplier))
        if r is None:
            continue
        pending = max(0, r.sold - level.settled)
        lines.append(
            f"    {sku}/{supplier}: on_hand {level.on_hand} - {level.allocated_since} allocated "
            f"since; offered {r.available} + held {r.reserved} + sold not allocated {pending}"
        )
    return lines


def render(found: Audit, sale_id: str, now_ms: int) -> str:
    state = found.state
    head = (
        f"sale {sale_id}: status {state.status}, config v{state.version}, "
        f"{state.open_holds} open holds"
        if state
        else f"sale {sale_id}: not loaded in Redis"
    )
    age_s = (now_ms - found.lag.oldest_ms) / 1000 if found.lag.entries else 0.0
    lines = [head, _HEAD, "-" * len(_HEAD), *_rows(found), ""]
    lines.append(
        f"reconciler lag: {found.lag.entries} events not flushed (oldest {age_s:.2f} s), "
        f"{found.dead} dead letters"
    )
    lines += _feed_lines(found)
    for number, title in INVARIANTS.items():
        lines.append(f"invariant {number} {title:<38} {_verdict(found, number)}")
        lines += [f"    - {m}" for m in found.violations.get(number, [])[:20]]
    count = sum(len(v) for v in found.violations.values())
    lines.append("audit: OK" if found.ok else f"audit: {count} violations")
    return "\n".join(lines)
