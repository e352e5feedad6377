"""`flashsale reconcile`, `audit`, `recover` as real processes against real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
from collections.abc import Collection, Iterator
from typing import Any, cast

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx
import pytest

from flashsale import services
from flashsale.engine import Code, Engine, keys
from flashsale.engine.events import decode
from flashsale.engine.results import SaleState
from flashsale.engine.settings import Settings
from flashsale.loadtests.gateway_process import free_port
from flashsale.reconciler.config import GROUP
from flashsale.reconciler.streams import SaleStream, dead_letters
from flashsale.store.db import Connection
from flashsale.store.flush import flush
from flashsale.store.ownership import owners
from tests.helpers import eventually
from tests.metrics_helpers import parse_metrics, value
from tests.reconciler_support import (
    Key,
    Process,
    Shopped,
    assert_audit_ok,
    assert_exact,
    cli,
    create_sale,
    record,
    shop,
    stop_postgres,
    wait_flushed,
)

STOCK = {"A": [("p", 4000), ("q", 2000)], "B": [("q", 3000), ("r", 2000)]}
ORDERS_OF_SALES = "SELECT count(*) FROM orders WHERE sale_id = ANY($1::text[])"


@pytest.fixture
def env(service_urls: dict[str, str], test_url: str) -> dict[str, str]:
    """What the processes get: the project's services, PostgreSQL's test database."""
    return {**service_urls, "FLASHSALE_DATABASE_URL": test_url}


@pytest.fixture
def procs() -> Iterator[list[Process]]:
    """Processes a test started; any still running at the end is killed."""
    started: list[Process] = []
    yield started
    for p in started:
        if p.popen.poll() is None:
            p.popen.kill()
            p.popen.wait()


async def reconciler(procs: list[Process], env: dict[str, str], *args: str) -> Process:
    """Started and connected (a SIGTERM before its handler is set would just kill it)."""
    p = Process(env, "reconcile", "--progress-s", "0.5", *args)
    procs.append(p)
    await p.wait_for("connected to PostgreSQL")
    return p


def only(*sale_ids: str) -> list[str]:
    return [arg for s in sale_ids for arg in ("--sale", s)]


def live_orders(shopped: Shopped, undone: Collection[str] = ()) -> dict[str, dict[Key, int]]:
    return {h: lines for h, lines in shopped.confirmed.items() if h not in undone}


class Shoppers:
    """Shoppers who keep coming, 50 confirmations a round per sale, until stopped (or until
    `cap` per sale, well inside the stock)."""

    def __init__(self, engine: Engine, sale_ids: list[str], cap: int = 2500) -> None:
        self.done = {s: Shopped({}) for s in sale_ids}
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run(engine, sale_ids, cap))

    async def _run(self, engine: Engine, sale_ids: list[str], cap: int) -> None:
        seed = 100
        while not self._stop.is_set() and len(self.done[sale_ids[0]].confirmed) < cap:
            seed += 1
            rounds = [shop(engine, s, ["A", "B"], 50, concurrency=10, seed=seed) for s in sale_ids]
            for sale_id, got in zip(sale_ids, await asyncio.gather(*rounds), strict=True):
                self.done[sale_id].confirmed.update(got.confirmed)
            await asyncio.sleep(0.02)  # kept: rounds spaced out, a stream that grows as it drains

    def confirmed(self) -> int:
        return sum(len(d.confirmed) for d in self.done.values())

    def finished(self) -> bool:
        """Stopped, or the cap reached."""
        return self._task.done()

    async def stop(self) -> dict[str, Shopped]:
        self._stop.set()
        await self._task
        return self.done

    async def confirm_more(self, timeout_s: float = 20) -> None:
        """Until at least one more round of confirmations is in (or the shoppers hit the cap)."""
        before = self.confirmed()

        async def another_round() -> bool:
            return self.confirmed() > before or self.finished()

        await eventually(another_round, timeout_s=timeout_s)


async def new_sales(engine: Engine, conn: Connection, sale_id: str, n: int) -> list[str]:
    ids = [f"{sale_id[:50]}-{i}" for i in range(n)]
    for s in ids:
        await create_sale(engine, conn, record(s, STOCK))
    return ids


async def pending(engine: Engine, sale_ids: list[str]) -> int:
    """Entries delivered to a reconciler and not acknowledged: a batch caught in flight."""
    total = 0
    for s in sale_ids:
        with contextlib.suppress(Exception):  # no group yet
            total += int((await engine.client.xpending(keys.events(s), GROUP))["pending"])
    return total


# --- the five ------------------------------------------------------------------------


async def test_10k_confirmations_across_3_sales_flush_exactly(
    live_engine: Engine, conn: Connection, env: dict[str, str], procs: list[Process], sale_id: str
) -> None:
    sales = await new_sales(live_engine, conn, sale_id, 3)
    # No --sale: the reconciler finds the sales itself, in Redis and PostgreSQL.
    worker = await reconciler(procs, env)
    shopped = await asyncio.gather(
        *(
            shop(live_engine, s, ["A", "B"], n, release_every=25, seed=i)
            for i, (s, n) in enumerate(zip(sales, (3334, 3333, 3333), strict=True))
        )
    )
    assert sum(len(s.confirmed) for s in shopped) == 10_000
    # A compensation and a supplier cut per sale, while the reconciler runs.
    undone: list[set[str]] = []
    for s, got in zip(sales, shopped, strict=True):
        first = sorted(got.confirmed)[:3]
        for hold_id in first:
            assert (await live_engine.compensate(s, hold_id, "declined")).code is Code.OK
        undone.append(set(first))
        assert (await live_engine.adjust(s, "B", "r", -7, "feed")).applied == -7
    await wait_flushed(live_engine, conn, sales, 10_000)
    assert worker.stop() == 0
    for s, got, gone in zip(sales, shopped, undone, strict=True):
        await assert_exact(live_engine, conn, s, live_orders(got, gone))
        assert await live_engine.client.xlen(dead_letters(s)) == 0
    for report in assert_audit_ok(env, *sales):
        assert "invariant 3 PostgreSQL matches Redis (flushed)     ok" in report
    assert worker.final_metric("retries") == 0


async def test_kill_9_mid_flush_then_restart_loses_and_doubles_nothing(
    live_engine: Engine, conn: Connection, env: dict[str, str], procs: list[Process], sale_id: str
) -> None:
    sales = await new_sales(live_engine, conn, sale_id, 2)
    shoppers = Shoppers(live_engine, sales)
    rng = random.Random(9)
    kills = caught_in_flight = 0
    while kills < 4 or (caught_in_flight < 2 and kills < 10):
        worker = await reconciler(procs, env, *only(*sales), "--max-batch", "200")
        # Kept: the kill lands at a random moment on purpose (a seeded one). What it leaves is
        # read only once the process is gone (kill9 waits for it), and the loop goes on until a
        # kill has caught a batch in flight.
        await asyncio.sleep(rng.uniform(0.05, 0.5))
        worker.kill9()
        kills += 1
        caught_in_flight += await pending(live_engine, sales) > 0
    done = await shoppers.stop()
    assert caught_in_flight >= 1, "no kill landed between a read and its acknowledgement"
    final = await reconciler(procs, env, *only(*sales))
    await wait_flushed(live_engine, conn, sales, sum(len(d.confirmed) for d in done.values()))
    assert final.stop() == 0
    for s in sales:
        await assert_exact(live_engine, conn, s, live_orders(done[s]))
    assert_audit_ok(env, *sales)


async def test_a_batch_committed_but_never_acknowledged_replays_harmlessly(
    live_engine: Engine, conn: Connection, env: dict[str, str], sale_id: str
) -> None:
    """The crash kill -9 rarely hits: after the commit, before the ack. A consumer that died
    there left its entries pending; the next reconciler claims them and applies them again."""
    await create_sale(live_engine, conn, record(sale_id, STOCK))
    got = await shop(live_engine, sale_id, ["A", "B"], 300, release_every=5)
    undone = sorted(got.confirmed)[:10]
    for hold_id in undone:
        assert (await live_engine.compensate(sale_id, hold_id, "declined")).code is Code.OK
    assert (await live_engine.adjust(sale_id, "A", "q", -4, "cut")).applied == -4
    dead_consumer = SaleStream(live_engine.client, sale_id, "crashed-after-commit")
    assert await dead_consumer.ensure_group()
    entries = await dead_consumer.read(10_000)
    assert len(entries) == 2 * (300 + got.released) + 10 + 1  # each hold is reserved first
    await flush(conn, sale_id, decode(entries).events)  # committed, never acknowledged
    assert await pending(live_engine, [sale_id]) == len(entries)

    assert cli(env, "reconcile", "--once", *only(sale_id)).returncode == 0
    assert await pending(live_engine, [sale_id]) == 0
    assert await live_engine.client.xlen(keys.events(sale_id)) == 0
    await assert_exact(live_engine, conn, sale_id, live_orders(got, set(undone)))
    assert_audit_ok(env, sale_id)


async def test_entries_a_former_owner_read_late_are_claimed_back(
    live_engine: Engine, conn: Connection, env: dict[str, str], procs: list[Process], sale_id: str
) -> None:
    """A former owner that has not yet noticed it lost the sale may still read a batch after
    the new owner walked the pending list: the owner finds such entries and takes them."""
    await create_sale(live_engine, conn, record(sale_id, STOCK))
    first = await shop(live_engine, sale_id, ["A", "B"], 100)
    worker = await reconciler(procs, env, *only(sale_id))
    await wait_flushed(live_engine, conn, [sale_id], 100)
    os.kill(worker.popen.pid, signal.SIGSTOP)  # the owner, between two reads
    try:
        later = await shop(live_engine, sale_id, ["A", "B"], 100, seed=2)
        former = SaleStream(live_engine.client, sale_id, "former-owner")
        assert len(await former.read(40)) == 40
    finally:
        os.kill(worker.popen.pid, signal.SIGCONT)
    await wait_flushed(live_engine, conn, [sale_id], 200)
    assert await pending(live_engine, [sale_id]) == 0
    assert worker.stop() == 0
    await assert_exact(live_engine, conn, sale_id, {**first.confirmed, **later.confirmed})


async def test_two_reconcilers_share_the_sales_and_apply_each_event_once(
    live_engine: Engine, conn: Connection, env: dict[str, str], procs: list[Process], sale_id: str
) -> None:
    sales = await new_sales(live_engine, conn, sale_id, 3)
    workers = await asyncio.gather(*(reconciler(procs, env, *only(*sales)) for _ in range(2)))

    async def the_sales_are_split() -> None:
        held = await owners(conn)
        assert len(held) == 2 and sum(held.values()) == 3, f"not shared: {held}"

    await eventually(the_sales_are_split, timeout_s=10, interval_s=0.1)
    shopped = await asyncio.gather(
        *(
            shop(live_engine, s, ["A", "B"], 1000, release_every=10, seed=i)
            for i, s in enumerate(sales)
        )
    )
    entries = sum(2 * (len(s.confirmed) + s.released) for s in shopped)  # reserved, then ended
    await wait_flushed(live_engine, conn, sales, 3000)
    assert [w.stop() for w in workers] == [0, 0]
    applied = [w.final_metric("flushed") for w in workers]
    assert all(applied), applied
    assert sum(applied) == entries  # every entry applied by exactly one of them
    for s, got in zip(sales, shopped, strict=True):
        await assert_exact(live_engine, conn, s, live_orders(got))
    assert_audit_ok(env, *sales)


async def test_postgresql_stopped_mid_flush_loses_nothing(
    live_engine: Engine,
    conn: Connection,
    env: dict[str, str],
    procs: list[Process],
    sale_id: str,
    settings: Settings,
) -> None:
    if settings.database_url:
        pytest.skip("PostgreSQL is external (FLASHSALE_DATABASE_URL): not ours to stop")
    sales = await new_sales(live_engine, conn, sale_id, 2)
    worker = await reconciler(procs, env, *only(*sales))
    shoppers = Shoppers(live_engine, sales)

    async def flushing() -> bool:
        return bool(await conn.fetchval(ORDERS_OF_SALES, sales))

    await eventually(flushing, timeout_s=20)
    await conn.close()  # the fast stop would cut it anyway
    try:
        await asyncio.to_thread(stop_postgres, settings)
        # PostgreSQL stays down until the reconciler has failed twice (its session lost, then a
        # try to reconnect) and the shoppers have confirmed more meanwhile.
        await worker.wait_for("reconcile: postgres unavailable", times=2)
        await shoppers.confirm_more()
    finally:
        await asyncio.to_thread(services.up, settings, log=lambda _line: None)
    # Back: the reconciler reconnects while the shoppers are still confirming.
    await worker.wait_for("connected to PostgreSQL", times=2)
    await shoppers.confirm_more()
    done = await shoppers.stop()
    reopened = await asyncpg.connect(env["FLASHSALE_DATABASE_URL"])
    try:
        await wait_flushed(
            live_engine, reopened, sales, sum(len(d.confirmed) for d in done.values())
        )
        assert worker.popen.poll() is None, "the reconciler died instead of waiting"
        assert worker.stop() == 0
        assert worker.final_metric("retries") > 0
        for s in sales:
            await assert_exact(live_engine, reopened, s, live_orders(done[s]))
        assert_audit_ok(env, *sales)
    finally:
        await reopened.close()


async def test_recover_rebuilds_a_wiped_sale_and_sales_go_on(
    live_engine: Engine, conn: Connection, env: dict[str, str], sale_id: str
) -> None:
    await create_sale(live_engine, conn, record(sale_id, STOCK))
    got = await shop(live_engine, sale_id, ["A", "B"], 1200, customers=300, release_every=7)
    undone = set(sorted(got.confirmed)[:20])
    for hold_id in undone:
        assert (await live_engine.compensate(sale_id, hold_id, "declined")).code is Code.OK
    assert (await live_engine.adjust(sale_id, "A", "q", 7, "restock")).applied == 7
    for i in range(15):  # holds still open when Redis loses the sale
        assert (await live_engine.reserve(sale_id, f"late-{i}", [("A", 1)])).ok
    assert cli(env, "reconcile", "--once", *only(sale_id)).returncode == 0
    before = await live_engine.stock(sale_id)
    assert before is not None
    refused = cli(env, "recover", "--sale", sale_id)
    assert refused.returncode == 1 and "--force rebuilds it anyway" in refused.stderr
    await live_engine.forget_sale(sale_id)

    done = cli(env, "recover", "--sale", sale_id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ", 1180 orders, " in done.stdout
    assert_audit_ok(env, sale_id)
    after = await live_engine.stock(sale_id)
    assert after is not None
    assert (after.status, after.version, after.open_holds) == ("open", 1, 15)
    assert after.skus == before.skus  # the open holds are back with their units
    kept = sorted(set(got.confirmed) - undone)[0]
    again = await live_engine.confirm(sale_id, kept, "pay")
    assert (again.code, again.status, again.replay) == (Code.OK, "confirmed", True)

    more = await shop(live_engine, sale_id, ["A", "B"], 200, seed=77)
    assert cli(env, "reconcile", "--once", *only(sale_id)).returncode == 0
    expected = {**live_orders(got, undone), **more.confirmed}
    await assert_exact(live_engine, conn, sale_id, expected)
    assert_audit_ok(env, sale_id)


async def test_recover_flushes_the_entries_left_in_the_stream_first(
    live_engine: Engine, conn: Connection, env: dict[str, str], sale_id: str
) -> None:
    await create_sale(live_engine, conn, record(sale_id, STOCK))
    got = await shop(live_engine, sale_id, ["A", "B"], 400)
    # The sale's state is lost, its stream (never flushed) is not.
    doomed = [
        k async for k in live_engine.client.scan_iter(match=keys.prefix(sale_id) + "*", count=1000)
    ]
    await live_engine.client.delete(*[k for k in doomed if k != keys.events(sale_id)])
    await live_engine.client.srem(keys.sales_index(), sale_id)

    done = cli(env, "recover", "--sale", sale_id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "800 stream entries flushed first, 400 orders" in done.stdout  # reserved, confirmed
    await assert_exact(live_engine, conn, sale_id, live_orders(got))
    assert_audit_ok(env, sale_id)


# --- dead letters, the audit's verdicts, the sweeper ------------------------------------------


async def test_poison_entries_go_to_the_dead_letters_and_fail_the_audit(
    live_engine: Engine, conn: Connection, env: dict[str, str], sale_id: str
) -> None:
    await create_sale(live_engine, conn, record(sale_id, STOCK))
    got = await shop(live_engine, sale_id, ["A", "B"], 30)
    stream = keys.events(sale_id)
    poison: list[dict[Any, Any]] = [
        {"type": "confirmed", "hold": "x", "user": "u", "lines": "A:p:1"},
        {"type": "refunded"},
        {"type": "compensated", "hold": "ghost", "user": "u", "lines": "A:p:1", "at_ms": "1"},
    ]
    for fields in poison:
        await live_engine.client.xadd(stream, fields)
    assert cli(env, "reconcile", "--once", *only(sale_id)).returncode == 0
    dead = cast(list[Any], await live_engine.client.xrange(dead_letters(sale_id)))
    assert [fields["dead_why"] for _, fields in dead] == [
        "missing field 'at_ms'",
        "unknown event type 'refunded'",
        "compensation of hold ghost, which has no order",
    ]
    await assert_exact(live_engine, conn, sale_id, live_orders(got))
    audit = cli(env, "audit", "--sale", sale_id)
    assert audit.returncode == 1
    assert "3 events are in the dead letters, not applied" in audit.stdout


async def test_audit_fails_on_a_mismatch_and_waits_for_the_flush(
    live_engine: Engine, conn: Connection, env: dict[str, str], sale_id: str
) -> None:
    await create_sale(live_engine, conn, record(sale_id, STOCK))
    await shop(live_engine, sale_id, ["A"], 20)
    unflushed = cli(env, "audit", "--sale", sale_id)
    assert unflushed.returncode == 0, unflushed.stdout
    assert "pending: 40 events not flushed yet" in unflushed.stdout  # 20 reserved, 20 confirmed
    assert cli(env, "audit", "--sale", sale_id, "--strict").returncode == 1
    assert cli(env, "reconcile", "--once", *only(sale_id)).returncode == 0
    assert_audit_ok(env, sale_id)
    await conn.execute(
        "UPDATE stock_levels SET sold = sold + 1 WHERE sale_id = $1 AND sku = 'A' "
        "AND supplier_id = 'p'",
        sale_id,
    )
    tampered = cli(env, "audit", "--sale", sale_id)
    assert tampered.returncode == 1
    assert "invariant 3 PostgreSQL matches Redis (flushed)     VIOLATED (3)" in tampered.stdout


async def test_the_sweeper_expires_holds_on_its_own(
    live_engine: Engine, conn: Connection, env: dict[str, str], procs: list[Process], sale_id: str
) -> None:
    await create_sale(live_engine, conn, record(sale_id, STOCK, hold_ttl_s=1))
    holds = [await live_engine.reserve(sale_id, f"c{i}", [("A", 2)]) for i in range(20)]
    assert all(h.ok for h in holds)
    port = free_port()
    worker = await reconciler(
        procs, env, *only(sale_id), "--sweep-ms", "200", "--metrics-port", str(port)
    )

    async def swept() -> SaleState:  # nobody reserves meanwhile: only the sweeper can end them
        state = await live_engine.stock(sale_id)
        expired = await conn.fetchval(
            "SELECT count(DISTINCT ref) FROM stock_movements "
            "WHERE sale_id = $1 AND kind = 'expire'",
            sale_id,
        )
        assert state is not None and state.sku("A").reserved == 0 and expired == 20, (
            f"holds not swept: {state}, {expired} expire rows"
        )
        return state

    state = await eventually(swept, timeout_s=10, interval_s=0.1)
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    scrape = parse_metrics(text)
    assert value(scrape, "flashsale_reconciler_swept_holds_total") >= 20
    assert value(scrape, "flashsale_reconciler_owned_sales") == 1
    assert worker.stop() == 0
    assert worker.final_metric("swept") >= 20
    assert state.sku("A").available == 6000
    assert_audit_ok(env, sale_id)
