"""Helpers of the supplier feed tests: sales stored in PostgreSQL and loaded into Redis, feed
configs, deliveries, signed webhook requests."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from flashsale.engine import Engine, ItemConfig, SupplierStockConfig
from flashsale.engine.feeds import (
    Delivery,
    FeedConfig,
    FeedRecord,
    SkuMapping,
    Thresholds,
    iso_of_ms,
    time_ms,
)
from flashsale.engine.sale import SaleRecord
from flashsale.gateway.feeds import signature
from flashsale.store import feeds, sales
from flashsale.store.db import Connection

T0 = "2026-11-21T18:00:00Z"
T0_MS = time_ms(T0, "t")
LOOSE = Thresholds(max_units=1_000_000, max_drop_pct=100, max_spike_pct=0)


def supplier_id(name: str) -> str:
    """Feed levels are per (supplier, sku) across sales: each test gets its own suppliers."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def at(seconds: float) -> str:
    return iso_of_ms(T0_MS + int(seconds * 1000))


async def stored_sale(
    conn: Connection,
    engine: Engine,
    sale_id: str,
    stock: dict[str, list[tuple[str, int]]],
    *,
    limit: int = 0,
) -> None:
    """An open sale in PostgreSQL and Redis; stock maps sku -> [(supplier, units)] by priority."""
    items = tuple(
        ItemConfig(
            sku, 1000, tuple(SupplierStockConfig(s, n, 400, i) for i, (s, n) in enumerate(v))
        )
        for sku, v in stock.items()
    )
    record = SaleRecord(sale_id, sale_id, 0, 0, 600, limit, items)
    version = await sales.save_sale(conn, record)
    assert (await engine.load_sale(record.to_config(version))).code == "OK"
    assert await sales.set_status(conn, sale_id, "open")
    assert (await engine.set_status(sale_id, "open"))[0] == "OK"


async def configure(
    conn: Connection,
    supplier: str,
    sku_map: dict[str, str | tuple[str, int]],
    *,
    thresholds: Thresholds = LOOSE,
    kind: str = "webhook",
) -> None:
    mapping = {
        k: SkuMapping(v) if isinstance(v, str) else SkuMapping(*v) for k, v in sku_map.items()
    }
    await feeds.save_feed(
        conn, supplier, supplier, FeedConfig(kind, "", 0, "json", mapping, thresholds), None
    )


def delivery(
    supplier: str, delivery_id: str, *records: tuple[str, object], as_of: str = T0
) -> Delivery:
    return Delivery(
        supplier,
        delivery_id,
        "webhook",
        as_of,
        [FeedRecord(s, n, None, i) for i, (s, n) in enumerate(records)],
    )


def webhook_body(delivery_id: str, items: list[dict[str, Any]], as_of: str = T0) -> bytes:
    return orjson.dumps({"delivery_id": delivery_id, "as_of": as_of, "items": items})


def signed(secret: str, body: bytes, *, ts: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if ts is None else ts)
    return {
        "content-type": "application/json",
        "x-flashsale-timestamp": stamp,
        "x-flashsale-signature": "v1=" + signature(secret, stamp, body),
    }
