"""The load-test side of the `flashsale` command, plugged in through the `flashsale.commands`
entry points: `loadtest`, `demo`, `bench` and `sim`. Only argparse is imported here; each
command imports what it runs when it runs, and the two that drive Locust say how to install it
when it is missing."""

from __future__ import annotations

import argparse
import importlib.util
import sys

from flashsale.cli import Subparsers, run_async
from flashsale.engine.settings import load_settings

INSTALL_HINT = "pip install 'flashsale[load]'"


def _locust_missing(command: str) -> bool:
    try:
        found = importlib.util.find_spec("locust") is not None
    except (ImportError, ValueError):  # a broken install counts as none
        found = False
    if found:
        return False
    print(f"flashsale {command}: Locust is not installed; {INSTALL_HINT}", file=sys.stderr)
    return True


def _loadtest(args: argparse.Namespace) -> int:
    if _locust_missing("loadtest"):
        return 2
    from flashsale.loadtests import loadtest

    return run_async(loadtest.main(load_settings(), args))


def _demo(args: argparse.Namespace) -> int:
    if _locust_missing("demo"):
        return 2
    from flashsale.loadtests import demo

    return run_async(demo.run(load_settings()))


def _bench(args: argparse.Namespace) -> int:
    from flashsale.loadtests.bench import suite

    return run_async(suite.run(load_settings(), args))


def _sim(args: argparse.Namespace) -> int:
    from flashsale.loadtests.simulators import processes

    return processes.main(args.action, load_settings(), args.decline_share)


def add_loadtest(sub: Subparsers) -> None:
    from flashsale.loadtests.options import add_arguments  # argparse only

    loadtest = sub.add_parser("loadtest", help="Locust against a gateway, then audit and report")
    add_arguments(loadtest)
    loadtest.set_defaults(func=_loadtest)


def add_demo(sub: Subparsers) -> None:
    demo = sub.add_parser("demo", help="a 60 s flash sale over HTTP with the saga, then the report")
    demo.set_defaults(func=_demo)


def add_bench(sub: Subparsers) -> None:
    bench = sub.add_parser("bench", help="run one benchmark, or all, and print one table")
    targets = ["engine", "pg", "gateway", "queue", "reconcile", "wait", "feeds", "scale", "all"]
    bench.add_argument("target", nargs="?", default="all", choices=targets)
    bench.add_argument(
        "--requests", type=int, default=100_000, help="reservations per side (pg: 1/10 on postgres)"
    )
    bench.add_argument("--concurrency", type=int, default=50, help="concurrent callers per side")
    bench.add_argument(
        "--seconds", type=int, default=10, help="gateway, queue: wrk s per side; feeds: webhooks"
    )
    bench.add_argument("--connections", type=int, default=64, help="gateway: wrk connections")
    bench.add_argument("--workers", type=int, default=2, help="gateway: uvicorn workers")
    bench.add_argument(
        "--events", type=int, default=10_000, help="reconcile: checkouts (2 stream events each)"
    )
    bench.add_argument(
        "--feed-rows", type=int, default=100_000, help="feeds: stock file rows (10 suppliers)"
    )
    bench.add_argument(
        "--feed-rate", type=int, default=1_000, help="feeds: webhook records per second"
    )
    bench.add_argument(
        "--tickets", type=int, default=1_000_000, help="scale: waiting tickets in one room"
    )
    bench.add_argument(
        "--skus", type=int, default=1_000, help="scale: skus (x 3 suppliers) of the big sale"
    )
    bench.add_argument(
        "--profile",
        action="store_true",
        help="gateway, queue, engine, scale: CPU per request, flame graphs under artifacts/",
    )
    bench.set_defaults(func=_bench)


def add_sim(sub: Subparsers) -> None:
    sim = sub.add_parser(
        "sim", help="start or stop the simulated payment provider, suppliers, webhooks"
    )
    sim.add_argument("action", choices=["up", "down", "status", "env"])
    sim.add_argument("--decline-share", type=float, default=0.05, help="payment: share declined")
    sim.set_defaults(func=_sim)
