"""`flashsale bench [target|all]`: runs the benchmarks and prints one table, every row with its
ratio against the baseline of its own benchmark, measured in the same run on the same machine."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import sys
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints

from flashsale import services
from flashsale.engine import Settings
from flashsale.engine.connection import connect
from flashsale.loadtests.bench.engine import Row

if TYPE_CHECKING:
    from flashsale.loadtests.bench.profile import Profile

PG_SHARE = 10  # the row-lock sides run requests / PG_SHARE calls: ~10x slower, similar duration


@dataclass(frozen=True, slots=True)
class Section:
    """One benchmark's rows; `rows[0]` is its baseline. No rows and an `error`: it failed."""

    benchmark: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str = ""


Measured = tuple[list[Row], list[str]]  # rows (the baseline first), notes on how they were run


async def _engine(settings: Settings, args: argparse.Namespace) -> Measured:
    from flashsale.loadtests.bench.engine import bench_engine

    profile = _profile(args)
    rows = await bench_engine(settings, args.requests, args.concurrency, profile)
    note = f"{args.requests} reservations per side (one EVALSHA per call: {args.requests // 4})"
    return rows, _profiled([f"engine: {note}, {args.concurrency} callers"], profile)


async def _wait(settings: Settings, args: argparse.Namespace) -> Measured:
    from flashsale.loadtests.bench.wait import bench_wait

    rows = await bench_wait(settings, args.requests, args.concurrency)
    note = f"{args.requests} reservations per side on one cluster shard, {args.concurrency} callers"
    return rows, [f"wait: {note}, WAIT timeout {settings.redis_wait_timeout_ms} ms"]


