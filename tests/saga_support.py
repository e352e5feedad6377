"""Helpers of the saga tests: the simulators as real processes, a database of their own, and the
checks that compare PostgreSQL with what the simulated parties recorded."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx

from flashsale.engine import Code, Engine, Settings
from flashsale.loadtests.simulators import processes as sim
from flashsale.reconciler.cli import saga_jobs
from flashsale.reconciler.config import ReconcilerConfig
from flashsale.reconciler.metrics import Metrics
from flashsale.reconciler.worker import Reconciler
from flashsale.store.migrate import migrate
from flashsale.store.saga.model import FINAL


def free_base(count: int = len(sim.PARTIES)) -> int:
    """A port p with p .. p+count-1 all free on loopback."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + count > 65535:
            continue
        try:
            probes = []
            for port in range(base, base + count):
                probe = socket.socket()
                probes.append(probe)
                probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
        return base
    raise RuntimeError("no run of free ports")


def saga_settings(settings: Settings, base: int, database_url: str, run_dir: str) -> Settings:
    """Short timeouts and backoffs: a stall of the simulators costs a test seconds, not minutes.
    The simulators' pid files and records go to `run_dir`, not to the dev stack's."""
    return dataclasses.replace(
        settings,
        run_dir=run_dir,
        saga=True,
        sim_base_port=base,
        database_url=database_url,
        adapter_timeout_ms=1000,
        saga_backoff_base_ms=50,
        saga_backoff_cap_ms=400,
        saga_lease_ms=3000,
        saga_max_attempts=30,
        secondary_suppliers="S9",
    )


@contextmanager
def simulators(settings: Settings) -> Iterator[None]:
    """The simulators; stopped through their pid files, so one a test restarted goes too."""
    try:
        for party in sim.PARTIES:
            proc = sim.start(settings, party, log=False)
            assert proc is not None, f"something already answers on the {party} port"
        yield
    finally:
        for party in sim.PARTIES:
            sim.stop(settings, party)


class Sims:
    """The control routes of the simulators."""

    def __init__(self, settings: Settings) -> None:
        ports = sim.ports(settings)
        self.urls = {party: f"http://127.0.0.1:{port}" for party, port in ports.items()}

    def _call(self, party: str, method: str, path: str, doc: Any = None) -> Any:
        reply = httpx.request(method, self.urls[party] + path, json=doc, timeout=10)
        reply.raise_for_status()
        return reply.json()

    def reset(self) -> None:
        for party in sim.PARTIES:
            self._call(party, "POST", "/_sim/reset")

    def payment(self, **config: Any) -> None:
        self._call("payment", "POST", "/_sim/config", config)

    def supplier(self, supplier_id: str, **config: Any) -> None:
        self._call("suppliers", "PUT", f"/_sim/suppliers/{supplier_id}", config)

    def default_stock(self, units: int) -> None:
        self._call("suppliers", "POST", "/_sim/config", {"default_stock": units})

    def authorizations(self) -> dict[str, dict[str, Any]]:
        """order id -> its authorisations (a retried key makes none new)."""
        out: dict[str, dict[str, Any]] = {}
        for a in self._call("payment", "GET", "/_sim/records")["authorizations"]:
            assert a["order_id"] not in out, f"two authorisations for order {a['order_id']}"
            out[a["order_id"]] = a
        return out

    def allocations(self) -> list[dict[str, Any]]:
        return list(self._call("suppliers", "GET", "/_sim/records")["allocations"])

    def allocation_requests(self) -> list[dict[str, Any]]:
        """Every allocation call a supplier answered, refused ones too."""
        return list(self._call("suppliers", "GET", "/_sim/records")["requests"])

    def notifications(self) -> dict[str, Any]:
        return dict(self._call("webhooks", "GET", "/_sim/records"))


