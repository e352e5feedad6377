"""The `flashsale` command: the product's subcommands, and those that plug in from other parts.

`serve`, `reconcile`, `migrate`, `audit`, `recover`, `saga`, `feeds` and `services` need only
the runtime dependencies. The load-test side (`loadtest`, `demo`, `bench`, `sim`) plugs in
through the entry-point group `flashsale.commands`: each entry point names a function that adds its
subparser. A plugin that cannot be imported is skipped with a warning, so a broken or missing
load-test install never stops `serve`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from collections.abc import Callable, Coroutine
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from flashsale.engine import logs
from flashsale.engine.settings import Settings, load_settings, secret_problems

PLUGIN_GROUP = "flashsale.commands"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client at import

Subparsers = Any  # argparse's _SubParsersAction, which typeshed keeps private


def run_async(main: Coroutine[Any, Any, int]) -> int:
    """Runs on uvloop, the loop the gateway serves on, so measurements match production."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def fit_to_run(command: str) -> Settings | None:
    """The settings, or None (having said why on stderr) when they must not run: bad values,
    or secrets that are missing, short or well known outside FLASHSALE_ENV=dev. Fit to run, the
    process logs JSON lines to stderr from here on (engine/logs.py)."""
    try:
        settings = load_settings()
    except ValueError as exc:
        print(f"flashsale {command}: {exc}", file=sys.stderr)
        return None
    problems = secret_problems(settings)
    for problem in problems:
        print(f"flashsale {command}: refusing to start: {problem}", file=sys.stderr)
    if problems:
        print("  (set them, or FLASHSALE_ENV=dev for a local try-out)", file=sys.stderr)
        return None
    logs.setup(settings.log_level)
    if settings.dev:
        logging.getLogger("flashsale.cli").warning(
            f"flashsale {command}: FLASHSALE_ENV=dev: well-known secrets where none are set, and "
            "a body customer_id is taken without a customer token; never in production",
            extra={"event": "dev_mode"},
        )
    return settings


def _services(args: argparse.Namespace) -> int:
    from flashsale import services

    return services.run(args)


