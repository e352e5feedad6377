"""The operator's routes: /healthz (no I/O), /readyz (Redis and PostgreSQL), /metrics."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from flashsale.engine.errors import EngineUnavailable
from flashsale.gateway import callers
from flashsale.gateway.http import send_bytes
from flashsale.gateway.responses import json_response
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


async def _stock_gauges(state: GatewayState) -> list[tuple[str, dict[str, str], float]]:
    """Stock of up to MAX_GAUGE_SALES sales that are not closed; a sale whose state cannot be
    read is counted, not allowed to fail the whole scrape."""
    gauges: list[tuple[str, dict[str, str], float]] = []
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
        for sku in live.skus:
            for field in ("available", "reserved", "sold"):
                labels = {"sale": sale_id, "sku": sku.sku, "state": field}
                gauges.append(("flashsale_stock_units", labels, getattr(sku, field)))
    gauges.append(("flashsale_sales_unreadable", {}, unreadable))
    return gauges


async def metrics(request: Request) -> Response:
    """Unit counts (stock per sku, units left per room) only with the admin key, or when
    FLASHSALE_PUBLIC_STOCK=exact: exact stock helps a bot time its requests."""
    state: GatewayState = request.app.state.gateway
    exact = state.settings.public_stock == "exact" or callers.is_admin(state, request.scope)
    gauges: list[tuple[str, dict[str, str], float]] = []
    batcher = state.engine.batcher
    if batcher is not None:
        gauges.append(("flashsale_redis_batches", {}, batcher.batches))
        gauges.append(("flashsale_redis_batched_calls", {}, batcher.calls))
    try:
        gauges += await _stock_gauges(state) if exact else []
    except EngineUnavailable:
        gauges.append(("flashsale_redis_up", {}, 0))
    # The waiting rooms (room/worker.py).
    gauges += await request.app.state.queue.metric_gauges(units=exact)
    text = state.metrics.render(gauges)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")