async def fresh_database(admin_url: str, name: str) -> str:
    """An empty, migrated database of its own: the saga claims every due order of its database,
    and other tests leave theirs behind in flashsale_test."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return url


@asynccontextmanager
async def reconciler(settings: Settings, engine: Engine) -> AsyncIterator[Reconciler]:
    """The flush, the sweeper, the saga and the outbox in this process, as `flashsale reconcile`
    runs them."""
    metrics = Metrics()
    async with saga_jobs(settings, engine, metrics) as (runner, outbox):
        config = dataclasses.replace(ReconcilerConfig.from_settings(settings), progress_s=0)
        worker = Reconciler(engine, config, log=lambda _line: None, jobs=[runner.run, outbox.run])
        worker.metrics = metrics
        task = asyncio.create_task(worker.run())
        try:
            yield worker
        finally:
            worker.stop.set()
            await task


async def wait_final(
    conn: asyncpg.Connection, sale_id: str, orders: int, timeout_s: float = 120
) -> dict[str, str]:
    """Until the sale has `orders` orders, all final and their notifications delivered:
    order id -> status."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await conn.fetch(
            "SELECT order_id, status, next_step FROM orders WHERE sale_id = $1", sale_id
        )
        pending = await conn.fetchval("SELECT count(*) FROM outbox WHERE delivered_at IS NULL")
        done = {r["order_id"]: r["status"] for r in rows if r["status"] in FINAL}
        finished = len(rows) == orders == len(done) and not any(r["next_step"] for r in rows)
        if finished and pending == 0:
            return done
        if time.monotonic() > deadline:
            states = Counter((r["status"], r["next_step"]) for r in rows)
            raise AssertionError(f"{len(rows)}/{orders} orders, {states}, {pending} undelivered")
        await asyncio.sleep(0.2)


async def confirm_orders(
    engine: Engine, sale_id: str, carts: list[list[tuple[str, int]]], concurrency: int = 100
) -> dict[str, list[tuple[str, str, int]]]:
    """One confirmed hold per cart, customer c<i>: hold id -> [(sku, supplier, qty)]."""
    gate = asyncio.Semaphore(concurrency)
    out: dict[str, list[tuple[str, str, int]]] = {}

    async def one(i: int, cart: list[tuple[str, int]]) -> None:
        async with gate:
            held = await engine.reserve(sale_id, f"c{i}", cart)
            assert held.ok, held
            done = await engine.confirm(sale_id, held.hold_id, f"card:tok_{i}")
            assert done.code is Code.OK, done
            out[held.hold_id] = [(a.sku, a.supplier, a.qty) for a in held.allocations]

    await asyncio.gather(*(one(i, cart) for i, cart in enumerate(carts)))
    return out


async def transitions(conn: asyncpg.Connection, sale_id: str) -> dict[str, list[str]]:
    """order id -> the statuses it entered, in order (changes only, no same-status notes)."""
    rows = await conn.fetch(
        "SELECT t.order_id, t.to_status FROM order_transitions t JOIN orders o USING (order_id) "
        "WHERE o.sale_id = $1 AND t.from_status <> t.to_status ORDER BY t.id",
        sale_id,
    )
    out: dict[str, list[str]] = {}
    for r in rows:
        out.setdefault(r["order_id"], []).append(r["to_status"])
    return out


def assert_notified_once(sims: Sims, expected: Counter[tuple[str, str, str]]) -> None:
    """The receiver holds every (order, topic, recipient) exactly once, each signature valid."""
    records = sims.notifications()
    assert records["bad_signatures"] == 0
    got: Counter[tuple[str, str, str]] = Counter(
        (n["data"]["order_id"], n["topic"], n["recipient"]) for n in records["received"]
    )
    assert got == expected
    for n in records["received"]:
        assert n["path_recipient"] == n["recipient"]


def payload(row: asyncpg.Record) -> dict[str, Any]:
    return dict(json.loads(row["payload"]))


@asynccontextmanager
async def quiet_saga_db(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a saga database where orders and webhooks an earlier test left
    unfinished will not be claimed by this test's saga."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("UPDATE orders SET next_step = NULL WHERE next_step IS NOT NULL")
        await conn.execute("UPDATE outbox SET delivered_at = now() WHERE delivered_at IS NULL")
        yield conn
    finally:
        await conn.close()
