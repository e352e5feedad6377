"""The Starlette app: routes, lifespan (clients, migrations), problem+json errors, metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flashsale.engine import Engine, InvalidInput, Settings, load_settings, logs
from flashsale.engine.connection import connect
from flashsale.engine.settings import secret_problems
from flashsale.gateway import (
    admin,
    checkout,
    console,
    feed_upload,
    feeds,
    ops,
    order_changes,
    orders,
    returns,
    sales,
    settlement,
    shipments,
    suppliers,
)
from flashsale.gateway.http import ADMIN_MAX_BYTES, header, send_problem
from flashsale.gateway.metrics import OUTCOME_KEY, REDIS_WAIT_SHORT, count_batch
from flashsale.gateway.openapi import openapi_body, openapi_json
from flashsale.gateway.problems import PROBLEM_TYPE, Problem
from flashsale.gateway.request_ids import RequestIds
from flashsale.gateway.room import routes as room
from flashsale.gateway.room.fairness import fairness
from flashsale.gateway.room.worker import QueueService
from flashsale.gateway.state import GatewayState
from flashsale.store.migrate import migrate

HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}
log = logging.getLogger("flashsale.gateway")


class BodyLimitMiddleware:
    """Refuses a declared body over the limit before any route runs, so a route that never
    reads its body cannot act on a request carrying a huge one. Streamed bodies are also counted
    where they are read (gateway/http.py, gateway/responses.py)."""

    def __init__(
        self, app: ASGIApp, public_max_bytes: int, feed_max_bytes: int, file_max_bytes: int
    ) -> None:
        self.app = app
        self.public_max_bytes = public_max_bytes
        self.feed_max_bytes = feed_max_bytes  # a supplier's stock webhook
        self.file_max_bytes = file_max_bytes  # a stock file upload (gateway/feed_upload.py)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            limit = self.public_max_bytes
            if scope["path"].endswith("/feed/file"):
                limit = self.file_max_bytes
            elif scope["path"].startswith("/v1/admin/"):
                limit = ADMIN_MAX_BYTES
            elif scope["path"].startswith("/v1/feeds/"):
                limit = self.feed_max_bytes
            declared = header(scope, b"content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > limit):
                problem = Problem(413, "PAYLOAD_TOO_LARGE", f"bodies are limited to {limit} bytes")
                await send_problem(send, problem, scope["path"])
                return
        await self.app(scope, receive, send)


class MetricsMiddleware:
    """Counts every request by route template, method and status, and times it; checkouts and
    hold actions also by the outcome their handler answered (gateway/metrics.py)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            name = route.path if route is not None else "unmatched"
            state: GatewayState | None = getattr(scope["app"].state, "gateway", None)
            if state is not None:
                state.metrics.observe(name, scope["method"], status, time.perf_counter() - start)
                state.metrics.outcome(name, status, scope.get(OUTCOME_KEY))


def _problem_response(problem: Problem, request: Request) -> Response:
    request.scope[OUTCOME_KEY] = problem.code
    return Response(problem.body(request.url.path), problem.status, problem.headers, PROBLEM_TYPE)


async def on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return _problem_response(exc, request)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = HTTP_CODES.get(exc.status_code, "INVALID_REQUEST")
    problem = Problem(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))
    return _problem_response(problem, request)  # keeps Allow on a 405


async def on_invalid(request: Request, exc: Exception) -> Response:
    """Bad input caught by the engine's own checks (a malformed id in the path, say)."""
    return _problem_response(Problem(422, "INVALID_REQUEST", str(exc)), request)


async def on_crash(request: Request, exc: Exception) -> Response:
    """Never a traceback to the client; the server log keeps it, under the request's id. This
    answer leaves outside the middleware, so it sets X-Request-Id itself."""
    headers = {"X-Request-Id": logs.request_id.get()} if logs.request_id.get() else {}
    return _problem_response(Problem(500, "INTERNAL", "unexpected error", headers), request)


