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
    from loadtests import bench

    return _run_async(bench.run(load_settings(), args.target, args))


def _demo(args: argparse.Namespace) -> int:
    from loadtests import demo

    return _run_async(demo.run(load_settings()))


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
    bench = sub.add_parser("bench", help="run a benchmark and print a table")
    bench.add_argument("target", choices=["engine", "gateway"])
    bench.add_argument("--requests", type=int, default=100_000, help="reservations per side")
    bench.add_argument("--concurrency", type=int, default=50, help="concurrent callers per side")
    bench.add_argument("--seconds", type=int, default=10, help="gateway: wrk run per side")
    bench.add_argument("--connections", type=int, default=64, help="gateway: wrk connections")
    bench.add_argument("--workers", type=int, default=2, help="gateway: uvicorn workers")
    bench.set_defaults(func=_bench)
    demo = sub.add_parser("demo", help="load a demo sale, run shoppers, print the state")
    demo.set_defaults(func=_demo)
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
