"""`flashsale bench gateway`: POST holds vs GET /healthz of the same server, driven by wrk."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from flashsale import services
from flashsale.engine import Engine, Settings
from flashsale.engine.connection import connect
from flashsale.loadtests.bench.engine import Row
from flashsale.loadtests.bench.profile import Profile, profile_sides
from flashsale.loadtests.bench.wrk import alternate, wrk
from flashsale.loadtests.crowd.passes import customer_token
from flashsale.loadtests.gateway_process import Gateway, gateway
from flashsale.loadtests.run_secrets import production_secrets
from flashsale.loadtests.sale_api import SaleApi

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
    SaleApi(gw.url, SALE, settings.admin_key).create(sale)


def forget_bench_sale(settings: Settings, redis_url: str) -> None:
    """The run's holds would otherwise stay in Redis for their hour-long TTL."""

    async def forget() -> None:
        client = connect(redis_url)
        await Engine(client, settings).forget_sale(SALE)
        await client.aclose()

    asyncio.run(forget())


def bench_gateway(
    settings: Settings,
    seconds: int,
    connections: int,
    workers: int,
    profile: Profile | None = None,
) -> list[Row]:
    """In production mode (this run's own secrets): checkouts pay for customer-token checks.
    With `profile`, one more run per side collects CPU per request and flame graphs into it."""
    env = services.up(settings, log=lambda _line: None)
    settings, secret_env = production_secrets(settings)
    env = {**env, **secret_env}
    try:
        return _measure(settings, env, seconds, connections, workers, profile)
    finally:
        forget_bench_sale(settings, env["FLASHSALE_REDIS_URL"])


def _measure(
    settings: Settings,
    env: dict[str, str],
    seconds: int,
    connections: int,
    workers: int,
    profile: Profile | None,
) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp, gateway(env, workers=workers) as gw:
        script, baseline = token_scripts(settings, Path(tmp))
        create_bench_sale(gw, settings)
        holds = f"{gw.url}/v1/sales/{SALE}/holds"
        wrk(holds, 2, connections, script, "warm-up")
        sides = [
            (gw.url + "/healthz", baseline, "GET /healthz"),
            (holds, script, "POST /v1/sales/{sale}/holds"),
        ]
        rows = alternate(sides, seconds, connections)
        if profile is not None:
            redis_url = env["FLASHSALE_REDIS_URL"]
            profile_sides(profile, gw.process.pid, redis_url, sides, seconds, connections)
        return rows
