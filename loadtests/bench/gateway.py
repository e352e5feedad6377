"""`flashsale bench gateway`: POST holds vs GET /healthz of the same server, driven by wrk."""

from __future__ import annotations

import asyncio
import re
import subprocess
import tempfile
from pathlib import Path

import orjson

from flashsale import services
from flashsale.engine import Engine, Settings
from flashsale.engine.connection import connect
from flashsale.loadtests.bench.engine import Row
from flashsale.loadtests.crowd.passes import customer_token
from flashsale.loadtests.gateway_process import Gateway, gateway
from flashsale.loadtests.run_secrets import production_secrets
from flashsale.services import require_binary

SALE = "bench-gateway"
CUSTOMERS = 20_000  # distinct customer tokens, taken in turn: each is verified once, then cached
# Each checkout as a customer of the shop would send it: its own signed customer token. The
# /healthz side builds the same requests in wrk's Lua (and /healthz ignores them), so wrk, on
# the same two cores, does the same work for the baseline as for the route.
REQUESTS_LUA = """
local tokens = { %s }
local n, i = #tokens, 0
request = function()
  i = i %% n + 1
  return wrk.format("%s", nil, {
    ["Content-Type"] = "application/json", ["X-Customer-Token"] = tokens[i]
  }, '{"items":[{"sku":"hot","qty":1}]}')
end
"""


def token_scripts(settings: Settings, folder: Path) -> tuple[Path, Path]:
    """(the checkout script, the /healthz script), over the same CUSTOMERS tokens."""
    passes = ", ".join(
        '"' + customer_token(settings.customer_secret, settings.customer_audience, f"b{n}") + '"'
        for n in range(CUSTOMERS)
    )
    checkout, healthz = folder / "checkout.lua", folder / "healthz.lua"
    checkout.write_text(REQUESTS_LUA % (passes, "POST"))
    healthz.write_text(REQUESTS_LUA % (passes, "GET"))
    return checkout, healthz


def _admin(gw: Gateway, settings: Settings, method: str, path: str, body: object = None) -> None:
    import urllib.request

    data = orjson.dumps(body) if body is not None else b""
    request = urllib.request.Request(
        gw.url + path,
        data=data,
        method=method,
        headers={
            "Authorization": f"Bearer {settings.admin_key}",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        reply.read()


def create_bench_sale(gw: Gateway, settings: Settings) -> None:
    """A fresh name per run keeps an old run's holds out of this one."""
    sale = {
        "name": "gateway benchmark",
        "starts_at": "2020-01-01T00:00:00Z",
        "ends_at": None,
        "hold_ttl_s": 3600,
        "per_user_limit": 0,
        "items": [
            {
                "sku": "hot",
                "price_minor": 100,
                "suppliers": [{"id": "p", "stock": 10**11}, {"id": "q", "stock": 10**11}],
            }
        ],
    }
    _admin(gw, settings, "PUT", f"/v1/admin/sales/{SALE}", sale)
    _admin(gw, settings, "POST", f"/v1/admin/sales/{SALE}/open")


def _wrk(url: str, seconds: int, connections: int, script: Path | None, name: str) -> Row:
    exe = require_binary("wrk", "wrk")
    cmd = [exe, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if script is not None:
        cmd[1:1] = ["-s", str(script)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:  # an error answer is cheaper than a hold: counting it would flatter the route
        raise RuntimeError(f"{name}: {bad[1]} requests failed\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    return Row(name, rps, _latency_ms(out, "50%"), _latency_ms(out, "99%"))


def _latency_ms(out: str, quantile: str) -> float:
    match = re.search(rf"{quantile}\s+([\d.]+)(us|ms|s)\b", out)
    if match is None:
        raise RuntimeError(f"no {quantile} latency in wrk output:\n{out}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[match[2]]
    return float(match[1]) * scale


def forget_bench_sale(settings: Settings, redis_url: str) -> None:
    """The run's holds would otherwise stay in Redis for their hour-long TTL."""

    async def forget() -> None:
        client = connect(redis_url)
        await Engine(client, settings).forget_sale(SALE)
        await client.aclose()

    asyncio.run(forget())


def bench_gateway(settings: Settings, seconds: int, connections: int, workers: int) -> list[Row]:
    """In production mode (this run's own secrets): checkouts pay for customer-token checks."""
    env = services.up(settings, log=lambda _line: None)
    settings, secret_env = production_secrets(settings)
    env = {**env, **secret_env}
    try:
        return _measure(settings, env, seconds, connections, workers)
    finally:
        forget_bench_sale(settings, env["FLASHSALE_REDIS_URL"])


def _measure(
    settings: Settings, env: dict[str, str], seconds: int, connections: int, workers: int
) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp, gateway(env, workers=workers) as gw:
        script, baseline = token_scripts(settings, Path(tmp))
        create_bench_sale(gw, settings)
        holds = f"{gw.url}/v1/sales/{SALE}/holds"
        _wrk(holds, 2, connections, script, "warm-up")
        rows: dict[str, list[Row]] = {}
        for _ in range(2):  # alternate so neither side always gets the warmer machine
            for row in (
                _wrk(gw.url + "/healthz", seconds, connections, baseline, "GET /healthz"),
                _wrk(holds, seconds, connections, script, "POST /v1/sales/{sale}/holds"),
            ):
                rows.setdefault(row.name, []).append(row)
                print(f"  {row.name}: {row.requests_per_s:.0f} req/s, p99 {row.p99_ms:.1f} ms")
    return [max(r, key=lambda x: x.requests_per_s) for r in rows.values()]
