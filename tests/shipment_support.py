"""Fixtures and helpers of the shipment and promised-date tests: the simulators, a saga database
of their own, a real gateway the supplier simulator posts its signed shipments to, and waits on
an order's status and on the webhook receiver."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx
import pytest

from flashsale.engine import Engine, Settings
from flashsale.engine.connection import RedisClient
from flashsale.engine.invariants import check_sale
from flashsale.loadtests.gateway_process import Gateway, gateway
from flashsale.loadtests.simulators.feed_docs import signed_headers
from flashsale.reconciler.audit import audit
from flashsale.reconciler.cli import saga_jobs
from flashsale.reconciler.config import ReconcilerConfig
from flashsale.reconciler.metrics import Metrics
from flashsale.reconciler.saga import STEPS, Parties
from flashsale.reconciler.worker import Reconciler
from flashsale.store.saga import orders as saga_orders
from flashsale.store.saga.claims import Claim, claim
from flashsale.store.saga.model import Decision, Order
from tests.after_sale_support import drained
from tests.saga_support import Sims, free_base, fresh_database, quiet_saga_db, saga_settings
from tests.saga_support import simulators as run_simulators

ADMIN = {"authorization": "Bearer dev-admin-key"}
SECRET = "ship-feed-secret-0123456789abcdef0123"


@pytest.fixture(scope="module")
def saga_base() -> int:
    return free_base()


@pytest.fixture(scope="module")
def saga_url(service_urls: dict[str, str]) -> str:
    admin = service_urls["FLASHSALE_DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
    return asyncio.run(fresh_database(admin, "flashsale_shipments_test"))


@pytest.fixture(scope="module")
def ssettings(
    settings: Settings, saga_base: int, saga_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    return saga_settings(settings, saga_base, saga_url, str(tmp_path_factory.mktemp("sim")))


@pytest.fixture(scope="module")
def gw(service_urls: dict[str, str], saga_url: str) -> Iterator[Gateway]:
    """A real gateway on the saga database: the supplier simulator posts shipments to it."""
    with gateway({**service_urls, "FLASHSALE_DATABASE_URL": saga_url}, workers=2) as running:
        yield running


@pytest.fixture(scope="module")
def sims(ssettings: Settings, gw: Gateway) -> Iterator[Sims]:
    with run_simulators(ssettings):
        s = Sims(ssettings)
        httpx.post(s.urls["suppliers"] + "/_sim/config", json={"gateway_url": gw.url}, timeout=10)
        yield s


@pytest.fixture
def fresh_sims(sims: Sims) -> Sims:
    sims.reset()
    sims.payment(decline_share=0.0)
    return sims


@pytest.fixture
async def pgc(saga_url: str) -> AsyncIterator[asyncpg.Connection]:
    async with quiet_saga_db(saga_url) as conn:
        yield conn


@pytest.fixture
def sengine(redis_client: RedisClient, ssettings: Settings) -> Engine:
    return Engine(redis_client, dataclasses.replace(ssettings, test_clock=False))


@pytest.fixture
async def http(gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(base_url=gw.url, timeout=30, limits=limits) as client:
        yield client


async def reporting_supplier(http: httpx.AsyncClient, supplier_id: str, flag: bool = True) -> None:
    """The supplier's config at the gateway: a webhook feed with SECRET, reporting shipments."""
    body = {
        "name": supplier_id,
        "feed": {"kind": "webhook", "secret": SECRET},
        "reports_shipments": flag,
    }
    reply = await http.put(f"/v1/admin/suppliers/{supplier_id}", json=body, headers=ADMIN)
    assert reply.status_code in (200, 201), reply.text
    assert reply.json()["reports_shipments"] is flag


def ship(sims: Sims, supplier_id: str, order_id: str, lines: dict[str, int], **more: Any) -> Any:
    """The supplier simulator sends signed shipments to the gateway; what each was answered."""
    doc = {"order_id": order_id, "lines": [{"sku": s, "qty": q} for s, q in lines.items()]}
    reply = httpx.post(
        sims.urls["suppliers"] + f"/_sim/suppliers/{supplier_id}/ship",
        json={**doc, **more},
        timeout=30,
    )
    reply.raise_for_status()
    return reply.json()["sent"]


def sim_shipments(sims: Sims) -> list[dict[str, Any]]:
    return list(sims._call("suppliers", "GET", "/_sim/records")["shipments"])


async def until(
    pgc: asyncpg.Connection, order_id: str, status: str, timeout_s: float = 60
) -> asyncpg.Record:
    """Until the order has `status` with nothing due for the saga now (parked or done)."""
    deadline = time.monotonic() + timeout_s
    while True:
        row = await pgc.fetchrow(
            "SELECT status, next_step, step_due_at FROM orders WHERE order_id = $1", order_id
        )
        later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        settled = row is not None and (row["next_step"] is None or row["step_due_at"] > later)
        if settled and row["status"] == status:
            return row
        assert time.monotonic() < deadline, f"order {order_id} is {row and dict(row)}, not {status}"
        await asyncio.sleep(0.1)


