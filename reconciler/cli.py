"""The async bodies of `flashsale reconcile`, `audit` and `recover` (flashsale/cli.py parses)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx
from redis.exceptions import RedisError

from flashsale.engine import Engine, Settings
from flashsale.engine.connection import connect
from flashsale.engine.errors import FlashsaleError
from flashsale.reconciler import metrics as metrics_http
from flashsale.reconciler.adapters import HttpPaymentProvider, HttpSuppliers
from flashsale.reconciler.audit import audit, render
from flashsale.reconciler.config import ReconcilerConfig
from flashsale.reconciler.intake.drop import DropConfig, DropWatcher
from flashsale.reconciler.intake.poll import PollConfig, Poller
from flashsale.reconciler.metrics import CountedSuppliers, Metrics
from flashsale.reconciler.outbox import OutboxConfig, OutboxDelivery
from flashsale.reconciler.recover import recover
from flashsale.reconciler.saga import Parties
from flashsale.reconciler.saga.runner import SagaConfig, SagaRunner
from flashsale.reconciler.watch import Watch, WatchConfig
from flashsale.reconciler.worker import Reconciler, log_stderr
from flashsale.store.migrate import migrate
from flashsale.store.saga import claims
from flashsale.store.saga.feed_room import FeedRoom

Job = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@contextlib.asynccontextmanager
async def engine_for(settings: Settings) -> AsyncIterator[Engine]:
    """The engine on the Redis the gateway serves from (the cluster when configured)."""
    url = settings.local_cluster_url if settings.redis_cluster else settings.local_redis_url
    client = connect(url, cluster=settings.redis_cluster)
    engine = Engine(client, settings)
    try:
        yield engine
    finally:
        if engine.batcher is not None:
            await engine.batcher.drain()
        await client.aclose()


def config_from(settings: Settings, args: argparse.Namespace) -> ReconcilerConfig:
    return ReconcilerConfig.from_settings(
        settings,
        min_batch=getattr(args, "min_batch", None),
        max_batch=getattr(args, "max_batch", None),
        progress_s=getattr(args, "progress_s", None),
        metrics_port=getattr(args, "metrics_port", None),
        sweep_interval_ms=getattr(args, "sweep_ms", None),
        only_sales=tuple(getattr(args, "sale", None) or ()) or None,
    )


def watch_config(settings: Settings, config: ReconcilerConfig) -> WatchConfig:
    """The watch audits the sales this reconciler was limited to (`--sale`), or every one."""
    return WatchConfig(
        settings.local_database_url,
        settings.watch_interval_ms / 1000,
        settings.audit_interval_ms / 1000,
        only_sales=config.only_sales or None,
    )


@contextlib.asynccontextmanager
async def saga_jobs(
    settings: Settings, engine: Engine, metrics: Metrics
) -> AsyncIterator[tuple[SagaRunner, OutboxDelivery]]:
    """The order saga and the outbox delivery, on their own small PostgreSQL pool and one HTTP
    client with the adapters' timeout."""
    # No connection is opened here (min_size 0): PostgreSQL may be down at start-up, as the
    # flush allows; the loops wait for it, and the flush's connection applies the migrations.
    pool = await asyncpg.create_pool(
        settings.local_database_url, min_size=0, max_size=8, command_timeout=30
    )
    # Two clients: a slow webhook receiver must not take the connections the parties need.
    timeout = httpx.Timeout(settings.adapter_timeout_ms / 1000)
    limits = httpx.Limits(max_connections=settings.saga_concurrency * 2)
    try:
        async with (
            httpx.AsyncClient(timeout=timeout, limits=limits) as client,
            httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as hooks,
        ):
            parties = Parties(
                engine,
                HttpPaymentProvider(client, settings.local_payment_url, settings.payment_auth),
                CountedSuppliers(
                    HttpSuppliers(client, settings.local_supplier_url, settings.supplier_auth),
                    metrics,
                ),
                settings.supplier_lock_s,
                tuple(s for s in settings.secondary_suppliers.split(",") if s),
                settings.backorder_wait_days,
                FeedRoom(pool),
            )
            runner = SagaRunner(pool, parties, SagaConfig.from_settings(settings), metrics)
            outbox = OutboxConfig(settings.local_webhook_urls, settings.webhook_secret)
            yield runner, OutboxDelivery(pool, hooks, outbox, metrics)
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def feed_jobs(settings: Settings, engine: Engine) -> AsyncIterator[list[Job]]:
    """The supplier feed connectors the reconciler runs: the drop folder and the poller."""
    async with httpx.AsyncClient(follow_redirects=False) as client:
        drop = DropWatcher(DropConfig.from_settings(settings), engine)
        poller = Poller(PollConfig.from_settings(settings), engine, client)
        yield [drop.run, poller.run]


