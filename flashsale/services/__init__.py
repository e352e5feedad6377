"""Start, stop and probe private Redis, Redis Cluster and PostgreSQL instances under the run dir."""

from __future__ import annotations

import shlex
import sys

from flashsale.engine.errors import FlashsaleError
from flashsale.engine.settings import Settings, load_settings
from flashsale.services.common import Log, ServiceError, _tcp_open, require_binary

# `as` re-exports: tests stop and restart the project's PostgreSQL through these two.
from flashsale.services.postgres import _down_postgres as _down_postgres
from flashsale.services.postgres import _postgres_answers
from flashsale.services.postgres import _up_postgres as _up_postgres
from flashsale.services.redis_nodes import (
    _STANDALONE_ARGS,
    _cluster_dir,
    _cluster_ok,
    _cluster_ports,
    _ping,
    _start_redis,
    _stop_redis,
    _up_cluster,
)

__all__ = [
    "ServiceError",
    "down",
    "env_lines",
    "main",
    "require_binary",
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


def up(settings: Settings, *, log: Log = print) -> dict[str, str]:
    """Start whatever is not already answering, wait until all answer, return the URLs."""
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
    return urls(settings)


def down(settings: Settings, *, log: Log = print) -> None:
    """Stop only the processes this launcher started, found through the run dir."""
    _down_postgres(settings, log)
    for port in _cluster_ports(settings):
        _stop_redis("cluster node", port, _cluster_dir(settings, port), log)
    _stop_redis("redis", settings.redis_port, settings.run_path / "redis", log)


def status(settings: Settings) -> dict[str, bool]:
    """Which services answer right now (given URLs are only checked for an open port)."""
    redis, cluster = settings.redis_url, settings.redis_cluster_url
    return {
        "redis": _tcp_open(redis, 6379) if redis else _ping(settings.redis_port),
        "cluster": _tcp_open(cluster, 6379) if cluster else _cluster_ok(_cluster_ports(settings)),
        "postgres": _postgres_answers(settings),
    }


def env_lines(settings: Settings) -> list[str]:
    """Shell `export` lines for the URLs, ready for `eval`."""
    return [f"export {name}={shlex.quote(url)}" for name, url in urls(settings).items()]


def _print_err(line: str) -> None:
    print(line, file=sys.stderr)


def _command(action: str, settings: Settings) -> int:
    if action == "up":
        # Progress to stderr, exports to stdout: `eval "$(flashsale services up)"` works.
        up(settings, log=_print_err)
        print("\n".join(env_lines(settings)))
    elif action == "down":
        down(settings)
    elif action == "env":
        print("\n".join(env_lines(settings)))
    else:
        states = status(settings)
        for name, answering in states.items():
            print(f"{name:<8} {'up' if answering else 'down'}")
        return 0 if all(states.values()) else 1
    return 0


def main(argv: list[str]) -> int:
    """`up|down|status|env`; 0 on success, 1 on error or when `status` finds a service down."""
    if len(argv) != 1 or argv[0] not in {"up", "down", "status", "env"}:
        _print_err("usage: services up|down|status|env")
        return 1
    try:
        return _command(argv[0], load_settings())
    except (FlashsaleError, ValueError) as exc:
        _print_err(f"services {argv[0]}: {exc}")
        return 1
