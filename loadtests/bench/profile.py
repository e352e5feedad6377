"""`flashsale bench gateway|queue|engine --profile`: CPU per request in the gateway workers and in
Redis over a measured run, and a flame graph of one worker, so the accounting does not rest on
throughput (which moves with whatever else the machine is doing)."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

import psutil
import redis

from flashsale.loadtests.bench.flame import write_flamegraph
from flashsale.loadtests.bench.wrk import Side, wrk

T = TypeVar("T")
ARTIFACTS = Path("artifacts")
SAMPLE_RATE_HZ = 250
# Time in C under a Python frame shows as that frame being the leaf: uvloop's own loop (epoll,
# socket reads, callbacks) under `Runner.run`, the send() of a response or a Redis command under
# the frame that calls transport.write. Those are named by the leaf alone.
LEAF_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("event loop in C (uvloop: epoll, reads, callbacks)", r"^Runner\.run \(|run_until_complete"),
    (
        "socket writes (send of responses, Redis commands)",
        r"writelines? \(|RequestResponseCycle\.send \(",
    ),
)
# Otherwise the leaf-most match wins: a stack is charged to the first of these its frames
# name, walking from the running function towards the root. (name, regex on "function (file:line)")
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("JSON", r"json[/.]|orjson|\bloads \(|\bdumps \("),
    ("token check", r"tokens\.py|identity\.py|hmac|jwt|base64"),
    ("redis-py reply parsing", r"redis/_parsers|hiredis|read_response"),
    (
        "Redis command packing and send (engine/resp.py, redis-py)",
        r"engine/resp\.py|redis/(asyncio/)?connection\.py|redis/(asyncio/)?client\.py",
    ),
    ("asyncpg (PostgreSQL)", r"asyncpg/"),
    ("engine (batcher, scripts)", r"flashsale/engine/|/engine/[a-z_]+\.py"),
    ("HTTP parsing (httptools/h11)", r"httptools|h11"),
    ("uvicorn protocol, ASGI", r"uvicorn/"),
    ("Starlette routing, middleware, responses", r"starlette/|fastapi/"),
    ("gateway code", r"flashsale/gateway/|/gateway/[a-z_/]+\.py"),
    ("asyncio in Python (tasks, futures, streams)", r"asyncio/|uvloop|selectors\.py"),
    ("metrics (prometheus_client)", r"prometheus_client/"),
)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """CPU seconds of the measured processes and Redis' own counters at one moment."""

    process_cpu_s: float
    redis_cpu_s: float  # INFO cpu: used_cpu_user + used_cpu_sys of redis-server
    commands: dict[str, tuple[int, int]]  # INFO commandstats: command -> (calls, usec)


@dataclass(frozen=True, slots=True)
class CpuUse:
    """One measured run's CPU, per request."""

    name: str
    requests: int
    process_us: float  # gateway workers (or the bench process for the engine)
    script_us: float  # inside EVALSHA/EVAL calls, the commands they run included
    redis_process_us: float  # all of redis-server's CPU: commands, network I/O, AOF writes
    scripts: float  # script calls per request
    commands: str  # the most called other commands, per request (those scripts run included)

    def row(self) -> str:
        return (
            f"| {self.name} | {self.requests} | {self.process_us:.0f} | {self.script_us:.1f} "
            f"| {self.redis_process_us:.1f} | {self.scripts:.2f} | {self.commands} |"
        )


CPU_HEADER = [
    "| CPU per request | requests | workers µs (engine: caller) | Redis scripts µs "
    "| Redis process µs | scripts | commands (per request, those in scripts included) |",
    "|---|---|---|---|---|---|---|",
]


@dataclass(slots=True)
class Profile:
    """What `--profile` collected over one bench: the CPU table and the flame graphs' summaries,
    printed after the benchmark table."""

    folder: Path = ARTIFACTS
    uses: list[CpuUse] = field(default_factory=list)
    flames: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        if not self.uses and not self.flames:
            return []
        cpu = [*CPU_HEADER, *(u.row() for u in self.uses)] if self.uses else []
        return ["CPU per request (measured beside other work on this machine):", *cpu, *self.flames]


