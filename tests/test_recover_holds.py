"""`flashsale recover` brings back open holds, idempotency keys and customer counters: a sale's
Redis keys are lost (every `fs:{S}:*` key, its stream too), and clients retrying afterwards get
their first answers. Real Redis, PostgreSQL and processes."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from flashsale.engine import Code, Engine, Settings, keys
from flashsale.engine.connection import RedisClient, hgetall
from flashsale.engine.results import HoldView, ReserveResult, SaleState
from flashsale.reconciler.restore import Lifetimes, restore_holds
from flashsale.store.db import Connection
from flashsale.store.recovery import RestoredHold
from tests.helpers import assert_sound, snapshot
from tests.reconciler_support import Key, assert_audit_ok, assert_exact, cli, create_sale, record

STOCK = {"A": [("p", 30), ("q", 30)], "B": [("q", 20), ("r", 20)]}
IDEM_TTL_MS = 86_400_000  # the settings' default, which the recover process runs with


@pytest.fixture
def env(service_urls: dict[str, str], test_url: str) -> dict[str, str]:
    return {**service_urls, "FLASHSALE_DATABASE_URL": test_url}


def units(view: HoldView) -> Counter[Key]:
    return Counter({(a.sku, a.supplier): a.qty for a in view.allocations})


async def reserve(engine: Engine, sale_id: str, who: str, cart: Any, key: str = "") -> str:
    held = await engine.reserve(sale_id, who, cart, key or None)
    assert held.ok and not held.replay, held
    return held.hold_id


async def views(engine: Engine, sale_id: str, holds: list[str]) -> dict[str, HoldView]:
    found = {h: await engine.get_hold(sale_id, h) for h in holds}
    return {h: v for h, v in found.items() if v is not None}


async def redis_state(engine: Engine, sale_id: str) -> dict[str, Any]:
    """Every key of the sale but its stream, the sale hash without its status time."""
    state = await snapshot(engine.client, sale_id, skip=":events")
    state[keys.sale(sale_id)].pop("status_at_ms", None)
    return state


def recovered(env: dict[str, str], sale_id: str, *extra: str) -> str:
    done = cli(env, "recover", "--sale", sale_id, *extra)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@dataclass
class Placed:
    """The holds of the sale, by what became of them, and the idempotency key of each keyed one."""

    keyed: list[str]  # open, with a key; keyed[0] extended
    plain: list[str]  # open, without; plain[0] extended
    bought: list[str]  # confirmed; the first two with a key
    dropped: list[str]  # released, with a key
    lapsed: list[str]  # expired and swept, with a key
    due: str  # held past its expiry, not swept yet when Redis loses it
    idem: dict[str, str] = field(default_factory=dict)

    def every(self) -> list[str]:
        return [*self.keyed, *self.plain, *self.bought, *self.dropped, *self.lapsed, self.due]


async def place(engine: Engine, past: Engine, s: str) -> Placed:
    cart = [("A", 2), ("B", 1)]
    keyed = [await reserve(engine, s, f"k{i}", cart, f"key-{i}") for i in range(5)]
    plain = [await reserve(engine, s, f"n{i}", [("A", 3)]) for i in range(3)]
    for h in (keyed[0], plain[0]):
        assert (await engine.extend(s, h)).code is Code.OK
    bought = [await reserve(engine, s, f"b{i}", cart, f"key-b{i}") for i in range(2)]
    bought += [await reserve(engine, s, f"b{i}", cart) for i in range(2, 4)]
    for h in bought:
        assert (await engine.confirm(s, h, "pay")).code is Code.OK
    dropped = [await reserve(engine, s, f"r{i}", [("B", 2)], f"key-r{i}") for i in range(2)]
    for h in dropped:
        assert (await engine.release(s, h)).code is Code.OK
    lapsed = [await reserve(past, s, f"x{i}", [("A", 1)], f"key-x{i}") for i in range(2)]
    assert (await engine.sweep(s)).expired == 2
    due = await reserve(past, s, "d0", [("A", 1), ("B", 1)], "key-d0")  # the last reserve
    placed = Placed(keyed, plain, bought, dropped, lapsed, due, {due: "key-d0"})
    for prefix, holds in (("", keyed), ("b", bought[:2]), ("r", dropped), ("x", lapsed)):
        placed.idem |= {h: f"key-{prefix}{i}" for i, h in enumerate(holds)}
    return placed


async def test_recover_restores_open_holds_keys_and_counters(
    live_engine: Engine, redis_client: RedisClient, settings: Settings, conn: Connection,
    env: dict[str, str], sale_id: str,
) -> None:  # fmt: skip
    s = sale_id
    await create_sale(live_engine, conn, record(s, STOCK, limit=5))
    past = Engine(redis_client, settings)  # holds placed 400 s ago: 100 s past their expiry
    past.advance_clock(-400_000)
    placed = await place(live_engine, past, s)
    assert cli(env, "reconcile", "--once", "--sale", s).returncode == 0
    before = await views(live_engine, s, placed.every())
    stock = await live_engine.stock(s)
    assert stock is not None and stock.open_holds == 9
    counted = {v.customer_id: await hgetall(live_engine.client, keys.user(s, v.customer_id))
               for v in before.values()}  # fmt: skip
    counted["d0"] = {}  # the due hold expires on recovery

    await live_engine.forget_sale(s)  # Redis lost the sale: its stream, keys and counters
    out = recovered(env, s)
    assert "17 holds written back (8 open, 1 expired on the spot), 12 idempotency keys" in out, out
    await assert_restored(live_engine, s, placed, before, stock, counted)
    # Recovering again rebuilds the very same state (after flushing the due hold's expiry).
    state = await redis_state(live_engine, s)
    recovered(env, s, "--force")
    assert await redis_state(live_engine, s) == state

    await assert_retries_answer_as_before(live_engine, s, before, placed)
    assert cli(env, "reconcile", "--once", "--sale", s).returncode == 0
    keyed = placed.keyed
    await assert_exact(
        live_engine, conn, s, {h: dict(units(before[h])) for h in (*placed.bought, keyed[1])}
    )
    statuses = dict(await conn.fetch("SELECT hold_id, status FROM holds WHERE sale_id = $1", s))
    found = (statuses[placed.due], statuses[keyed[1]], statuses[keyed[2]])
    assert found == ("expired", "confirmed", "held")
    assert_audit_ok(env, s)


async def assert_restored(
    engine: Engine, s: str, placed: Placed, before: dict[str, HoldView], stock: SaleState,
    counted: dict[str, dict[str, str]],
) -> None:  # fmt: skip
    """Every hold as it was (the due one expired), stock, counters, the expiry index, the
    idempotency keys with what was left of their time; the invariants hold."""
    after = await views(engine, s, placed.every())
    assert after.keys() == before.keys()
    for h in placed.every():
        if h != placed.due:
            assert after[h] == before[h], h
    gone = units(before[placed.due])  # its units are on sale again
    assert (after[placed.due].status, units(after[placed.due])) == ("expired", gone)
    back = await engine.stock(s)
    assert back is not None and back.open_holds == 8
    for sku_before, sku_after in zip(stock.skus, back.skus, strict=True):
        for a, b in zip(sku_before.suppliers, sku_after.suppliers, strict=True):
            moved = gone[(sku_before.sku, a.supplier)]
            assert (b.loaded, b.adjusted, b.sold) == (a.loaded, a.adjusted, a.sold)
            assert (b.reserved, b.available) == (a.reserved - moved, a.available + moved)
    for customer, counters in counted.items():
        assert await hgetall(engine.client, keys.user(s, customer)) == counters, customer
    for h in (*placed.keyed, *placed.plain):
        assert await engine.client.zscore(keys.holds(s), h) == before[h].expires_at_ms
    now_ms = time.time() * 1000
    for h, idem_key in placed.idem.items():
        key = keys.idem(s, after[h].customer_id, idem_key)
        assert await engine.client.get(key) == h
        left_ms = after[h].created_at_ms + IDEM_TTL_MS - now_ms
        assert abs(await engine.client.pttl(key) - left_ms) < 10_000, h
    await assert_sound(engine, s)


async def assert_retries_answer_as_before(
    engine: Engine, s: str, before: dict[str, HoldView], placed: Placed
) -> None:
    """A client retrying a reserve gets its first answer (open, confirmed or released hold);
    a restored hold confirms once and extends as before."""
    for h in (*placed.keyed, *placed.bought[:2], *placed.dropped):
        v = before[h]
        cart = [(sku, sum(a.qty for a in v.allocations if a.sku == sku)) for sku in ("A", "B")]
        lines = [(sku, qty) for sku, qty in cart if qty]
        again = await engine.reserve(s, v.customer_id, lines, placed.idem[h])
        assert again == ReserveResult(
            Code.OK, hold_id=h, expires_at_ms=v.expires_at_ms, allocations=v.allocations,
            replay=True,
        ), h  # fmt: skip
    keyed = placed.keyed
    conflict = await engine.reserve(s, "k0", [("A", 1)], "key-0")
    assert (conflict.code, conflict.detail) == (Code.IDEMPOTENCY_CONFLICT, keyed[0])
    first = await engine.confirm(s, keyed[1], "pay")
    second = await engine.confirm(s, keyed[1], "pay")
    assert (first.code, first.replay, second.code, second.replay) == (Code.OK, False, Code.OK, True)
    assert second.at_ms == first.at_ms
    assert (await engine.extend(s, keyed[0])).code is Code.ALREADY_EXTENDED
    longer = await engine.extend(s, keyed[2])
    assert (longer.code, longer.expires_at_ms) == (
        Code.OK,
        before[keyed[2]].expires_at_ms + 300_000,
    )
    await assert_sound(engine, s)


async def test_concurrent_holds_survive_a_flushdb_and_confirm_exactly_once(
    live_engine: Engine, conn: Connection, env: dict[str, str], sale_id: str
) -> None:
    s = sale_id
    await create_sale(live_engine, conn, record(s, {"A": [("p", 90), ("q", 60)]}, limit=1))
    shoppers = [(f"c{i}", f"key-{i}") for i in range(200)]

    async def checkout(who: str, key: str) -> ReserveResult:
        return await live_engine.reserve(s, who, [("A", 1)], key)

    first = await asyncio.gather(*(checkout(*p) for p in shoppers))
    held = {p: r for p, r in zip(shoppers, first, strict=True) if r.ok}
    assert len(held) == 150
    assert sum(r.code is Code.SOLD_OUT for r in first) == 50
    assert cli(env, "reconcile", "--once", "--sale", s).returncode == 0
    # Redis loses everything: this test's database is emptied (FLUSHDB of the tests' db 1; a
    # FLUSHALL would take the demo's database too). Other tests' sales go as well; none is in use
    # by then, each test keeping to sales of its own.
    await live_engine.client.flushdb()
    out = recovered(env, s)
    assert "(150 open, 0 expired on the spot), 150 idempotency keys" in out, out
    state = await live_engine.stock(s)
    assert state is not None
    assert (state.open_holds, state.sku("A").reserved, state.sku("A").available) == (150, 150, 0)
    await assert_sound(live_engine, s)

    retried = await asyncio.gather(*(checkout(*p) for p in shoppers))
    for p, again in zip(shoppers, retried, strict=True):
        if p in held:
            assert (again.hold_id, again.replay, again.expires_at_ms) == (
                held[p].hold_id, True, held[p].expires_at_ms,
            )  # fmt: skip
        else:
            assert again.code is Code.SOLD_OUT
    ids = [r.hold_id for r in held.values()] * 2  # every hold confirmed twice, all at once
    confirms = await asyncio.gather(*(live_engine.confirm(s, h, "pay") for h in ids))
    assert all(c.code is Code.OK for c in confirms)
    assert sum(not c.replay for c in confirms) == 150
    assert cli(env, "reconcile", "--once", "--sale", s).returncode == 0
    orders = {r.hold_id: {(a.sku, a.supplier): a.qty for a in r.allocations} for r in held.values()}
    await assert_exact(live_engine, conn, s, orders)
    assert_audit_ok(env, s)


def restored(hold_id: str, status: str, at_ms: int, key: str = "") -> RestoredHold:
    confirmed = at_ms if status == "confirmed" else 0
    ended = at_ms if status in ("released", "expired") else 0
    return RestoredHold(
        hold_id, "c-" + hold_id, "A:p:1", status, at_ms, at_ms + 60_000, False, key,
        "ab" if key else "", confirmed, ended, "",
    )  # fmt: skip


async def test_restore_holds_writes_only_what_would_still_live(
    engine: Engine, sale_id: str
) -> None:
    """The script's own checks, by the server's clock (the caller's `now_ms` of 0 lets every
    hold through): hashes and keys past their time stay gone; a second run writes nothing."""
    now = int(time.time() * 1000)
    life = Lifetimes(retention_ms=10_000, idem_ttl_ms=10_000)
    holds = [
        restored("open", "held", now - 100_000, "k1"),  # held: kept; its key is long gone
        restored("paid", "confirmed", now - 11_000, "k2"),  # retention over: neither
        restored("freed", "released", now - 5_000, "k3"),  # both, 5 s left
    ]
    assert await restore_holds(engine, sale_id, holds, life, 0) == (2, 1)
    assert await restore_holds(engine, sale_id, holds, life, 0) == (0, 0)
    client = engine.client
    assert await client.zscore(keys.holds(sale_id), "open") == now - 40_000
    assert await client.pttl(keys.hold(sale_id, "open")) == -1
    assert await client.exists(keys.hold(sale_id, "paid"), keys.idem(sale_id, "c-open", "k1")) == 0
    assert 3_000 < await client.pttl(keys.hold(sale_id, "freed")) <= 5_000
    assert 3_000 < await client.pttl(keys.idem(sale_id, "c-freed", "k3")) <= 5_000
    freed = await engine.get_hold(sale_id, "freed")
    assert freed is not None and (freed.status, freed.expires_at_ms) == ("released", now + 55_000)