async def reconcile(settings: Settings, args: argparse.Namespace) -> int:
    """Runs until SIGTERM or SIGINT (the batch in flight is committed and acknowledged first),
    or with --once until what the owned streams hold is flushed. With FLASHSALE_SAGA=1 it also
    runs the order saga and delivers the outbox."""
    config = config_from(settings, args)
    async with contextlib.AsyncExitStack() as stack:
        engine = await stack.enter_async_context(engine_for(settings))
        metrics = Metrics()
        jobs: list[Job] = []
        if settings.saga and not args.once:
            runner, outbox = await stack.enter_async_context(saga_jobs(settings, engine, metrics))
            jobs = [runner.run, outbox.run]
        if config.metrics_port and not args.once:
            jobs.append(Watch(engine, watch_config(settings, config), metrics).run)
        if not args.once:
            jobs += await stack.enter_async_context(feed_jobs(settings, engine))
        worker = Reconciler(engine, config, jobs=jobs)
        worker.metrics = metrics
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop.set)
        server = None
        if config.metrics_port:
            host = settings.reconcile_metrics_host
            server = await metrics_http.serve(worker.metrics, host, config.metrics_port)
        try:
            await worker.run(once=args.once)
        finally:
            if server is not None:
                server.close()
    return 0


async def saga_retry_main(settings: Settings, args: argparse.Namespace) -> int:
    """`flashsale saga retry --order O`: a dead-lettered step is due again, tries counted anew."""
    conn = await _pg(settings)
    try:
        done = [order for order in args.order if await claims.retry_dead(conn, order)]
    finally:
        await conn.close()
    for order in args.order:
        print(f"order {order}: {'step due again' if order in done else 'no dead step'}")
    return 0 if len(done) == len(args.order) else 1


async def _pg(settings: Settings) -> asyncpg.Connection:
    conn = await asyncpg.connect(settings.local_database_url, timeout=10)
    await migrate(conn)
    return conn


async def audit_main(settings: Settings, args: argparse.Namespace) -> int:
    """0 when every invariant holds (a PostgreSQL side still catching up counts as pending),
    1 on any violation, 2 when Redis or PostgreSQL cannot be asked."""
    try:
        async with engine_for(settings) as engine:
            conn = await _pg(settings)
            try:
                found = await audit(engine, conn, args.sale, strict=args.strict)
                seconds, micros = await engine.client.time()
            finally:
                await conn.close()
    except (FlashsaleError, RedisError, OSError, asyncpg.PostgresError) as exc:
        print(f"audit: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(render(found, args.sale, int(seconds) * 1000 + int(micros) // 1000))
    return 0 if found.ok else 1


async def recover_main(settings: Settings, args: argparse.Namespace) -> int:
    config = config_from(settings, args)
    started = time.perf_counter()
    try:
        async with engine_for(settings) as engine:
            conn = await _pg(settings)
            try:
                done = await recover(
                    engine, conn, config, args.sale, force=args.force, log=log_stderr
                )
            finally:
                await conn.close()
    except (FlashsaleError, RedisError, OSError, asyncpg.PostgresError) as exc:
        print(f"recover: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    sold = ", ".join(f"{sku} {units}" for sku, units in done.sold.items())
    print(
        f"recovered sale {args.sale}: config v{done.version}, status {done.status}, "
        f"{done.drained} stream entries flushed first, {done.orders} orders, "
        f"{done.holds} holds written back ({done.open_holds} open, {done.expired} expired on "
        f"the spot), {done.idem_keys} idempotency keys, sold: {sold} "
        f"({time.perf_counter() - started:.2f} s)"
    )
    return 0
