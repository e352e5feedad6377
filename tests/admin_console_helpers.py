"""Fixtures of the operator console's tests: a saga database of their own, the simulators, the
saga with few tries per step (so a step reaches the dead letters quickly), and a gateway on that
database."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Iterator

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import pytest

from flashsale.engine import Engine, Settings
from flashsale.engine.connection import RedisClient
from flashsale.loadtests.gateway_process import Gateway, gateway
from tests.saga_support import Sims, free_base, fresh_database, quiet_saga_db, saga_settings
from tests.saga_support import simulators as run_simulators

MAX_ATTEMPTS = 3  # tries of a step before it goes to the dead letters
ADMIN = {"Authorization": "Bearer dev-admin-key"}


@pytest.fixture(scope="module")
def console_url(service_urls: dict[str, str]) -> str:
    admin = service_urls["FLASHSALE_DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
    return asyncio.run(fresh_database(admin, "flashsale_console_test"))


@pytest.fixture(scope="module")
def csettings(
    settings: Settings, console_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    base = saga_settings(settings, free_base(), console_url, str(tmp_path_factory.mktemp("sim")))
    return dataclasses.replace(base, saga_max_attempts=MAX_ATTEMPTS)


@pytest.fixture(scope="module")
def csims(csettings: Settings) -> Iterator[Sims]:
    with run_simulators(csettings):
        yield Sims(csettings)


@pytest.fixture(scope="module")
def cgw(service_urls: dict[str, str], console_url: str) -> Iterator[Gateway]:
    """A gateway (one worker) on the console's database. Shoppers who joined a line and never
    poll stay in it, so the live view has a line to show."""
    env = {
        **service_urls,
        "FLASHSALE_DATABASE_URL": console_url,
        "FLASHSALE_QUEUE_GHOST_AFTER_MS": "600000",
    }
    with gateway(env, workers=1) as gw:
        yield gw


@pytest.fixture
async def cpg(console_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A quiet database with no dead letters an earlier test left (the list is global)."""
    async with quiet_saga_db(console_url) as conn:
        await conn.execute("UPDATE orders SET dead_step = NULL WHERE dead_step IS NOT NULL")
        yield conn


@pytest.fixture
def cengine(redis_client: RedisClient, csettings: Settings) -> Engine:
    return Engine(redis_client, dataclasses.replace(csettings, test_clock=False))


async def dead_at(
    pg: asyncpg.Connection, order_ids: list[str], step: str, timeout_s: float = 60
) -> None:
    """Until every order is stopped at `step` in the dead letters."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await pg.fetch(
            "SELECT order_id, dead_step FROM orders WHERE order_id = ANY($1)", order_ids
        )
        if len(rows) == len(order_ids) and all(r["dead_step"] == step for r in rows):
            return
        assert time.monotonic() < deadline, [dict(r) for r in rows]
        await asyncio.sleep(0.1)


async def order_row(pg: asyncpg.Connection, order_id: str) -> asyncpg.Record:
    return await pg.fetchrow("SELECT * FROM orders WHERE order_id = $1", order_id)
