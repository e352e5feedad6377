"""`flashsale bench pg`: Engine.reserve on Redis vs the same reservation as a PostgreSQL row lock,
the way many shops take stock today, on the project's own PostgreSQL in the same run."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints

from flashsale import services
from flashsale.engine import Engine, Settings
from flashsale.engine.connection import connect
from flashsale.loadtests.bench.engine import Row, drive, engine_side, load_bench_sale

# asyncpg has no stubs; the alias at least names what a parameter is.
Pool: TypeAlias = Any
# (sale, sku, qty, customer_id) -> hold id, or None when sold out
Reserve: TypeAlias = Callable[[str, str, int, str], Awaitable[str | None]]

SCHEMA = "bench_pg"
SALE, SKU = "bench-pg", "hot"
HOLD_TTL_MS = 3_600_000  # the engine bench sale's hold TTL
PG_ROW = "postgres row lock (BEGIN; UPDATE; INSERT; COMMIT)"
PG_CTE_ROW = "postgres row lock, one statement (CTE)"
ENGINE_ROW = "engine.reserve on Redis (per-tick pipelines)"

_SCHEMA_SQL = """
CREATE SCHEMA {s};
CREATE TABLE {s}.stock (
    sale      text   NOT NULL,
    sku       text   NOT NULL,
    available bigint NOT NULL CHECK (available >= 0),
    reserved  bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    PRIMARY KEY (sale, sku)
);
CREATE TABLE {s}.holds (
    hold_id     uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    sale        text        NOT NULL,
    sku         text        NOT NULL,
    customer_id text        NOT NULL,
    qty         bigint      NOT NULL CHECK (qty > 0),
    status      text        NOT NULL DEFAULT 'held',
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    FOREIGN KEY (sale, sku) REFERENCES {s}.stock
);
-- The sweeper's index, as fs:{{S}}:holds is the engine's.
CREATE INDEX ON {s}.holds (expires_at);
"""
# The row lock: a concurrent UPDATE of the row waits here until this transaction ends, then
# re-checks `available >= $3` against the committed row, so stock never goes below zero.
_TAKE = """
UPDATE {s}.stock SET available = available - $3, reserved = reserved + $3
WHERE sale = $1 AND sku = $2 AND available >= $3
RETURNING available
"""
_HOLD = """
INSERT INTO {s}.holds (sale, sku, customer_id, qty, expires_at)
VALUES ($1, $2, $4, $3, now() + $5 * interval '1 millisecond')
RETURNING hold_id
"""
# The same two statements in one round trip and an implicit transaction: the best case.
_TAKE_AND_HOLD = """
WITH taken AS ({take})
INSERT INTO {s}.holds (sale, sku, customer_id, qty, expires_at)
SELECT $1, $2, $4, $3, now() + $5 * interval '1 millisecond' FROM taken
RETURNING hold_id
"""


@dataclass(frozen=True, slots=True)
class PgStock:
    """Where a sale of the scratch schema stands: the stock row and the holds written."""

    available: int
    reserved: int
    holds: int
    held_units: int


class RowLockShop:
    """Reservations taken the way a shop without Redis takes them, in a scratch schema."""

    def __init__(self, pool: Pool, schema: str = SCHEMA) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
            raise ValueError(f"not a plain schema name: {schema!r}")
        self.pool, self.schema = pool, schema
        self._take = _TAKE.format(s=schema)
        self._hold = _HOLD.format(s=schema)
        self._take_and_hold = _TAKE_AND_HOLD.format(s=schema, take=self._take.strip())

    async def create(self, sale: str, sku: str, units: int) -> None:
        """A fresh scratch schema (an earlier run's is dropped) holding one stock row."""
        async with self.pool.acquire() as conn:
            await conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
            await conn.execute(_SCHEMA_SQL.format(s=self.schema))
            await conn.execute(
                f"INSERT INTO {self.schema}.stock (sale, sku, available) VALUES ($1, $2, $3)",
                sale, sku, units,
            )  # fmt: skip

    async def drop(self) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")

    async def reserve(self, sale: str, sku: str, qty: int, customer_id: str) -> str | None:
        """One transaction: lock and decrement the stock row, write the hold, commit. The hold
        id, or None when sold out (nothing written)."""
        async with self.pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(self._take, sale, sku, qty) is None:
                return None
            hold_id = await conn.fetchval(self._hold, sale, sku, qty, customer_id, HOLD_TTL_MS)
        return str(hold_id)

    async def reserve_one_statement(
        self, sale: str, sku: str, qty: int, customer_id: str
    ) -> str | None:
        hold_id = await self.pool.fetchval(
            self._take_and_hold, sale, sku, qty, customer_id, HOLD_TTL_MS
        )
        return None if hold_id is None else str(hold_id)

    async def stock(self, sale: str, sku: str) -> PgStock:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT available, reserved FROM {self.schema}.stock WHERE sale = $1 AND sku = $2",
                sale, sku,
            )  # fmt: skip
            holds = await conn.fetchrow(
                f"SELECT count(*) AS n, coalesce(sum(qty), 0) AS units FROM {self.schema}.holds "
                "WHERE sale = $1 AND sku = $2",
                sale, sku,
            )  # fmt: skip
        return PgStock(row["available"], row["reserved"], holds["n"], int(holds["units"]))


