"""Test helpers: sale configs, state snapshots, invariant assertions, deadline polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from flashsale.engine import Engine, ItemConfig, SaleConfig, SupplierStockConfig
from flashsale.engine.connection import RedisClient, hgetall, smembers, zrange_scores
from flashsale.engine.invariants import check_sale
from flashsale.engine.results import SkuStock

T = TypeVar("T")


def sale_config(
    sale_id: str,
    stock: dict[str, list[tuple[str, int]]] | None = None,
    *,
    limit: int = 2,
    hold_ttl_ms: int = 60_000,
    version: int = 1,
) -> SaleConfig:
    """A sale open from the epoch; `stock` maps sku -> [(supplier, units)] in priority order."""
    stock = stock or {"A": [("p", 60), ("q", 40)]}
    items = tuple(
        ItemConfig(
            sku, 1000, tuple(SupplierStockConfig(s, n, 500, i) for i, (s, n) in enumerate(sups))
        )
        for sku, sups in stock.items()
    )
    return SaleConfig(sale_id, version, 0, 0, hold_ttl_ms, limit, items)


async def open_sale(engine: Engine, config: SaleConfig) -> None:
    result = await engine.load_sale(config)
    assert result.code == "OK", result
    code, _ = await engine.set_status(config.sale_id, "open")
    assert code == "OK"


async def assert_sound(engine: Engine, sale_id: str) -> None:
    """Invariants 1, 2 and 4 of docs/design.md hold for the sale."""
    violations = await check_sale(engine, sale_id)
    assert violations == [], violations


async def snapshot(
    client: RedisClient, sale_id: str, prefix: str = "fs", skip: str = ""
) -> dict[str, Any]:
    """Every key `<prefix>:{sale}:*` (but those ending in `skip`) with its full value, for
    'state unchanged' checks."""
    out: dict[str, Any] = {}
    async for key in client.scan_iter(match=f"{prefix}:{{{sale_id}}}:*", count=1000):
        if not (skip and key.endswith(skip)):
            out[key] = await _value(client, key)
    return out


async def _value(client: RedisClient, key: str) -> Any:
    kind = await client.type(key)
    if kind == "hash":
        return await hgetall(client, key)
    if kind == "zset":
        return await zrange_scores(client, key)
    if kind == "set":
        return sorted(await smembers(client, key))
    if kind == "stream":
        return await client.xrange(key)
    return await client.get(key)


async def sku_stock(engine: Engine, sale_id: str, sku: str) -> SkuStock:
    state = await engine.stock(sale_id)
    assert state is not None, f"sale {sale_id} not loaded"
    return state.sku(sku)


async def eventually(
    check: Callable[[], Awaitable[T]], *, timeout_s: float = 10, interval_s: float = 0.05
) -> T:
    """Calls `check` every `interval_s` until it holds, and returns what it returned. An
    AssertionError or a falsy value (False, 0, empty) means "not yet"; None means done, so a
    check may be plain asserts. At the deadline the test fails with the last "not yet". For
    effects another process or task brings about in its own time: a fixed sleep is too short
    on a slow machine and wasted on a fast one."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = await check()
            if value is None or value:
                return value
            last = f"returned {value!r}"
        except AssertionError as exc:
            last = str(exc) or repr(exc)
        if time.monotonic() >= deadline:
            name = getattr(check, "__name__", repr(check))
            raise AssertionError(f"{name} not satisfied after {timeout_s} s: {last}")
        await asyncio.sleep(interval_s)