def routes() -> list[Route]:
    sale = "/v1/sales/{sale}"
    hold = sale + "/holds/{hold}"
    return [
        Route(sale + "/queue/{ticket}", room.QueueStatus(), methods=["GET"]),
        Route(sale + "/holds", checkout.CreateHold(), methods=["POST"]),
        Route(sale + "/queue", room.JoinQueue(), methods=["POST"]),
        Route(sale + "/queue", room.room_info, methods=["GET"]),
        Route(sale + "/fairness", fairness, methods=["GET"]),
        Route("/sales/{sale}/waiting-room", room.waiting_room_page, methods=["GET"]),
        Route(hold, checkout.get_hold, methods=["GET"]),
        Route(hold + "/confirm", checkout.confirm_hold, methods=["POST"]),
        Route(hold + "/release", checkout.release_hold, methods=["POST"]),
        Route(hold + "/extend", checkout.extend_hold, methods=["POST"]),
        Route(sale, sales.get_sale, methods=["GET"]),
        Route("/admin/", console.console_page, methods=["GET"]),
        Route("/admin/assets/{name}", console.console_asset, methods=["GET"]),
        Route("/v1/admin/sales", console.list_sales, methods=["GET"]),
        Route("/v1/admin/orders", console.list_orders, methods=["GET"]),
        Route("/v1/admin/orders/{order}/retry", console.retry_order, methods=["POST"]),
        Route("/v1/admin/sales/{sale}", admin.put_sale, methods=["PUT"]),
        Route("/v1/admin/sales/{sale}", admin.get_sale_live, methods=["GET"]),
        Route("/v1/admin/sales/{sale}/settlement", settlement.get_settlement, methods=["GET"]),
        Route("/v1/admin/sales/{sale}/{action}", admin.change_status, methods=["POST"]),
        Route("/v1/admin/suppliers/{supplier}", suppliers.put_supplier, methods=["PUT"]),
        Route("/v1/admin/suppliers/{supplier}", suppliers.get_supplier, methods=["GET"]),
        Route("/v1/feeds/{supplier}", feeds.post_feed, methods=["POST"]),
        Route("/v1/shipments/{supplier}", shipments.post_shipment, methods=["POST"]),
        Route(
            "/v1/admin/backorders/{backorder}/promised-date",
            shipments.post_promised_date,
            methods=["POST"],
        ),
        Route(
            "/v1/admin/suppliers/{supplier}/feed/file", feed_upload.put_feed_file, methods=["PUT"]
        ),
        Route("/v1/orders/{order}", orders.get_order, methods=["GET"]),
        Route("/v1/admin/orders/{order}", orders.get_order_admin, methods=["GET"]),
        Route("/v1/admin/orders/{order}/returns", returns.post_return, methods=["POST"]),
        Route("/v1/orders/{order}/cancel", order_changes.customer_cancel, methods=["POST"]),
        Route("/v1/admin/orders/{order}/cancel", order_changes.operator_cancel, methods=["POST"]),
        Route("/v1/admin/orders/{order}/refunds", order_changes.operator_refund, methods=["POST"]),
        Route("/v1/admin/orders/{order}/changes", order_changes.list_changes, methods=["GET"]),
        Route("/v1/admin/backorders", orders.list_backorders, methods=["GET"]),
        Route(
            "/v1/admin/backorders/{backorder}/decision", orders.decide_backorder, methods=["POST"]
        ),
        Route("/healthz", ops.Healthz(), methods=["GET"]),
        Route("/readyz", ops.readyz, methods=["GET"]),
        Route("/metrics", ops.metrics, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
    ]


def create_app(settings: Settings) -> Starlette:
    """The app; refuses settings with unfit secrets outside dev mode (see secret_problems)."""
    problems = secret_problems(settings)
    if problems:
        raise RuntimeError("refusing to start: " + "; ".join(problems))
    if settings.dev:
        log.warning("FLASHSALE_ENV=dev: a body customer_id is taken without a customer token")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        url = settings.local_cluster_url if settings.redis_cluster else settings.local_redis_url
        client = connect(url, cluster=settings.redis_cluster)
        pool: Any = await asyncpg.create_pool(
            settings.local_database_url, min_size=1, max_size=settings.pg_pool_size
        )
        async with pool.acquire() as conn:
            await migrate(conn)
        engine = Engine(client, settings)
        if engine.batcher is not None:
            engine.batcher.observer = count_batch
            engine.batcher.on_wait_short = REDIS_WAIT_SHORT.inc
        app.state.gateway = GatewayState.build(settings, engine, pool)
        app.state.queue = QueueService(settings, engine, app.state.gateway.records)
        app.state.queue.start()  # admission loops and heartbeat batching
        try:
            yield
        finally:
            # uvicorn has stopped accepting and finished in-flight requests by now.
            await app.state.queue.stop()
            if engine.batcher is not None:
                await engine.batcher.drain()
            await pool.close()
            await client.aclose()

    handlers: dict[Any, Any] = {
        Problem: on_problem,
        InvalidInput: on_invalid,
        HTTPException: on_http_error,
        Exception: on_crash,
    }
    app = Starlette(routes=routes(), lifespan=lifespan, exception_handlers=handlers)
    app.add_middleware(
        BodyLimitMiddleware,
        public_max_bytes=settings.max_body_bytes,
        feed_max_bytes=settings.feed_max_body_bytes,
        file_max_bytes=settings.feed_file_max_bytes,
    )
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(RequestIds, access_log=settings.access_log)  # outermost: every answer
    app.state.openapi = openapi_body(settings)
    return app


def app_from_env() -> Starlette:
    """uvicorn's factory for `flashsale serve` (each worker builds its own app)."""
    return create_app(load_settings())
