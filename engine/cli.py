"""The `flashsale` command: one entry point, subcommands imported only when used."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from engine.settings import load_settings


def _services(args: argparse.Namespace) -> int:
    from engine import services

    return services.main([args.action])


def _run_async(main: Coroutine[Any, Any, int]) -> int:
    """Runs on uvloop, the loop the gateway serves on, so measurements match production."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _bench(args: argparse.Namespace) -> int:
    from loadtests import bench_suite

    return _run_async(bench_suite.run(load_settings(), args))


def _demo(args: argparse.Namespace) -> int:
    from loadtests import demo

    return _run_async(demo.run(load_settings()))


def _loadtest(args: argparse.Namespace) -> int:
    from loadtests import loadtest

    return _run_async(loadtest.main(load_settings(), args))


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    uvicorn.run(
        "gateway.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        # The gateway decides itself which proxies may set X-Forwarded-For (settings); uvicorn's
        # own handling would trust any loopback peer and let a spoofed header dodge rate limits.
        proxy_headers=False,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=10,
        backlog=4096,
    )
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from reconciler.migrate import migrate_url

    applied = asyncio.run(migrate_url(load_settings().local_database_url))
    print(f"applied migrations {applied}" if applied else "schema is up to date")
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    from reconciler import cli

    return _run_async(cli.reconcile(load_settings(), args))


def _audit(args: argparse.Namespace) -> int:
    from reconciler import cli

    return _run_async(cli.audit_main(load_settings(), args))


def _recover(args: argparse.Namespace) -> int:
    from reconciler import cli

    return _run_async(cli.recover_main(load_settings(), args))


def _sim(args: argparse.Namespace) -> int:
    from loadtests import sim

    return sim.main(args.action, load_settings(), args.decline_share)


def _saga(args: argparse.Namespace) -> int:
    from reconciler import cli

    return _run_async(cli.saga_retry_main(load_settings(), args))


def _add_saga_commands(sub: Any) -> None:
    sim = sub.add_parser(
        "sim", help="start or stop the simulated payment provider, suppliers, webhooks"
    )
    sim.add_argument("action", choices=["up", "down", "status", "env"])
    sim.add_argument("--decline-share", type=float, default=0.05, help="payment: share declined")
    sim.set_defaults(func=_sim)
    saga = sub.add_parser("saga", help="order saga operations")
    saga.add_argument("action", choices=["retry"], help="retry: run a dead-lettered step again")
    saga.add_argument("--order", action="append", required=True, help="order id (repeatable)")
    saga.set_defaults(func=_saga)


def _add_reconciler_commands(sub: Any) -> None:
    reconcile = sub.add_parser("reconcile", help="flush sale events to PostgreSQL, sweep holds")
    reconcile.add_argument("--once", action="store_true", help="drain what is there, then exit")
    reconcile.add_argument("--sale", action="append", help="only this sale (repeatable)")
    reconcile.add_argument("--min-batch", type=int, help="smallest stream read (entries)")
    reconcile.add_argument("--max-batch", type=int, help="largest stream read (entries)")
    reconcile.add_argument("--sweep-ms", type=int, help="sweeper period in ms")
    reconcile.add_argument("--progress-s", type=float, help="progress line period; 0 = off")
    reconcile.add_argument("--metrics-port", type=int, help="Prometheus text on this port")
    reconcile.set_defaults(func=_reconcile)
    audit = sub.add_parser("audit", help="check a sale's invariants, Redis against PostgreSQL")
    audit.add_argument("--sale", required=True)
    audit.add_argument("--strict", action="store_true", help="unflushed events are a violation")
    audit.set_defaults(func=_audit)
    recover = sub.add_parser("recover", help="rebuild a sale's Redis state from PostgreSQL")
    recover.add_argument("--sale", required=True)
    recover.add_argument("--force", action="store_true", help="even if Redis still has it")
    recover.set_defaults(func=_recover)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flashsale", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    services = sub.add_parser("services", help="start or stop the local Redis, cluster, PostgreSQL")
    services.add_argument("action", choices=["up", "down", "status", "env"])
    services.set_defaults(func=_services)
    serve = sub.add_parser("serve", help="run the HTTP gateway (uvicorn, uvloop, httptools)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=_serve)
    migrate = sub.add_parser("migrate", help="apply the PostgreSQL migrations")
    migrate.set_defaults(func=_migrate)
    bench = sub.add_parser("bench", help="run one benchmark, or all, and print one table")
    targets = ["engine", "pg", "gateway", "queue", "reconcile", "all"]
    bench.add_argument("target", nargs="?", default="all", choices=targets)
    bench.add_argument(
        "--requests", type=int, default=100_000, help="reservations per side (pg: 1/10 on postgres)"
    )
    bench.add_argument("--concurrency", type=int, default=50, help="concurrent callers per side")
    bench.add_argument("--seconds", type=int, default=10, help="gateway, queue: wrk s per side")
    bench.add_argument("--connections", type=int, default=64, help="gateway: wrk connections")
    bench.add_argument("--workers", type=int, default=2, help="gateway: uvicorn workers")
    bench.add_argument("--events", type=int, default=10_000, help="reconcile: events to flush")
    bench.set_defaults(func=_bench)
    demo = sub.add_parser("demo", help="a 60 s flash sale over HTTP with the saga, then the report")
    demo.set_defaults(func=_demo)
    from loadtests.options import add_arguments as add_loadtest_arguments  # argparse only

    loadtest = sub.add_parser("loadtest", help="Locust against a gateway, then audit and report")
    add_loadtest_arguments(loadtest)
    loadtest.set_defaults(func=_loadtest)
    _add_reconciler_commands(sub)
    _add_saga_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
