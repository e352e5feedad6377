"""SIGTERM in the middle of a checkout burst: every hold a client was told about exists, and
nothing else was reserved."""

from __future__ import annotations

import asyncio
import signal

import httpx

from flashsale.engine import Engine
from flashsale.engine.settings import Settings
from flashsale.loadtests.gateway_process import gateway
from tests.helpers import assert_sound, eventually, sku_stock

SALE_BODY = {
    "name": "shutdown drill",
    "starts_at": "2020-01-01T00:00:00Z",
    "ends_at": None,
    "hold_ttl_s": 600,
    "per_user_limit": 0,
    "items": [{"sku": "A", "price_minor": 100, "suppliers": [{"id": "p", "stock": 100_000}]}],
}
# The signal goes once this many checkouts have been answered: the gateway is then serving the
# burst, with most of the 2,000 still to come, however fast or slow the machine.
ANSWERED_BEFORE_SIGNAL = 50


async def _checkout(client: httpx.AsyncClient, sale_id: str, n: int) -> str | None:
    try:
        reply = await client.post(
            f"/v1/sales/{sale_id}/holds",
            json={"customer_id": f"c{n}", "items": [{"sku": "A", "qty": 1}]},
        )
    except httpx.TransportError:
        return None  # refused or cut before an answer: the client was told nothing
    assert reply.status_code in (201, 503), reply.text
    return str(reply.json()["hold_id"]) if reply.status_code == 201 else None


async def test_sigterm_keeps_every_answered_hold(
    service_urls: dict[str, str], settings: Settings, live_engine: Engine, sale_id: str
) -> None:
    admin = {"Authorization": f"Bearer {settings.admin_key}"}
    with gateway(service_urls, workers=2) as gw:
        async with httpx.AsyncClient(
            base_url=gw.url, timeout=20, limits=httpx.Limits(max_connections=100)
        ) as client:
            assert (
                await client.put(f"/v1/admin/sales/{sale_id}", json=SALE_BODY, headers=admin)
            ).is_success
            tasks = [asyncio.create_task(_checkout(client, sale_id, n)) for n in range(2000)]

            async def burst_under_way() -> bool:
                return sum(t.done() for t in tasks) >= ANSWERED_BEFORE_SIGNAL

            await eventually(burst_under_way, timeout_s=20, interval_s=0.005)
            gw.process.send_signal(signal.SIGTERM)
            holds = [h for h in await asyncio.gather(*tasks) if h is not None]
        assert gw.process.wait(timeout=20) == 0
    assert 0 < len(holds) < 2000, "the signal should land mid-burst"
    for hold_id in holds:
        hold = await live_engine.get_hold(sale_id, hold_id)
        assert hold is not None and hold.status == "held"
    assert (await sku_stock(live_engine, sale_id, "A")).reserved == len(holds)
    await assert_sound(live_engine, sale_id)
