"""Every metric the alert rules and the dashboard name is one the app exports: the names come from
live scrapes of a real gateway (2 workers, with the admin key) and of a real reconciler running
the saga against the simulators, after traffic that exercises checkouts, holds, a waiting room,
the flush, the saga, the suppliers, the notifications and the audit."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from pathlib import Path

import httpx

from flashsale.engine import load_settings
from flashsale.loadtests.gateway_process import Gateway, free_port
from tests.deploy_helpers import exported_names, get, used_names
from tests.gateway_helpers import (
    ADMIN,
    PAYMENT,
    checkout,
    create_sale,
    hold_id_of,
    new_sale_id,
    sale_body,
)
from tests.reconciler_support import Process
from tests.saga_support import free_base, simulators
from tests.waiting_room_helpers import join, room_body

RECONCILER_WAIT_S = 45.0


async def _shop(http: httpx.AsyncClient, sale: str) -> None:
    """Checkouts answered OK and refused; a hold confirmed, one released, one extended."""
    holds = f"/v1/sales/{sale}/holds"
    confirmed = await hold_id_of(http, sale, "c1")
    reply = await http.post(f"{holds}/{confirmed}/confirm", json=PAYMENT)
    assert reply.status_code == 200, reply.text
    released = await hold_id_of(http, sale, "c2")
    assert (await http.post(f"{holds}/{released}/release")).status_code == 200
    extended = await hold_id_of(http, sale, "c3")
    assert (await http.post(f"{holds}/{extended}/extend")).status_code == 200
    assert (await checkout(http, sale, "c1", 2)).status_code == 409  # over the limit of 2
    assert (await checkout(http, sale, "c4", 5)).status_code == 409  # more than is left


async def _queue(http: httpx.AsyncClient, sale: str) -> None:
    """Someone waits in the room; a checkout without admission is refused."""
    await join(http, sale, "w1")
    refused = await checkout(http, sale, "w2")
    assert refused.status_code == 403, refused.text


async def _feed(http: httpx.AsyncClient) -> None:
    """A supplier with a stock feed: the feed families (read from PostgreSQL) are exported."""
    body = {
        "name": "deploy",
        "feed": {"kind": "file", "sku_map": [{"supplier_sku": "X", "sku": "A"}]},
    }
    reply = await http.put(f"/v1/admin/suppliers/{new_sale_id('feed')}", json=body, headers=ADMIN)
    assert reply.status_code == 201, reply.text


async def _reconciler_names(
    service_urls: dict[str, str], sale: str, tmp_path: Path, wanted: set[str], seen: set[str]
) -> set[str]:
    """Runs `flashsale reconcile --metrics-port P` with the saga, on the simulators, and scrapes
    it until everything `wanted` that the gateway did not give (`seen`) is there, or time runs
    out; the names of its last page."""
    sims = dataclasses.replace(load_settings(), run_dir=str(tmp_path), sim_base_port=free_base())
    hooks = sims.local_webhook_urls
    env = {
        **service_urls,
        "FLASHSALE_SAGA": "1",
        "FLASHSALE_PAYMENT_URL": sims.local_payment_url,
        "FLASHSALE_SUPPLIER_URL": sims.local_supplier_url,
        "FLASHSALE_WEBHOOK_CUSTOMER_URL": hooks["customer"],
        "FLASHSALE_WEBHOOK_RETAILER_URL": hooks["retailer"],
        "FLASHSALE_WATCH_INTERVAL_MS": "300",
        "FLASHSALE_AUDIT_INTERVAL_MS": "300",
        "FLASHSALE_SAGA_BACKOFF_BASE_MS": "50",
        "FLASHSALE_SAGA_BACKOFF_CAP_MS": "400",
    }
    port = free_port()
    names: set[str] = set()
    with simulators(sims):
        process = Process(env, "reconcile", "--metrics-port", str(port), "--sale", sale)
        try:
            deadline = time.monotonic() + RECONCILER_WAIT_S
            while time.monotonic() < deadline and not wanted <= names | seen:
                assert process.popen.poll() is None, process.log()[-3000:]
                with contextlib.suppress(OSError):  # not listening yet
                    names = exported_names(get(f"http://127.0.0.1:{port}/metrics"))
                await asyncio.sleep(0.3)
        finally:
            assert process.stop() == 0, process.log()[-3000:]
    return names


async def test_every_metric_the_rules_and_the_dashboard_use_is_exported(
    gw: Gateway, http: httpx.AsyncClient, service_urls: dict[str, str], tmp_path: Path
) -> None:
    plain, room = new_sale_id("deploy"), new_sale_id("deploy-room")
    await create_sale(http, plain, sale_body([("p", 3), ("q", 2)], per_user_limit=2))
    await create_sale(http, room, room_body(10, rate=1))
    try:
        await _shop(http, plain)
        await _queue(http, room)
        await _feed(http)
        await asyncio.sleep(0.5)  # the admission loop's first tick sets the room's figures
        page = await http.get("/metrics", headers=ADMIN)
        assert page.status_code == 200, page.text
        gateway = exported_names(page.text)
        used = used_names()
        reconciler = await _reconciler_names(service_urls, plain, tmp_path, set(used), gateway)
    finally:
        for sale in (plain, room):
            await http.post(f"/v1/admin/sales/{sale}/close", headers=ADMIN)
    missing = {n: sorted(where) for n, where in used.items() if n not in gateway | reconciler}
    assert missing == {}, "used but not exported:\n" + "\n".join(
        f"  {name}: {', '.join(where)}" for name, where in sorted(missing.items())
    )
