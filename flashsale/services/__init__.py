"""Start, stop and probe private Redis, Redis Cluster and PostgreSQL instances under the run dir,
and with --monitoring a Prometheus scraping the local gateway and reconciler."""

from __future__ import annotations

import argparse
import shlex
import sys

from flashsale.engine.errors import FlashsaleError
from flashsale.engine.settings import Settings, load_settings
from flashsale.services.common import Log, ServiceError, _tcp_open, require_binary

# `as` re-exports: tests stop and restart the project's PostgreSQL through these two.
from flashsale.services.postgres import _down_postgres as _down_postgres
from flashsale.services.postgres import _postgres_answers
from flashsale.services.postgres import _up_postgres as _up_postgres
from flashsale.services.prometheus import Targets, down_prometheus, up_prometheus
from flashsale.services.prometheus import ready as _prometheus_ready
from flashsale.services.redis_nodes import (
    _STANDALONE_ARGS,
    _cluster_ok,
    _cluster_ports,
    _down_cluster,
    _ping,
    _start_redis,
    _stop_redis,
    _up_cluster,
)

__all__ = [
    "ServiceError",
    "Targets",
    "add_arguments",
    "down",
    "env_lines",
    "main",
    "require_binary",
    "run",
    "status",
    "up",
    "urls",
]


# --- public API --------------------------------------------------------------------------------


def urls(settings: Settings) -> dict[str, str]:
    """The connection URLs, given ones winning over the launcher's own: the three services,
    then the outside parties of the order saga (the simulators of `flashsale sim up`)."""
    hooks = settings.local_webhook_urls
    return {
        "FLASHSALE_REDIS_URL": settings.local_redis_url,
        "FLASHSALE_REDIS_CLUSTER_URL": settings.local_cluster_url,
        "FLASHSALE_DATABASE_URL": settings.local_database_url,
        "FLASHSALE_PAYMENT_URL": settings.local_payment_url,
        "FLASHSALE_SUPPLIER_URL": settings.local_supplier_url,
        "FLASHSALE_WEBHOOK_CUSTOMER_URL": hooks["customer"],
        "FLASHSALE_WEBHOOK_RETAILER_URL": hooks["retailer"],
    }


def up(
    settings: Settings, *, log: Log = print, monitoring: Targets | None = None
) -> dict[str, str]:
    """Start whatever is not already answering, wait until all answer, return the URLs. With
    `monitoring`, also a Prometheus scraping those targets (prometheus.py)."""
    if settings.redis_url:
        log("redis: using FLASHSALE_REDIS_URL")
    else:
        port = settings.redis_port
        _start_redis("redis", port, settings.run_path / "redis", _STANDALONE_ARGS, log)
    if settings.redis_cluster_url:
        log("cluster: using FLASHSALE_REDIS_CLUSTER_URL")
    else:
        _up_cluster(settings, log)
    if settings.database_url:
        log("postgres: using FLASHSALE_DATABASE_URL")
    else:
        _up_postgres(settings, log)
    if monitoring is not None:
        up_prometheus(settings, monitoring, log)
    return urls(settings)


def down(settings: Settings, *, log: Log = print) -> None:
    """Stop only the processes this launcher started, found through the run dir."""
    down_prometheus(settings, log)
    _down_postgres(settings, log)
    _down_cluster(settings, log)
    _stop_redis("redis", settings.redis_port, settings.run_path / "redis", log)


def status(settings: Settings, *, monitoring: bool = False) -> dict[str, bool]:
    """Which services answer right now (given URLs are only checked for an open port)."""
    redis, cluster = settings.redis_url, settings.redis_cluster_url
    states = {
        "redis": _tcp_open(redis, 6379) if redis else _ping(settings.redis_port),
        "cluster": _tcp_open(cluster, 6379) if cluster else _cluster_ok(_cluster_ports(settings)),
        "postgres": _postgres_answers(settings),
    }
    if monitoring:
        states["prometheus"] = _prometheus_ready(settings)
    return states


def env_lines(settings: Settings) -> list[str]:
    """Shell `export` lines for the URLs, ready for `eval`."""
    return [f"export {name}={shlex.quote(url)}" for name, url in urls(settings).items()]


def _print_err(line: str) -> None:
    print(line, file=sys.stderr)


def _targets(args: argparse.Namespace, settings: Settings) -> Targets | None:
    if not args.monitoring:
        return None
    reconciler = args.reconciler_port
    return Targets(
        gateway_port=args.gateway_port,
        reconciler_port=settings.reconcile_metrics_port if reconciler is None else reconciler,
        scrape_interval_s=args.scrape_s,
    )


def _command(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "up":
        # Progress to stderr, exports to stdout: `eval "$(flashsale services up)"` works.
        up(settings, log=_print_err, monitoring=_targets(args, settings))
        print("\n".join(env_lines(settings)))
    elif args.action == "down":
        down(settings)
    elif args.action == "env":
        print("\n".join(env_lines(settings)))
    else:
        states = status(settings, monitoring=args.monitoring)
        for name, answering in states.items():
            print(f"{name:<10} {'up' if answering else 'down'}")
        return 0 if all(states.values()) else 1
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `flashsale services` and of `python -m flashsale.services`."""
    parser.add_argument("action", choices=["up", "down", "status", "env"])
    parser.add_argument(
        "--monitoring",
        action="store_true",
        help="up: also a Prometheus on FLASHSALE_PROMETHEUS_PORT scraping the gateway and the "
        "reconciler below (down always stops it); status: also check it",
    )
    parser.add_argument(
        "--gateway-port", type=int, default=8000, help="the `flashsale serve --port` to scrape"
    )
    parser.add_argument(
        "--reconciler-port",
        type=int,
        help="the `flashsale reconcile --metrics-port` to scrape (default "
        "FLASHSALE_RECONCILE_METRICS_PORT; 0: none)",
    )
    parser.add_argument("--scrape-s", type=int, default=5, help="scrape and rule interval")


def run(args: argparse.Namespace) -> int:
    """0 on success, 1 on error or when `status` finds a service down."""
    try:
        return _command(args, load_settings())
    except (FlashsaleError, ValueError) as exc:
        _print_err(f"services {args.action}: {exc}")
        return 1


def main(argv: list[str]) -> int:
    """`up|down|status|env [--monitoring ...]`, as `flashsale services`."""
    parser = argparse.ArgumentParser(prog="python -m flashsale.services")
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage
        return 0 if exc.code == 0 else 1
    return run(args)
