"""`flashsale loadtest`: Locust headless against a running gateway, a progress line while it
runs, then the reconciler drained, the audit, and the report (loadtests/report.py)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
from redis.exceptions import RedisError

from flashsale.engine import Settings
from flashsale.engine.errors import FlashsaleError
from flashsale.loadtests.options import LoadOptions, from_args
from flashsale.loadtests.outcomes import Outcomes
from flashsale.loadtests.report import Lag, Report, last_history_row, read_server_side, read_stats
from flashsale.loadtests.sale_api import Doc, GatewayError, SaleApi
from flashsale.loadtests.waits import read_waits
from flashsale.reconciler.cli import engine_for

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
STOP_TIMEOUT_S = 15  # Locust lets users finish the journey step they are in when time is up
Log = Callable[[str], None]


def _print(line: str) -> None:
    print(line, flush=True)


async def main(settings: Settings, args: argparse.Namespace) -> int:
    try:
        options = from_args(args)
    except ValueError as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 2
    return await run(settings, options)


async def run(settings: Settings, options: LoadOptions, log: Log = _print) -> int:
    """0 when the report finds nothing wrong, 1 when it does, 2 when the run could not happen."""
    api = SaleApi(options.url, options.sale, settings.admin_key)
    try:
        sale = await asyncio.to_thread(api.public_view)
        view = await asyncio.to_thread(api.admin_view)
    except GatewayError as exc:
        log(f"loadtest: {exc}")
        return 2
    options.out.mkdir(parents=True, exist_ok=True)
    log(_plan_line(options, sale, view))
    lag = Lag()
    code = await _run_locust(options, settings, api, lag, log)
    outcomes_path = options.out / "outcomes.json"
    stats_path = options.out / "locust_stats.csv"
    if not outcomes_path.exists() or not stats_path.exists():
        log(f"loadtest: Locust failed (exit {code}); its log:\n{_tail(options.out / 'locust.log')}")
        return 2
    try:
        report = await _report(settings, options, api, sale, lag)
    except (GatewayError, FlashsaleError, RedisError, OSError, asyncpg.PostgresError) as exc:
        log(f"loadtest: the figures after the run could not be read: {exc}")
        return 2
    text = report.render()
    (options.out / "report.txt").write_text(text + "\n")
    log("\n" + text)
    return 1 if report.problems() else 0


def _plan_line(options: LoadOptions, sale: Doc, view: Doc) -> str:
    stock = sum(s["loaded"] + s["adjusted"] - s["sold"] - s["reserved"] for s in view["skus"])
    return (
        f"load test: {options.users} users against sale {options.sale} ({sale['status']}, "
        f"{stock} units available, hold TTL {sale['hold_ttl_s']} s) at {options.url} for "
        f"{options.duration_s} s; output in {options.out}/"
    )


def locust_command(options: LoadOptions) -> list[str]:
    out = options.out
    cmd = [
        sys.executable, "-m", "locust",
        "-f", str(LOCUSTFILE),
        "--headless", "--only-summary",
        "--host", options.url,
        "--users", str(options.users),
        "--spawn-rate", str(options.spawn_rate),
        "--run-time", f"{options.duration_s}s",
        "--stop-timeout", str(STOP_TIMEOUT_S),
        "--csv", str(out / "locust"),
        "--html", str(out / "report.html"),
        "--outcomes-file", str(out / "outcomes.json"),
        "--loglevel", "WARNING",
        *options.locust_args,
    ]  # fmt: skip
    if options.processes > 1:
        cmd += ["--processes", str(options.processes)]
    return cmd


async def _run_locust(
    options: LoadOptions, settings: Settings, api: SaleApi, lag: Lag, log: Log
) -> int:
    """Locust's exit code. Its own output goes to locust.log; a progress line every
    progress_s. Stopped (SIGTERM: it still writes its reports) if this task is cancelled."""
    # Secrets go in the environment, never on a command line.
    env = {
        **os.environ,
        "LOCUST_ADMIN_KEY": settings.admin_key,
        "LOCUST_CUSTOMER_SECRET": settings.customer_secret,
    }
    with (options.out / "locust.log").open("wb") as locust_log:
        process = await asyncio.create_subprocess_exec(
            *locust_command(options),
            env=env,
            stdout=locust_log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C reaches us; we stop it
        )
    started = time.monotonic()
    try:
        next_line = started + options.progress_s
        while True:
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(process.wait(), timeout=1.0)
            line = await _sample(options, api, lag, started)
            if time.monotonic() >= next_line:
                next_line += options.progress_s
                log(line)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=STOP_TIMEOUT_S + 10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _sample(options: LoadOptions, api: SaleApi, lag: Lag, started: float) -> str:
    """One progress line: Locust's last second, the stock, the queue and the reconciler's lag."""
    elapsed = time.monotonic() - started
    parts = [f"[{elapsed:4.0f} s / {options.duration_s} s]"]
    row = last_history_row(options.out / "locust_stats_history.csv")
    if row:
        parts.append(
            f"users {row['User Count']}, {float(row['Requests/s']):.0f} req/s, "
            f"{float(row['Failures/s']):.1f} fail/s ({row['Total Failure Count']} failed)"
        )
    try:
        view = await asyncio.to_thread(api.admin_view)
        room = await asyncio.to_thread(api.room)
    except GatewayError as exc:
        return " | ".join([*parts, f"gateway: {exc}"])
    sold = sum(s["sold"] for s in view["skus"])
    stock = sum(s["loaded"] + s["adjusted"] for s in view["skus"])
    held = sum(s["reserved"] for s in view["skus"])
    parts.append(f"sold {sold}/{stock}, held {held}")
    if room:
        parts.append(
            f"queue {room['tickets']} joined, {room['admitted']} admitted, "
            f"{room['waiting']} waiting"
        )
    entries = int(view["reconciler"]["stream_length"])
    lag.max_entries = max(lag.max_entries, entries)
    lag.at_end = entries
    parts.append(f"reconciler lag {entries} events")
    return " | ".join(parts)


async def _settle(options: LoadOptions, api: SaleApi, hold_ttl_s: int, lag: Lag) -> Doc:
    """Waits for the holds left open to expire (the reconciler's sweeper), then for the stream
    to empty; the admin view at the end."""
    view = await asyncio.to_thread(api.admin_view)
    lag.at_end = int(view["reconciler"]["stream_length"])
    lag.max_entries = max(lag.max_entries, lag.at_end)
    settle_s = options.settle_s if options.settle_s is not None else hold_ttl_s + 5.0
    start = time.monotonic()
    while view["open_holds"] and time.monotonic() - start < settle_s:
        await asyncio.sleep(0.25)
        view = await asyncio.to_thread(api.admin_view)
    lag.settle_s = time.monotonic() - start
    start = time.monotonic()
    while view["reconciler"]["stream_length"]:
        if time.monotonic() - start >= options.drain_timeout_s:
            break
        await asyncio.sleep(0.1)
        view = await asyncio.to_thread(api.admin_view)
    lag.drain_s = time.monotonic() - start
    lag.drained = not view["reconciler"]["stream_length"]
    lag.open_holds = int(view["open_holds"])
    return view


async def _report(
    settings: Settings, options: LoadOptions, api: SaleApi, sale: Doc, lag: Lag
) -> Report:
    view = await _settle(options, api, int(sale["hold_ttl_s"]), lag)
    room = await asyncio.to_thread(api.room)
    server = await read_server_side(settings, options.sale)
    outcomes = Outcomes.read(options.out / "outcomes.json")
    async with engine_for(settings) as engine:
        waits = await read_waits(engine, options.sale, outcomes)
    stats = read_stats(options.out / "locust_stats.csv")
    report = Report(options, stats, outcomes, view, room, server, lag, waits)
    if outcomes.counts["cut"]:
        report.notes.append(
            f"{outcomes.counts['cut']} shopper journeys were cut off mid-request "
            f"(past --stop-timeout {STOP_TIMEOUT_S} s): what they were told is unknown"
        )
    return report


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
