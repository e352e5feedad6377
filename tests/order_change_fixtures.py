"""Fixtures of the cancel and refund tests, loaded with `pytest_plugins`: the simulators and a
gateway as real processes over a saga database of the test module's own."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx
import pytest

from flashsale.engine import Engine, Settings
from flashsale.engine.connection import RedisClient
from flashsale.loadtests.gateway_process import Gateway, gateway
from tests.saga_support import (
    Sims,
    free_base,
    fresh_database,
    quiet_saga_db,
    saga_settings,
    simulators,
)


@pytest.fixture(scope="module")
def saga_base() -> int:
    return free_base()


@pytest.fixture(scope="module")
def saga_url(service_urls: dict[str, str], request: pytest.FixtureRequest) -> str:
    admin = service_urls["FLASHSALE_DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
    name = "flashsale_" + request.module.__name__.rsplit(".", 1)[-1]
    return asyncio.run(fresh_database(admin, name))


@pytest.fixture(scope="module")
def ssettings(
    settings: Settings, saga_base: int, saga_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    return saga_settings(settings, saga_base, saga_url, str(tmp_path_factory.mktemp("sim")))


@pytest.fixture(scope="module")
def sims(ssettings: Settings) -> Iterator[Sims]:
    with simulators(ssettings):
        yield Sims(ssettings)


@pytest.fixture
def fresh_sims(sims: Sims) -> Sims:
    sims.reset()
    return sims


@pytest.fixture(scope="module")
def saga_gw(service_urls: dict[str, str], saga_url: str) -> Iterator[Gateway]:
    """A gateway over the module's saga database (conftest's `gw` has the shared one)."""
    with gateway({**service_urls, "FLASHSALE_DATABASE_URL": saga_url}, workers=1) as g:
        yield g


@pytest.fixture
async def api(saga_gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=saga_gw.url, timeout=30) as client:
        yield client


@pytest.fixture
async def admin_api(saga_gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `saga_gw` with the dev admin key."""
    headers = {"authorization": "Bearer dev-admin-key"}
    async with httpx.AsyncClient(base_url=saga_gw.url, headers=headers, timeout=30) as client:
        yield client


@pytest.fixture
async def pgc(saga_url: str) -> AsyncIterator[asyncpg.Connection]:
    async with quiet_saga_db(saga_url) as conn:
        yield conn


@pytest.fixture
def sengine(redis_client: RedisClient, ssettings: Settings) -> Engine:
    return Engine(redis_client, dataclasses.replace(ssettings, test_clock=False))