async def delivered(pgc: asyncpg.Connection, timeout_s: float = 30) -> None:
    """Until the outbox has nothing left to deliver."""
    deadline = time.monotonic() + timeout_s
    while await pgc.fetchval("SELECT count(*) FROM outbox WHERE delivered_at IS NULL"):
        assert time.monotonic() < deadline, "notifications left undelivered"
        await asyncio.sleep(0.1)


def received(sims: Sims, order_id: str, topic: str) -> list[dict[str, Any]]:
    """What the webhook receiver got for the order on that topic (each signature valid), in
    the order they were written (deliveries run side by side and may arrive in any order)."""
    records = sims.notifications()
    assert records["bad_signatures"] == 0
    got = [
        n for n in records["received"] if n["topic"] == topic and n["data"]["order_id"] == order_id
    ]
    return [n["data"] for n in sorted(got, key=lambda n: int(n["id"].removeprefix("ntf_")))]


async def audited(engine: Engine, pgc: asyncpg.Connection, sale_id: str) -> None:
    """The invariants in Redis and `flashsale audit --strict` against PostgreSQL, once the
    running reconciler has flushed the sale's event stream (call it inside `reconciler`)."""
    await drained(engine, sale_id)
    assert await check_sale(engine, sale_id) == []
    found = await audit(engine, pgc, sale_id, strict=True)
    assert found.ok, dict(found.violations)


@contextlib.asynccontextmanager
async def saga_parties(settings: Settings, engine: Engine) -> AsyncIterator[Parties]:
    """The parties a reconciler's saga asks (the simulators), for a test that runs a step by
    hand: to come in between a step's read and its write."""
    async with saga_jobs(settings, engine, Metrics()) as (runner, _outbox):
        yield runner.parties


async def step_decided(
    parties: Parties, pgc: asyncpg.Connection, order_id: str, lease_ms: int = 60_000
) -> tuple[Claim, Order, Decision]:
    """The order's due step claimed and run as the saga runs it, its outcome not written yet
    (store.saga.orders.write writes it)."""
    (c,) = await claim(pgc, 1, lease_ms)
    assert c.order_id == order_id, c
    o = await saga_orders.load(pgc, c)
    return c, o, await STEPS[c.step](parties, o)


async def moves(pgc: asyncpg.Connection, order_id: str) -> list[str]:
    """The statuses the order entered, in order (no same-status notes)."""
    rows = await pgc.fetch(
        "SELECT to_status FROM order_transitions WHERE order_id = $1 "
        "AND from_status <> to_status ORDER BY id",
        order_id,
    )
    return [r["to_status"] for r in rows]


async def post_signed(
    http: httpx.AsyncClient, supplier: str, doc: Any, secret: str = SECRET, age_s: int = 0
) -> httpx.Response:
    """A shipment posted to the gateway, signed with `secret`, `age_s` seconds old."""
    body = json.dumps(doc).encode()
    headers = signed_headers(secret, body, int(time.time()) - age_s)
    return await http.post(f"/v1/shipments/{supplier}", content=body, headers=headers)


def shipment_doc(order_id: str, shipment_id: str, lines: dict[str, int]) -> dict[str, Any]:
    return {
        "shipment_id": shipment_id,
        "order_id": order_id,
        "carrier": "UPS",
        "tracking_id": f"1Z{shipment_id}",
        "shipped_at": "2026-11-29T10:00:00+00:00",
        "lines": [{"sku": s, "qty": q} for s, q in lines.items()],
    }


async def shipment_state(pgc: asyncpg.Connection, order_id: str) -> tuple[Any, ...]:
    """Everything a shipment writes for the order."""
    return (
        await pgc.fetchval("SELECT status FROM orders WHERE order_id = $1", order_id),
        await pgc.fetch(
            "SELECT sku, shipped_qty FROM order_allocations WHERE order_id = $1 ORDER BY sku",
            order_id,
        ),
        await pgc.fetchval("SELECT count(*) FROM shipments WHERE order_id = $1", order_id),
        await pgc.fetchval("SELECT count(*) FROM order_transitions WHERE order_id = $1", order_id),
        await pgc.fetchval("SELECT count(*) FROM outbox WHERE order_id = $1", order_id),
    )


@contextlib.asynccontextmanager
async def flushing(settings: Settings, engine: Engine) -> AsyncIterator[None]:
    """The reconciler's flush alone, no saga: orders reach PostgreSQL and no step runs (a test
    runs them by hand with `step_decided`)."""
    config = dataclasses.replace(ReconcilerConfig.from_settings(settings), progress_s=0)
    worker = Reconciler(engine, config, log=lambda _line: None)
    task = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        worker.stop.set()
        await task


async def flushed(pgc: asyncpg.Connection, order_id: str, timeout_s: float = 30) -> None:
    """Until the order's row is in PostgreSQL."""
    deadline = time.monotonic() + timeout_s
    while not await pgc.fetchval("SELECT true FROM orders WHERE order_id = $1", order_id):
        assert time.monotonic() < deadline, f"order {order_id} was not flushed"
        await asyncio.sleep(0.1)
