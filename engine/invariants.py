"""Checks invariants 1, 2 and 4 (docs/design.md) of one sale against what Redis holds now."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from flashsale.engine import keys
from flashsale.engine.api import Engine
from flashsale.engine.connection import zrange_scores
from flashsale.engine.results import SaleState, parse_allocations


@dataclass(frozen=True, slots=True)
class HoldRecord:
    hold_id: str
    customer_id: str
    status: str
    expires_at_ms: int
    confirmed_at_ms: int
    lines: str


async def read_holds(engine: Engine, sale_id: str) -> list[HoldRecord]:
    """Every hold hash of the sale that still exists (ended holds live for the retention time)."""
    found = [
        key async for key in engine.client.scan_iter(match=keys.hold(sale_id, "*"), count=1000)
    ]
    out = []
    for start in range(0, len(found), 500):  # pipelined: one round trip per 500 holds
        pipe = engine.client.pipeline(transaction=False)
        for key in found[start : start + 500]:
            pipe.hgetall(key)
        replies = await pipe.execute()
        out += _records(found[start : start + 500], replies)
    return out


def _records(hold_keys: list[str], replies: list[dict[str, str]]) -> list[HoldRecord]:
    out = []
    for key, h in zip(hold_keys, replies, strict=True):
        if h:  # expired by retention between the scan and the read
            out.append(
                HoldRecord(
                    key.rsplit(":", 1)[1],
                    h["user"],
                    h["status"],
                    int(h["expires_at_ms"]),
                    int(h.get("confirmed_at_ms", 0)),
                    h["lines"],
                )
            )
    return out


def _units(holds: list[HoldRecord], statuses: set[str]) -> Counter[tuple[str, str]]:
    total: Counter[tuple[str, str]] = Counter()
    for h in holds:
        if h.status in statuses:
            for a in parse_allocations(h.lines):
                total[(a.sku, a.supplier)] += a.qty
    return total


def stock_violations(state: SaleState) -> list[str]:
    """Invariant 1: per sku and supplier available + reserved + sold == loaded + adjusted, >= 0."""
    bad = []
    for sku in state.skus:
        for s in sku.suppliers:
            if s.available + s.reserved + s.sold != s.loaded + s.adjusted:
                bad.append(f"{sku.sku}/{s.supplier}: {s} does not balance")
            if min(s.available, s.reserved, s.sold) < 0:
                bad.append(f"{sku.sku}/{s.supplier}: negative counter {s}")
        for name in ("loaded", "adjusted", "available", "reserved", "sold"):
            if getattr(sku, name) != sum(getattr(s, name) for s in sku.suppliers):
                bad.append(f"{sku.sku}: total {name} is not the sum over its suppliers")
    return bad


async def check_sale(engine: Engine, sale_id: str) -> list[str]:
    """All violations found, empty when the sale is sound; holds must be complete (not expired
    from Redis by retention) for the reserved/sold cross-check to mean anything."""
    state = await engine.stock(sale_id)
    if state is None:
        return [f"sale {sale_id} is not loaded"]
    holds = await read_holds(engine, sale_id)
    bad = stock_violations(state)
    reserved = _units(holds, {"held"})
    sold = _units(holds, {"confirmed"})
    for sku in state.skus:
        for s in sku.suppliers:
            key = (sku.sku, s.supplier)
            if s.reserved != reserved[key]:
                bad.append(f"{key}: reserved {s.reserved} but held holds carry {reserved[key]}")
            if s.sold != sold[key]:
                bad.append(f"{key}: sold {s.sold} but confirmed holds carry {sold[key]}")
    bad += await _expiry_violations(engine, sale_id, holds)
    bad += await _limit_violations(engine, state, holds)
    return bad


async def _expiry_violations(engine: Engine, sale_id: str, holds: list[HoldRecord]) -> list[str]:
    """Invariant 2: no hold was confirmed at or after its expiry, and every held hold is in the
    sweeper's index with its expiry (so its units come back when it passes)."""
    index = dict(await zrange_scores(engine.client, keys.holds(sale_id)))
    bad = [
        f"hold {h.hold_id} confirmed at {h.confirmed_at_ms} >= expiry {h.expires_at_ms}"
        for h in holds
        if h.status == "confirmed" and h.confirmed_at_ms >= h.expires_at_ms
    ]
    held = {h.hold_id: h.expires_at_ms for h in holds if h.status == "held"}
    if {k: int(v) for k, v in index.items()} != held:
        bad.append(f"holds index {len(index)} entries disagrees with {len(held)} held holds")
    return bad


async def _limit_violations(engine: Engine, state: SaleState, holds: list[HoldRecord]) -> list[str]:
    """Invariant 4: no customer above the per-sku limit; the counter equals their live holds."""
    owned: Counter[tuple[str, str]] = Counter()
    for h in holds:
        if h.status in ("held", "confirmed"):
            for a in parse_allocations(h.lines):
                owned[(h.customer_id, a.sku)] += a.qty
    customers = sorted({c for c, _ in owned})
    pipe = engine.client.pipeline(transaction=False)
    for customer in customers:
        pipe.hgetall(keys.user(state.sale_id, customer))
    counters: list[dict[str, str]] = await pipe.execute()
    bad = []
    for customer, counted in zip(customers, counters, strict=True):
        for sku in {s for c, s in owned if c == customer} | set(counted):
            units = owned[(customer, sku)]
            if int(counted.get(sku, 0)) != units:
                bad.append(f"customer {customer} sku {sku}: counter {counted.get(sku)} != {units}")
            if state.per_user_limit and units > state.per_user_limit:
                bad.append(f"customer {customer} owns {units} of {sku} > limit")
    return bad