def _listening(host: str, port: int) -> bool:
    """Whether a server already listens there (SO_REUSEADDR, as uvicorn binds: a port left in
    TIME_WAIT by a stopped server is free)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def _share_metrics(settings: Settings, port: int) -> None:
    """Points every gateway worker at one fresh folder for prometheus_client's multiprocess mode
    (gateway/metrics.py), so a scrape of any worker sums all of them. Set before a worker
    imports prometheus_client, which reads it at import; an earlier run's files are removed.
    The folder is per port, also under a PROMETHEUS_MULTIPROC_DIR given by the operator: a
    server starting on another port must not remove the files of one still running."""
    base = Path(os.environ.get(MULTIPROC_ENV) or settings.run_path / "metrics")
    path = base / f"gateway-{port}"
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(path)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = fit_to_run("serve")
    if settings is None:
        return 2
    if _listening(args.host, args.port):  # before the metrics files of that server are cleared
        print(f"flashsale serve: {args.host}:{args.port} is already in use", file=sys.stderr)
        return 2
    _share_metrics(settings, args.port)
    uvicorn.run(
        "flashsale.gateway.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        # The gateway decides itself which proxies may set X-Forwarded-For (settings); uvicorn's
        # own handling would trust any loopback peer and let a spoofed header dodge rate limits.
        proxy_headers=False,
        access_log=False,  # the app's own (FLASHSALE_ACCESS_LOG) carries the request id
        log_level="warning",
        log_config=logs.uvicorn_config(settings.log_level),
        timeout_graceful_shutdown=10,
        backlog=4096,
    )
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from flashsale.store.migrate import migrate_url

    applied = asyncio.run(migrate_url(load_settings().local_database_url))
    print(f"applied migrations {applied}" if applied else "schema is up to date")
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    from flashsale.reconciler import cli

    settings = fit_to_run("reconcile")
    if settings is None:
        return 2
    return run_async(cli.reconcile(settings, args))


def _audit(args: argparse.Namespace) -> int:
    from flashsale.reconciler import cli

    return run_async(cli.audit_main(load_settings(), args))


def _recover(args: argparse.Namespace) -> int:
    from flashsale.reconciler import cli

    return run_async(cli.recover_main(load_settings(), args))


def _saga(args: argparse.Namespace) -> int:
    from flashsale.reconciler import cli

    return run_async(cli.saga_retry_main(load_settings(), args))


def _settlement(args: argparse.Namespace) -> int:
    from flashsale.reconciler import settlement

    return run_async(settlement.settlement_main(load_settings(), args))


def _feeds(args: argparse.Namespace) -> int:
    from flashsale.reconciler.intake import commands

    main = commands.load_main if args.action == "load" else commands.replay_main
    return run_async(main(load_settings(), args))


def _verify_draw(args: argparse.Namespace) -> int:
    from flashsale import verify_draw

    return verify_draw.run(args)


def _add_service_commands(sub: Subparsers) -> None:
    from flashsale.services import add_arguments

    services = sub.add_parser(
        "services", help="start or stop the local Redis, cluster, PostgreSQL (and Prometheus)"
    )
    add_arguments(services)
    services.set_defaults(func=_services)
    serve = sub.add_parser("serve", help="run the HTTP gateway (uvicorn, uvloop, httptools)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=_serve)
    migrate = sub.add_parser("migrate", help="apply the PostgreSQL migrations")
    migrate.set_defaults(func=_migrate)
    verify = sub.add_parser(
        "verify-draw", help="recompute a sale's pre-queue draw from its fairness receipt"
    )
    from flashsale.verify_draw import add_arguments as add_verify_arguments

    add_verify_arguments(verify)
    verify.set_defaults(func=_verify_draw)


def _add_reconciler_commands(sub: Subparsers) -> None:
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
    saga = sub.add_parser("saga", help="order saga operations")
    saga.add_argument("action", choices=["retry"], help="retry: run a dead-lettered step again")
    saga.add_argument("--order", action="append", required=True, help="order id (repeatable)")
    saga.set_defaults(func=_saga)
    settlement = sub.add_parser("settlement", help="a sale's money, units and retailer credits")
    settlement.add_argument("--sale", required=True)
    settlement.add_argument("--json", action="store_true", help="the document, as the API gives")
    settlement.set_defaults(func=_settlement)
    _add_feed_commands(sub)


def _add_feed_commands(sub: Subparsers) -> None:
    feeds = sub.add_parser("feeds", help="supplier stock feeds: load a stock file, replay")
    actions = feeds.add_subparsers(dest="action", required=True)
    load = actions.add_parser("load", help="apply a CSV/JSON/XML stock file (progress on stderr)")
    load.add_argument("file", help="the stock file (read as a stream, any size)")
    load.add_argument("--supplier", required=True, help="the supplier whose stock it is")
    load.add_argument("--format", choices=["csv", "json", "xml"], help="default: by extension")
    load.add_argument("--as-of", help="ISO 8601 time of rows without one (default: file mtime)")
    load.add_argument(
        "--chunk", type=int, help="records per delivery (FLASHSALE_FEED_CHUNK_RECORDS)"
    )
    replay = actions.add_parser("replay", help="re-apply a delivery's quarantined records")
    replay.add_argument("--delivery", required=True, help="the delivery id")
    replay.add_argument("--supplier", help="needed when several suppliers used that id")
    feeds.set_defaults(func=_feeds)


def _add_plugins(sub: Subparsers) -> None:
    for entry in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        try:
            add: Callable[[Subparsers], None] = entry.load()
        except Exception as exc:  # a broken plugin must not take the product's commands down
            print(f"flashsale: command {entry.name!r} unavailable: {exc}", file=sys.stderr)
            continue
        add(sub)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="flashsale", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command", required=True)
    _add_service_commands(sub)
    _add_reconciler_commands(sub)
    _add_plugins(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