async def _pg(settings: Settings, args: argparse.Namespace) -> Measured:
    from flashsale.loadtests.bench.pg import bench_pg

    pg_requests = max(args.requests // PG_SHARE, 1)
    rows = await bench_pg(settings, args.requests, pg_requests, args.concurrency)
    note = (
        f"pg: {args.concurrency} callers; engine {args.requests} reservations, each postgres "
        f"side {pg_requests}, pool of {min(args.concurrency, settings.pg_pool_size)} connections"
    )
    return rows, [note]


def _wrk_note(name: str, args: argparse.Namespace) -> str:
    return (
        f"{name}: wrk, {args.seconds} s per side, {args.connections} connections, "
        f"{args.workers} uvicorn workers"
    )


def _profile(args: argparse.Namespace) -> Profile | None:
    """`--profile`: CPU per request and flame graphs, collected by the bench that runs."""
    from flashsale.loadtests.bench.profile import Profile

    return Profile() if getattr(args, "profile", False) else None


def _profiled(notes: list[str], profile: Profile | None) -> list[str]:
    return [*notes, *profile.lines()] if profile is not None else notes


async def _gateway(settings: Settings, args: argparse.Namespace) -> Measured:
    from flashsale.loadtests.bench.gateway import bench_gateway

    profile = _profile(args)
    rows = await asyncio.to_thread(
        bench_gateway, settings, args.seconds, args.connections, args.workers, profile
    )
    return rows, _profiled([_wrk_note("gateway", args)], profile)


async def _queue(settings: Settings, args: argparse.Namespace) -> Measured:
    from flashsale.loadtests.bench.queue import bench_queue

    profile = _profile(args)
    rows = await asyncio.to_thread(
        bench_queue, settings, args.seconds, args.connections, args.workers, profile
    )
    return rows, _profiled([_wrk_note("queue", args)], profile)


async def _reconcile(settings: Settings, args: argparse.Namespace) -> Measured:
    from flashsale.loadtests.bench.reconcile import bench_reconcile

    flushed = await bench_reconcile(settings, args.events)
    rows = [Row(f"{path} [events/s]", rate) for path, rate in flushed.rates()]
    return rows, [f"reconcile: {flushed.note()}"]


async def _feeds(settings: Settings, args: argparse.Namespace) -> Measured:
    from flashsale.loadtests.bench.feed_latency import LatencyBench, bench_feed_latency
    from flashsale.loadtests.bench.feeds import bench_feed_apply

    applied = await bench_feed_apply(settings, args.feed_rows)
    rows = [Row(f"{path} [rows/s]", rate) for path, rate in applied.rates()]
    lat = await bench_feed_latency(settings, args.feed_rate, args.seconds)
    rows.append(Row(LatencyBench.NAME, lat.rate_per_s, lat.p50_ms, lat.p99_ms, compared=False))
    return rows, [f"feeds: {applied.note()}", lat.note()]


async def _scale(settings: Settings, args: argparse.Namespace) -> Measured:
    from flashsale.loadtests.bench.scale import bench_scale

    profile = _profile(args)
    run = await asyncio.to_thread(
        bench_scale,
        settings,
        args.tickets,
        args.skus,
        args.seconds,
        args.connections,
        args.workers,
        profile,
    )
    return run.rows, _profiled([*run.notes, _wrk_note("scale", args)], profile)


# target -> (benchmark name in the table, what measures it)
_BENCHES: dict[str, tuple[str, Callable[[Settings, argparse.Namespace], Awaitable[Measured]]]] = {
    "engine": ("engine vs redis-benchmark", _engine),
    "pg": ("Redis path vs postgres row lock", _pg),
    "gateway": ("checkout vs /healthz", _gateway),
    "queue": ("queue status vs /healthz", _queue),
    "reconcile": ("reconcile batch vs per-row", _reconcile),
    "wait": ("cluster reserve: WAIT 1 vs none", _wait),
    "feeds": ("supplier feed: batches vs per row", _feeds),
    "scale": ("scale: a big waiting room, a many-sku sale", _scale),
}
TARGETS = tuple(_BENCHES)
# `all` leaves out `wait`: ~4 x 100k reservations on the cluster take over 30 s on their own.
# Nor `scale`: a million joins alone take minutes.
ALL = tuple(t for t in TARGETS if t not in ("wait", "scale"))


async def measure(settings: Settings, target: str, args: argparse.Namespace) -> Section:
    """A failed benchmark gives a Section with its error and no figures, never a partial row."""
    name, bench = _BENCHES[target]
    print(f"bench {target}: {name}", flush=True)
    try:
        rows, notes = await bench(settings, args)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        first = (str(exc).strip().splitlines() or [""])[0]
        return Section(name, error=f"{type(exc).__name__}: {first}"[:120])
    return Section(name, rows, notes)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(sections: list[Section]) -> list[str]:
    """Markdown, so it can go into the README as it is."""
    lines = ["| benchmark | path | req/s | p50 ms | p99 ms | ratio |", "|---|---|---|---|---|---|"]
    for s in sections:
        if s.error:
            lines.append(f"| {s.benchmark} | FAILED, no figures: {s.error} | - | - | - | - |")
            continue
        base = s.rows[0].requests_per_s
        for i, r in enumerate(s.rows):
            ratio = f"{r.requests_per_s / base:.2f}" + (" (baseline)" if i == 0 else "")
            ratio = ratio if r.compared else "-"
            lines.append(
                f"| {s.benchmark} | {r.name} | {r.requests_per_s:.0f} | {_cell(r.p50_ms)} "
                f"| {_cell(r.p99_ms)} | {ratio} |"
            )
    return lines


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


async def _versions(settings: Settings) -> str:
    urls = services.up(settings, log=lambda _line: None)
    client = connect(urls["FLASHSALE_REDIS_URL"])
    try:
        redis_version = (await client.info("server"))["redis_version"]
        fsync = (await client.config_get("appendfsync")).get("appendfsync", "?")
    finally:
        await client.aclose()
    conn = await asyncpg.connect(urls["FLASHSALE_DATABASE_URL"])
    try:
        pg_version = await conn.fetchval("SHOW server_version")
        sync = await conn.fetchval("SHOW synchronous_commit")
    finally:
        await conn.close()
    return (
        f"Redis {redis_version} (appendfsync {fsync}), "
        f"PostgreSQL {pg_version.split()[0]} (synchronous_commit {sync})"
    )


def machine_line(versions: str, load_start: float) -> str:
    cores = len(os.sched_getaffinity(0))
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"machine: {_cpu_model()}, {cores} cores, Python {platform.python_version()}, "
        f"{versions}, {date}, load average (1 min) {load_start:.2f} at start, "
        f"{os.getloadavg()[0]:.2f} at end"
    )


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """0 when every benchmark reported figures, 1 when one refused (its row says why)."""
    targets = ALL if args.target == "all" else (args.target,)
    load_start = os.getloadavg()[0]
    versions = await _versions(settings)
    sections = [await measure(settings, target, args) for target in targets]
    print()
    print(machine_line(versions, load_start))
    print("\n".join(table(sections)))
    for s in sections:
        for note in s.notes:
            print(f"  {note}")
    return 1 if any(s.error for s in sections) else 0
