"""Shared fixtures: the project's own services, clients for Redis, Redis Cluster, fakeredis,
PostgreSQL's test database and the gateway."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import fakeredis
import httpx
import pytest
import redis

from flashsale import services
from flashsale.engine import Engine, Settings, load_settings
from flashsale.engine.connection import RedisClient, connect
from flashsale.loadtests.gateway_process import Gateway, gateway
from flashsale.store.db import Connection
from flashsale.store.migrate import migrate_url
from tests.gateway_helpers import client


@pytest.fixture(scope="session")
def settings() -> Settings:
    return dataclasses.replace(load_settings(), test_clock=True, reclaim_batch=1000)


TEST_REDIS_DB = 1


@pytest.fixture(scope="session")
def service_urls(settings: Settings) -> dict[str, str]:
    """Starts (or finds) the private Redis, Redis Cluster and PostgreSQL once per session. Tests
    get database 1 of the private Redis (the demo and benches use 0), emptied at the start along
    with the private cluster, so every key scan sees this run's keys only. A Redis given by
    FLASHSALE_REDIS_URL / _CLUSTER_URL is never flushed."""
    urls = services.up(settings, log=lambda _line: None)
    if not settings.redis_url:
        parts = urlsplit(urls["FLASHSALE_REDIS_URL"])
        urls["FLASHSALE_REDIS_URL"] = urlunsplit(parts._replace(path=f"/{TEST_REDIS_DB}"))
        redis.Redis.from_url(urls["FLASHSALE_REDIS_URL"]).flushdb()
    if not settings.redis_cluster_url:
        redis.RedisCluster.from_url(urls["FLASHSALE_REDIS_CLUSTER_URL"]).flushall()
    return urls


@pytest.fixture(scope="module")
def gw(service_urls: dict[str, str]) -> Iterator[Gateway]:
    """One real `flashsale serve` with 2 workers per test module (modules needing other
    settings define their own)."""
    with gateway(service_urls, workers=2) as running:
        yield running


@pytest.fixture
async def http(gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the module's gateway (`gw`). Up to 200 connections and 60 s a request, as
    test_gateway_e2e's copy had: its races (50 identical checkouts, confirms against releases)
    must reach the gateway at once, not queue behind a small pool. The other copies had 20
    (api, bad input) or 50 (waiting room) connections and 30 s; none of their tests has more
    than a few requests in flight, and a bigger pool only lets those go out at once too."""
    async with client(gw, max_connections=200, timeout_s=60) as c:
        yield c


@pytest.fixture
def sale_id(request: pytest.FixtureRequest) -> str:
    name = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40]
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def redis_client(service_urls: dict[str, str]) -> AsyncIterator[RedisClient]:
    client = connect(service_urls["FLASHSALE_REDIS_URL"])
    yield client
    await client.aclose()


@pytest.fixture
async def cluster_client(service_urls: dict[str, str]) -> AsyncIterator[RedisClient]:
    client = connect(service_urls["FLASHSALE_REDIS_CLUSTER_URL"], cluster=True)
    yield client
    await client.aclose()


@pytest.fixture
def live_engine(redis_client: RedisClient, settings: Settings) -> Engine:
    """An Engine on the real Redis that the gateway and reconciler processes use (the session's
    database), to look at or set up what they see. Its test clock moves only this process's
    scripts: the processes keep real time."""
    return Engine(redis_client, settings)


@pytest.fixture
def test_url(service_urls: dict[str, str]) -> str:
    """PostgreSQL's flashsale_test database, next to the one the gateway uses."""
    return service_urls["FLASHSALE_DATABASE_URL"].rsplit("/", 1)[0] + "/flashsale_test"


@pytest.fixture
async def conn(test_url: str) -> AsyncIterator[Connection]:
    """A connection to the test database, migrated; tests keep apart by unique sale ids."""
    await migrate_url(test_url)
    connection = await asyncpg.connect(test_url)
    yield connection
    await connection.close()


@pytest.fixture
async def gateway_db(service_urls: dict[str, str]) -> AsyncIterator[Connection]:
    """A connection to the database the test gateways use (they migrate it at start)."""
    connection = await asyncpg.connect(service_urls["FLASHSALE_DATABASE_URL"])
    yield connection
    await connection.close()


@pytest.fixture
def fake_server() -> Iterator[fakeredis.FakeServer]:
    yield fakeredis.FakeServer()


@pytest.fixture
async def fake_client(fake_server: fakeredis.FakeServer) -> AsyncIterator[RedisClient]:
    client = fakeredis.FakeAsyncRedis(server=fake_server, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture(params=["fakeredis", "redis", "cluster"])
def backend(request: pytest.FixtureRequest) -> RedisClient:
    """The same test against fakeredis, a real Redis and the real 3-master cluster."""
    fixture = {"fakeredis": "fake_client", "redis": "redis_client", "cluster": "cluster_client"}
    client: RedisClient = request.getfixturevalue(fixture[request.param])
    return client


@pytest.fixture
def engine(backend: RedisClient, settings: Settings) -> Engine:
    return Engine(backend, settings)
