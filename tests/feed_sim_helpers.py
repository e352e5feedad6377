"""The feed simulator (loadtests/simulators/feeds.py) for the connector tests: one process per
test module, driven over its control routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from flashsale.engine import Settings
from flashsale.loadtests.simulators import processes as sim


@pytest.fixture(scope="module")
def feed_sim(settings: Settings) -> Iterator[str]:
    """The simulator's base URL; started for the module, stopped after it."""
    sim.stop(settings, "feeds")  # one an earlier run left behind
    sim.start(settings, "feeds", log=False)
    yield f"http://127.0.0.1:{sim.ports(settings)['feeds']}"
    sim.stop(settings, "feeds")


@pytest.fixture
async def sim_http(feed_sim: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=feed_sim, timeout=30) as client:
        yield client


async def sim_feed(sim_http: httpx.AsyncClient, supplier: str, **config: Any) -> None:
    answer = await sim_http.put(f"/_sim/feeds/{supplier}", json=config)
    assert answer.status_code == 200, answer.text


async def sim_records(sim_http: httpx.AsyncClient, supplier: str) -> dict[str, Any]:
    records: dict[str, Any] = (await sim_http.get("/_sim/records")).json()
    return dict(records.get(supplier, {"fetches": [], "pushes": []}))


async def push(sim_http: httpx.AsyncClient, supplier: str, **doc: Any) -> list[dict[str, Any]]:
    """What the simulator sent and the gateway answered, one entry per delivery sent."""
    answer = await sim_http.post(f"/_sim/feeds/{supplier}/push", json=doc)
    assert answer.status_code == 200, answer.text
    sent: list[dict[str, Any]] = answer.json()["sent"]
    return sent
