"""The operator's routes: /healthz (no I/O), /readyz (Redis and PostgreSQL), /metrics."""

from __future__ import annotations

import contextlib

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from flashsale.engine.connection import memory_info
from flashsale.engine.errors import EngineUnavailable
from flashsale.gateway import callers
from flashsale.gateway.feed_status import HELP as FEED_HELP
from flashsale.gateway.http import send_bytes
from flashsale.gateway.metrics import CONTENT_TYPE, Sample, render
from flashsale.gateway.responses import json_response
from flashsale.gateway.room.worker import QUEUE_HELP
from flashsale.gateway.state import GatewayState

MAX_GAUGE_SALES = 50  # bounds the scrape's cost when many sales are loaded
HEALTHY = b'{"status":"ok"}'


class Healthz:
    """Liveness with no I/O: also the no-op baseline of `flashsale bench gateway`. A class, not a
    function, so Starlette mounts it as raw ASGI like the checkout route it is compared with."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_bytes(send, 200, HEALTHY)


async def readyz(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    checks = {"redis": False, "postgres": False}
    try:
        checks["redis"] = bool(await state.engine.client.ping())
    except Exception:  # any failure means not ready
        checks["redis"] = False
    try:
        async with state.pool.acquire(timeout=2) as conn:
            checks["postgres"] = await conn.fetchval("SELECT 1") == 1
    except Exception:
        checks["postgres"] = False
    ready = all(checks.values())
    return json_response({"ready": ready, "checks": checks}, 200 if ready else 503)


async def _stock_samples(state: GatewayState) -> list[Sample]:
    """Stock per supplier and open holds of up to MAX_GAUGE_SALES sales that are not closed; a
    sale whose state cannot be read is counted, not allowed to fail the whole scrape."""
    samples: list[Sample] = []
    live_sales = unreadable = 0
    for sale_id in await state.engine.sale_ids():
        if live_sales == MAX_GAUGE_SALES:
            break
        try:
            live = await state.cached_stock(sale_id)
        except EngineUnavailable:
            unreadable += 1
            continue
        if live is None or live.status == "closed":
            continue
        live_sales += 1
        samples.append(("flashsale_holds_open", {"sale": sale_id}, live.open_holds))
        for sku in live.skus:
            for supplier in sku.suppliers:
                for field in ("available", "reserved", "sold"):
                    labels = {"sale": sale_id, "sku": sku.sku, "supplier": supplier.supplier}
                    labels["state"] = field
                    samples.append(("flashsale_stock_units", labels, getattr(supplier, field)))
    samples.append(("flashsale_sales_unreadable", {}, unreadable))
    return samples


async def _redis_samples(state: GatewayState) -> list[Sample]:
    """Redis memory per node (every master of a cluster), or `flashsale_redis_up 0`."""
    try:
        nodes = await memory_info(state.engine.client)
    except EngineUnavailable:
        return [("flashsale_redis_up", {}, 0)]
    samples: list[Sample] = [("flashsale_redis_up", {}, 1)]
    for node, info in nodes.items():
        labels = {"node": node}
        samples.append(("flashsale_redis_used_memory_bytes", labels, info.used_bytes))
        samples.append(("flashsale_redis_maxmemory_bytes", labels, info.max_bytes))
    return samples


async def metrics(request: Request) -> Response:
    """Every worker's counters (multiprocess mode, gateway/metrics.py) and what is read now:
    Redis, the stock, the rooms. Unit counts (stock per sku, units left per room) only with the
    admin key, or when FLASHSALE_PUBLIC_STOCK=exact: exact stock helps a bot time its requests."""
    state: GatewayState = request.app.state.gateway
    admin = callers.is_admin(state, request.scope)
    exact = state.settings.public_stock == "exact" or admin
    samples: list[Sample] = []
    redis_up = True
    # Redis's memory (an INFO to every master, node addresses in the labels) for the admin's
    # scraper only: an anonymous scrape must not cost Redis a round trip per node.
    if admin:
        samples += await _redis_samples(state)
        redis_up = bool(samples[0][2])
    if exact and redis_up:
        # Redis may go away between the two reads; the next scrape says so.
        with contextlib.suppress(EngineUnavailable):
            samples += await _stock_samples(state)
    samples += await request.app.state.queue.metric_gauges(units=exact)
    samples += await state.feeds.samples()
    return Response(render(samples, HELP), media_type=CONTENT_TYPE)


HELP = {
    "flashsale_redis_up": "1 when this worker could read Redis during the scrape, else 0.",
    "flashsale_redis_used_memory_bytes": "Redis INFO used_memory, per node.",
    "flashsale_redis_maxmemory_bytes": "Redis maxmemory per node (0: no limit).",
    "flashsale_holds_open": "Holds placed and not yet confirmed, released or expired.",
    "flashsale_stock_units": "Units per sale, sku and supplier, by state (available, reserved, "
    "sold); with the admin key only, unless FLASHSALE_PUBLIC_STOCK=exact.",
    "flashsale_sales_unreadable": "Sales whose stock could not be read during the scrape.",
    **QUEUE_HELP,
    **FEED_HELP,
}