def worker_pids(parent_pid: int) -> list[int]:
    """The uvicorn workers (every descendant of the `flashsale serve` process) and the parent."""
    parent = psutil.Process(parent_pid)
    return [parent_pid, *(child.pid for child in parent.children(recursive=True))]


def serving_worker(parent_pid: int) -> int:
    """The descendant that used the most CPU so far: a worker that serves requests."""
    children = psutil.Process(parent_pid).children(recursive=True)
    if not children:
        return parent_pid
    return max(children, key=lambda c: sum(c.cpu_times()[:2])).pid


def process_cpu_s(pids: Iterable[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def children_cpu_s() -> float:
    """CPU of this process's finished children (redis-benchmark's, once it has exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def snapshot(client: redis.Redis, process_cpu: float) -> Snapshot:
    stats = client.info("commandstats")
    commands = {
        name.removeprefix("cmdstat_"): (int(s["calls"]), int(s["usec"]))
        for name, s in stats.items()
    }
    cpu = client.info("cpu")
    redis_cpu = float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
    return Snapshot(process_cpu, redis_cpu, commands)


def cpu_use(name: str, before: Snapshot, after: Snapshot, requests: int) -> CpuUse:
    """Per-request figures between two snapshots. Redis counts the commands a script runs
    beside the script itself (its time included in the script's), so only the scripts' time is
    summed; INFO, the snapshots' own command, is left out."""
    n = max(requests, 1)
    calls: Counter[str] = Counter()
    script_calls = script_usec = 0
    for cmd, (c, us) in after.commands.items():
        c0, us0 = before.commands.get(cmd, (0, 0))
        if cmd.startswith(("eval", "fcall")):
            script_calls += c - c0
            script_usec += us - us0
        elif cmd != "info" and c > c0:
            calls[cmd] = c - c0
    top = ", ".join(f"{cmd} {c / n:.2f}" for cmd, c in calls.most_common(4))
    return CpuUse(
        name,
        requests,
        (after.process_cpu_s - before.process_cpu_s) * 1e6 / n,
        script_usec / n,
        (after.redis_cpu_s - before.redis_cpu_s) * 1e6 / n,
        script_calls / n,
        top or "-",
    )


class Spy:
    """py-spy sampling one process from now until `stop`, into a flame graph at `svg`."""

    def __init__(self, pid: int, svg: Path) -> None:
        svg.parent.mkdir(parents=True, exist_ok=True)
        self.svg, self.raw = svg, svg.with_suffix(".collapsed.txt")
        cmd = [_py_spy(), "record", "--pid", str(pid), "--rate", str(SAMPLE_RATE_HZ)]
        cmd += ["--format", "raw", "--nonblocking", "--output", str(self.raw)]
        self.process = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        time.sleep(0.3)  # attached before the load starts

    def stop(self) -> str:
        """Writes the SVG; returns where the samples fell (see CATEGORIES). py-spy writes its
        output when interrupted, as after Ctrl-C."""
        self.process.send_signal(signal.SIGINT)
        _, err = self.process.communicate(timeout=60)
        if not self.raw.exists():
            raise RuntimeError(f"py-spy failed ({self.process.returncode}): {err.strip()[-300:]}")
        stacks = read_collapsed(self.raw.read_text())
        write_flamegraph(stacks, self.svg, title=self.svg.stem)
        return summary(stacks)


def record_flame(pid: int, svg: Path, run: Callable[[], T]) -> tuple[T, str]:
    """py-spy samples `pid` while `run` runs: the result and the samples' summary."""
    spy = Spy(pid, svg)
    try:
        result = run()
    finally:
        shares = spy.stop()
    return result, shares


def _py_spy() -> str:
    """The venv's py-spy (the dev extras install it), else one on PATH."""
    import sys

    here = Path(sys.executable).with_name("py-spy")
    if here.exists():
        return str(here)
    found = subprocess.run(["which", "py-spy"], capture_output=True, text=True).stdout.strip()
    if not found:
        raise RuntimeError("py-spy is not installed: pip install 'flashsale[dev]'")
    return found


def read_collapsed(text: str) -> dict[tuple[str, ...], int]:
    """py-spy's raw format: `root;...;leaf count` per line."""
    stacks: dict[tuple[str, ...], int] = {}
    for line in text.splitlines():
        path, _, count = line.rpartition(" ")
        if path and count.isdigit():
            frames = tuple(path.split(";"))
            stacks[frames] = stacks.get(frames, 0) + int(count)
    return stacks


def categorize(frames: tuple[str, ...]) -> str:
    for name, pattern in LEAF_CATEGORIES:
        if frames and re.search(pattern, frames[-1]):
            return name
    for frame in reversed(frames):
        for name, pattern in CATEGORIES:
            if re.search(pattern, frame):
                return name
    return "other"


def summary(stacks: dict[tuple[str, ...], int]) -> str:
    """How many samples, then `category share%` of them, largest first (a thin profile shows)."""
    shares: Counter[str] = Counter()
    for frames, count in stacks.items():
        shares[categorize(frames)] += count
    total = sum(shares.values())
    parts = ", ".join(f"{name} {100 * c / total:.0f}%" for name, c in shares.most_common())
    return f"{total} samples: {parts}" if total else "no samples"


def artifact(profile: Profile, name: str) -> Path:
    """artifacts/profile-<name>-<pid>.svg: one file per bench process, never mixed runs."""
    return profile.folder / f"profile-{name}-{os.getpid()}.svg"


def profile_sides(
    profile: Profile,
    server_pid: int,
    redis_url: str,
    sides: Sequence[Side],
    seconds: int,
    connections: int,
) -> None:
    """One more wrk run per side: the CPU counters around it and py-spy on one worker during it
    (py-spy reads the worker's memory from its own process, so the worker's counters stay
    its own)."""
    client = redis.Redis.from_url(redis_url)
    pids = worker_pids(server_pid)
    worker = serving_worker(server_pid)
    try:
        for url, script, name in sides:
            svg = artifact(profile, _slug(name))
            before = snapshot(client, process_cpu_s(pids))
            run = partial(wrk, url, seconds, connections, script, name)
            row, shares = record_flame(worker, svg, run)
            after = snapshot(client, process_cpu_s(pids))
            profile.uses.append(cpu_use(name, before, after, row.requests))
            profile.flames.append(f"flame graph, one worker, {name}: {svg}: {shares}")
    finally:
        client.close()


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40]


EngineSide = tuple[str, int, Callable[[], Awaitable[object]]]  # (row name, requests, the run)


async def profile_in_process(profile: Profile, redis_url: str, sides: Sequence[EngineSide]) -> None:
    """The engine bench's sides, in this process: its own CPU (the client's) and Redis' per
    request, and a flame graph of this process. A side named `redis-benchmark...` is a child
    process: its CPU is read once it has exited, and py-spy stays out (it is C, and py-spy's own
    CPU would count as a child's)."""
    client = redis.Redis.from_url(redis_url)
    me = [os.getpid()]
    try:
        for name, requests, run in sides:
            child = name.startswith("redis-benchmark")
            cpu = children_cpu_s if child else partial(process_cpu_s, me)
            before = snapshot(client, cpu())
            spy = None if child else Spy(os.getpid(), artifact(profile, _slug(name)))
            await run()
            shares = spy.stop() if spy else ""
            after = snapshot(client, cpu())
            profile.uses.append(cpu_use(name, before, after, requests))
            if spy:
                profile.flames.append(f"flame graph, this process, {name}: {spy.svg}: {shares}")
    finally:
        client.close()
