"""/metrics as a scraper sees it: one scrape of either gateway worker gives the exact sum over the
workers (prometheus_client's multiprocess mode), and the reconciler's watch job reports what
PostgreSQL and the audit know."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from urllib.parse import urlsplit

import httpx

from flashsale.engine import Engine, keys, load_settings
from flashsale.loadtests.gateway_process import Gateway
from flashsale.reconciler.metrics import Metrics
from flashsale.reconciler.watch import Watch, WatchConfig
from flashsale.store.db import Connection
from flashsale.store.health import ORDER_STATUSES
from tests.gateway_helpers import ADMIN, checkout, client, create_sale, new_sale_id, sale_body
from tests.helpers import assert_sound
from tests.metrics_helpers import Scrape, delta, parse_metrics, value

CROWD = 240  # shoppers, one unit each
STOCK = [("p", 120), ("q", 60)]  # 180 units: 180 holds, 60 SOLD_OUT


async def _scrape(gw: Gateway) -> Scrape:
    """A new connection each time: successive scrapes land on either worker."""
    async with client(gw, max_connections=1) as one:
        reply = await one.get("/metrics", headers=ADMIN)
    assert reply.status_code == 200, reply.text
    return parse_metrics(reply.text)


async def test_one_scrape_of_any_worker_counts_every_workers_checkouts(
    gw: Gateway, http: httpx.AsyncClient, live_engine: Engine
) -> None:
    # The stock gauges cover the first 50 open sales in id order; the suite has hundreds open by
    # now, so this sale's id sorts first.
    sale = f"000-metrics-{uuid.uuid4().hex[:10]}"
    await create_sale(http, sale, sale_body(STOCK))
    before = await _scrape(gw)
    async with client(gw, max_connections=64) as crowd:
        replies = await asyncio.gather(*(checkout(crowd, sale, f"m{i}") for i in range(CROWD)))
    codes = [r.status_code for r in replies]
    assert (codes.count(201), codes.count(409)) == (180, 60), codes

    # Both workers took part: each writes its own files in the multiprocess folder.
    port = urlsplit(gw.url).port
    folder = load_settings().run_path / "metrics" / f"gateway-{port}"
    writers = {path.stem.rsplit("_", 1)[1] for path in folder.glob("counter_*.db")}
    assert len(writers) >= 2, f"only {writers} wrote counters: the test needs both workers"

    route = {"route": "/v1/sales/{sale}/holds", "method": "POST"}
    for _ in range(6):
        after = await _scrape(gw)
        assert delta(before, after, "flashsale_checkouts_total", {"outcome": "OK"}) == 180
        assert delta(before, after, "flashsale_checkouts_total", {"outcome": "SOLD_OUT"}) == 60
        created = {**route, "status": "201"}
        assert delta(before, after, "flashsale_http_requests_total", created) == 180
        count = {"route": route["route"]}
        assert delta(before, after, "flashsale_http_request_duration_seconds_count", count) == CROWD
        assert delta(before, after, "flashsale_redis_batched_calls_total") >= CROWD
        held = {"sale": sale, "sku": "A", "supplier": "q", "state": "reserved"}
        assert value(after, "flashsale_stock_units", held) == 60
        assert value(after, "flashsale_holds_open", {"sale": sale}) == 180
    await assert_sound(live_engine, sale)


async def test_the_watch_job_reports_saga_states_and_audit_mismatches(
    http: httpx.AsyncClient,
    live_engine: Engine,
    gateway_db: Connection,
    service_urls: dict[str, str],
) -> None:
    """A sale that is sound shows 0; the same sale with a unit made up in Redis shows the
    audit's violation in flashsale_audit_mismatches (the alert rule's input)."""
    sale = new_sale_id("watch")
    await create_sale(http, sale, sale_body([("p", 10)]))
    metrics = Metrics()
    config = WatchConfig(service_urls["FLASHSALE_DATABASE_URL"], 1.0, 1.0, only_sales=(sale,))
    watch = Watch(live_engine, config, metrics)
    await watch.round()
    assert metrics.saga_orders.keys() == set(ORDER_STATUSES)
    assert metrics.audit_mismatches == {sale: 0} and metrics.audit_last_run_s > 0
    # A unit appears in Redis that PostgreSQL and the ledger never saw: invariant 1 breaks.
    await live_engine.client.hincrby(keys.stock(sale, "A"), "available", 1)
    try:
        await watch.audit_all(gateway_db)
        assert metrics.audit_mismatches[sale] >= 1
        page = parse_metrics(metrics.prometheus().decode())
        assert value(page, "flashsale_audit_mismatches", {"sale": sale}) >= 1
    finally:
        await live_engine.client.hincrby(keys.stock(sale, "A"), "available", -1)
    await watch.audit_all(gateway_db)
    assert metrics.audit_mismatches == {sale: 0}


def test_a_second_server_on_the_port_leaves_the_running_ones_counts_alone(gw: Gateway) -> None:
    """`serve` empties its metrics folder at start: a second one on a busy port must stop first."""
    port = urlsplit(gw.url).port
    assert port is not None
    folder = load_settings().run_path / "metrics" / f"gateway-{port}"
    files = sorted(folder.glob("*.db"))
    assert files, "the running gateway has written no metrics files"
    second = subprocess.run(
        [sys.executable, "-m", "flashsale.cli", "serve", "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 2 and "already in use" in second.stderr, second.stderr
    assert sorted(folder.glob("*.db")) == files