@asynccontextmanager
async def scratch_shop(
    url: str, pool_size: int, units: int, schema: str = SCHEMA
) -> AsyncIterator[RowLockShop]:
    """A pool and a scratch schema with `units` of SALE/SKU, dropped again on the way out."""
    pool = await asyncpg.create_pool(url, min_size=pool_size, max_size=pool_size)
    shop = RowLockShop(pool, schema)
    try:
        await shop.create(SALE, SKU, units)
        yield shop
    finally:
        try:
            await shop.drop()
        finally:
            await pool.close()


async def pg_side(
    shop: RowLockShop, reserve: Reserve, name: str, requests: int, concurrency: int
) -> Row:
    """`reserve` is one of the shop's two ways. Every request must leave a hold, and the stock
    row must account for exactly those, or the run reports no figures."""
    before = await shop.stock(SALE, SKU)

    async def one() -> None:
        if await reserve(SALE, SKU, 1, "bench") is None:
            raise RuntimeError(f"{name}: a reservation found no stock (stock: {before})")

    row = await drive(name, one, requests, concurrency)
    after = await shop.stock(SALE, SKU)
    taken, held = before.available - after.available, after.holds - before.holds
    if not taken == held == after.reserved - before.reserved == requests:
        raise RuntimeError(f"{name}: {requests} requests, {taken} units taken, {held} holds")
    return row


async def _engine_stock(engine: Engine) -> tuple[int, int]:
    state = await engine.stock(SALE)
    if state is None:
        raise RuntimeError(f"bench sale {SALE} is not loaded")
    return state.sku(SKU).available, state.sku(SKU).reserved


async def _redis_side(engine: Engine, requests: int, concurrency: int) -> Row:
    """The engine's side, held to the same accounting as the row lock's."""
    available, reserved = await _engine_stock(engine)
    row = await engine_side(engine, ENGINE_ROW, requests, concurrency, SALE)
    after_available, after_reserved = await _engine_stock(engine)
    taken, held = available - after_available, after_reserved - reserved
    if not taken == held == requests:
        raise RuntimeError(f"{ENGINE_ROW}: {requests} requests, {taken} taken, {held} held")
    return row


async def bench_pg(
    settings: Settings,
    engine_requests: int,
    pg_requests: int,
    concurrency: int,
    *,
    schema: str = SCHEMA,
) -> list[Row]:
    """The engine bench's workload (`concurrency` callers, 1 unit of one hot sku, ample stock) on
    every side, alternated twice; the best run of each side, the row-lock transaction first."""
    urls = services.up(settings, log=lambda _line: None)
    client = connect(urls["FLASHSALE_REDIS_URL"], max_connections=concurrency + 8)
    engine = Engine(client, settings)
    # The gateway's own pool size (FLASHSALE_PG_POOL_SIZE, 10): on this row, 50 connections
    # queue in PostgreSQL's lock manager instead of the pool and halve the rate.
    pool_size = min(concurrency, settings.pg_pool_size)
    try:
        await load_bench_sale(engine, SALE)
        async with scratch_shop(urls["FLASHSALE_DATABASE_URL"], pool_size, 10**12, schema) as shop:
            await engine_side(engine, "warm-up", min(engine_requests, 5000), concurrency, SALE)
            await pg_side(shop, shop.reserve, "warm-up", min(pg_requests, 500), concurrency)
            rows: dict[str, list[Row]] = {}
            for _ in range(2):  # alternate so neither side always gets the warmer machine
                for row in (
                    await pg_side(shop, shop.reserve, PG_ROW, pg_requests, concurrency),
                    await pg_side(
                        shop, shop.reserve_one_statement, PG_CTE_ROW, pg_requests, concurrency
                    ),
                    await _redis_side(engine, engine_requests, concurrency),
                ):
                    rows.setdefault(row.name, []).append(row)
                done = ", ".join(f"{n} {r[-1].requests_per_s:.0f}/s" for n, r in rows.items())
                print(f"  round done: {done}")
        return [max(r, key=lambda x: x.requests_per_s) for r in rows.values()]
    finally:
        await engine.forget_sale(SALE)
        await client.aclose()
