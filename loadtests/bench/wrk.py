"""wrk, the HTTP load generator of the gateway benches: one run as a Row, or a route against its
baseline in alternating runs."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from flashsale.loadtests.bench.engine import Row
from flashsale.services import require_binary

Side = tuple[str, Path | None, str]  # (url, wrk Lua script or None, row name)


def wrk(url: str, seconds: int, connections: int, script: Path | None, name: str) -> Row:
    """One wrk run; RuntimeError when any request answered with an error status."""
    exe = require_binary("wrk", "wrk")
    cmd = [exe, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if script is not None:
        cmd[1:1] = ["-s", str(script)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:  # an error answer is cheaper than a success: counting it would flatter the route
        raise RuntimeError(f"{name}: {bad[1]} requests failed\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    served = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    return Row(name, rps, _latency_ms(out, "50%"), _latency_ms(out, "99%"), requests=served)


def alternate(sides: Sequence[Side], seconds: int, connections: int) -> list[Row]:
    """Each side twice, in turn, so neither always gets the warmer machine; the better run of each
    side, in the order given."""
    runs: dict[str, list[Row]] = {}
    for _ in range(2):
        for url, script, name in sides:
            row = wrk(url, seconds, connections, script, name)
            runs.setdefault(name, []).append(row)
            print(f"  {row.name}: {row.requests_per_s:.0f} req/s, p99 {row.p99_ms:.1f} ms")
    return [max(rows, key=lambda r: r.requests_per_s) for rows in runs.values()]


def _latency_ms(out: str, quantile: str) -> float:
    match = re.search(rf"{quantile}\s+([\d.]+)(us|ms|s)\b", out)
    if match is None:
        raise RuntimeError(f"no {quantile} latency in wrk output:\n{out}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[match[2]]
    return float(match[1]) * scale
