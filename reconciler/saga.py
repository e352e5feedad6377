"""The saga runner: claims due orders from PostgreSQL, runs their next step (reconciler/steps.py),
writes the outcome in one transaction, forever. Several reconcilers share the work.

The cursor is on the order row (`next_step`, `step_due_at`, `step_token`, `claimed_until`), so
an order runs one step at a time. A claim bumps `step_token` and leases the step; the outcome is
written only if the token is still the one claimed. So a step whose process died is taken over
when its lease ends, and a slow process whose lease ran out has its outcome dropped: every
transition is written once. A retailer's decision never moves the cursor of a claimed or
retrying step (gateway/orders.py); write() sends the order to `backorder.apply` afterwards.
A step that cannot reach a party is tried again with capped exponential backoff and jitter;
after `max_attempts` tries it goes to the dead letters (saga_steps.status = 'dead',
orders.dead_step) for an operator (`flashsale saga retry`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
from redis.exceptions import RedisError

from flashsale.engine.errors import EngineUnavailable
from flashsale.reconciler.adapters import PartyUnavailable
from flashsale.reconciler.backoff import jittered_ms
from flashsale.reconciler.metrics import Metrics
from flashsale.reconciler.steps import FINAL, STEPS, Backorder, Decision, Line, Order, Parties

Log = Callable[[str], None]

TRANSIENT = (PartyUnavailable, EngineUnavailable, RedisError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class SagaConfig:
    max_attempts: int = 8
    backoff_base_ms: int = 200
    backoff_cap_ms: int = 30_000
    concurrency: int = 32
    lease_ms: int = 30_000
    poll_idle_ms: int = 100


@dataclass(frozen=True, slots=True)
class Claim:
    order_id: str
    step: str
    token: int
    attempts: int
    round: int


# --- claiming ------------------------------------------------------------------------------------

_CLAIM = """
WITH due AS (
    SELECT order_id FROM orders
    WHERE next_step IS NOT NULL AND step_due_at <= now()
    ORDER BY step_due_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE orders o
SET step_token = o.step_token + 1, step_due_at = now() + $2 * interval '1 millisecond',
    claimed_until = now() + $2 * interval '1 millisecond'
FROM due WHERE o.order_id = due.order_id
RETURNING o.order_id, o.next_step, o.step_token
"""

_COUNT_TRY = """
INSERT INTO saga_steps (order_id, step, status, attempts)
SELECT c.order_id, c.step, 'pending', 1 FROM unnest($1::text[], $2::text[]) AS c(order_id, step)
ON CONFLICT (order_id, step) DO UPDATE
SET attempts = saga_steps.attempts + 1, status = 'pending', updated_at = now()
RETURNING order_id, attempts, round
"""


async def claim(conn: asyncpg.Connection, limit: int, lease_ms: int) -> list[Claim]:
    """Due orders, leased to this process; each try is counted before it runs, so a step that
    kills its process every time still reaches the dead letters."""
    async with conn.transaction():
        rows = await conn.fetch(_CLAIM, limit, lease_ms)
        if not rows:
            return []
        ids = [r["order_id"] for r in rows]
        counted = await conn.fetch(_COUNT_TRY, ids, [r["next_step"] for r in rows])
    tries = {r["order_id"]: (r["attempts"], r["round"]) for r in counted}
    return [
        Claim(r["order_id"], r["next_step"], r["step_token"], *tries[r["order_id"]]) for r in rows
    ]


# --- loading an order ----------------------------------------------------------------------------

_ORDER = """
SELECT order_id, sale_id, customer_id, status, total_minor, payment_ref, authorization_id,
       captured_minor, refunded_minor
FROM orders WHERE order_id = $1
"""
_LINES = """
SELECT sku, hold_supplier, qty, price_minor, status, supplier_id, cost_minor, allocation_ref,
       confirmed, planned_margin_minor, margin_minor, refused_by
FROM order_allocations WHERE order_id = $1 ORDER BY sku, hold_supplier
"""
_BACKORDERS = """
SELECT id, sku, hold_supplier, qty, status, decision, promised_date, options
FROM backorders WHERE order_id = $1 ORDER BY id
"""
_CHAINS = """
SELECT sku, supplier_id, cost_minor FROM supplier_skus
WHERE sale_id = $1 ORDER BY sku, priority, position
"""


async def load(conn: asyncpg.Connection, c: Claim) -> Order:
    o = await conn.fetchrow(_ORDER, c.order_id)
    chains: dict[str, list[tuple[str, int]]] = {}
    for r in await conn.fetch(_CHAINS, o["sale_id"]):
        chains.setdefault(r["sku"], []).append((r["supplier_id"], r["cost_minor"]))
    lines = [
        Line(**{**dict(r), "refused_by": list(r["refused_by"])})
        for r in await conn.fetch(_LINES, c.order_id)
    ]
    backorders = [
        Backorder(
            r["id"],
            r["sku"],
            r["hold_supplier"],
            r["qty"],
            r["status"],
            json.loads(r["decision"]) if r["decision"] else None,
            r["promised_date"],
            json.loads(r["options"]),
        )
        for r in await conn.fetch(_BACKORDERS, c.order_id)
    ]
    return Order(
        **dict(o), step=c.step, round=c.round, lines=lines, backorders=backorders, suppliers=chains
    )


# --- writing an outcome --------------------------------------------------------------------------

_LOCK = "SELECT status, step_token FROM orders WHERE order_id = $1 FOR UPDATE"
_TRANSITION = """
INSERT INTO order_transitions (order_id, from_status, to_status, cause) VALUES ($1, $2, $3, $4)
"""
_WRITE_LINE = """
UPDATE order_allocations SET status = $4, supplier_id = $5, cost_minor = $6, allocation_ref = $7,
    confirmed = $8, margin_minor = $9, refused_by = $10, updated_at = now()
WHERE order_id = $1 AND sku = $2 AND hold_supplier = $3
"""
# A decision the retailer recorded while a step ran ('decided') is only ever overwritten by the
# step that carries it out ($6 / $5: whether this step is backorder.apply).
_OPEN_BACKORDER = """
INSERT INTO backorders (order_id, sku, hold_supplier, qty, status, options)
VALUES ($1, $2, $3, $4, 'open', $5::jsonb)
ON CONFLICT (order_id, sku, hold_supplier) DO UPDATE
SET status = 'open', options = EXCLUDED.options, decision = NULL, decided_at = NULL,
    applied = true, promised_date = NULL
WHERE backorders.status <> 'decided' OR $6
"""
_WRITE_BACKORDER = """
UPDATE backorders SET status = $2, decision = $3::jsonb, promised_date = $4, applied = true
WHERE id = $1 AND (status <> 'decided' OR $5)
"""
_DECIDED = "SELECT count(*) FROM backorders WHERE order_id = $1 AND status = 'decided'"
_CLOSE_BACKORDERS = """
UPDATE backorders SET status = 'cancelled', applied = true
WHERE order_id = $1 AND status IN ('open', 'decided', 'waiting')
"""
_NOTICE = """
INSERT INTO outbox (topic, recipient, payload, dedupe_key) VALUES ($1, $2, $3::jsonb, $4)
ON CONFLICT (dedupe_key) DO NOTHING
"""
_STEP_DONE = """
INSERT INTO saga_steps (order_id, step, status, attempts, outcome, round)
VALUES ($1, $2, $3, 1, $4, $5)
ON CONFLICT (order_id, step) DO UPDATE
SET status = EXCLUDED.status, outcome = EXCLUDED.outcome, last_error = NULL, updated_at = now()
"""
_NEXT = """
UPDATE orders SET next_step = $2, step_due_at = $3, step_token = step_token + 1,
    claimed_until = NULL, dead_step = NULL, updated_at = now()
WHERE order_id = $1
"""
_REARM = """
UPDATE saga_steps SET status = 'pending', attempts = 0, round = round + 1, updated_at = now()
WHERE order_id = $1 AND step = $2 AND status <> 'pending'
"""

_ORDER_COLUMNS = frozenset(
    {"authorization_id", "authorized_minor", "captured_minor", "refunded_minor"}
)


async def write(conn: asyncpg.Connection, c: Claim, o: Order, d: Decision) -> bool:
    """The decision in one transaction, if the claim is still ours; whether it was written."""
    async with conn.transaction():
        row = await conn.fetchrow(_LOCK, c.order_id)
        if row is None or row["step_token"] != c.token:
            return False
        if d.status and d.status != row["status"]:
            await conn.execute(
                "UPDATE orders SET status = $2 WHERE order_id = $1", c.order_id, d.status
            )
            await conn.execute(_TRANSITION, c.order_id, row["status"], d.status, d.cause)
        elif d.cause:
            await conn.execute(_TRANSITION, c.order_id, row["status"], row["status"], d.cause)
        for column, value in d.order.items():
            assert column in _ORDER_COLUMNS, column
            await conn.execute(
                f"UPDATE orders SET {column} = $2 WHERE order_id = $1", c.order_id, value
            )
        for line in d.lines:
            await conn.execute(
                _WRITE_LINE,
                c.order_id,
                line.sku,
                line.hold_supplier,
                line.status,
                line.supplier_id,
                line.cost_minor,
                line.allocation_ref,
                line.confirmed,
                line.margin_minor,
                line.refused_by,
            )
        applies = c.step == "backorder.apply"
        for b in d.backorders:
            if b.status == "open":
                await conn.execute(
                    _OPEN_BACKORDER,
                    c.order_id,
                    b.sku,
                    b.hold_supplier,
                    b.qty,
                    json.dumps(b.options),
                    applies,
                )
            else:
                decision = json.dumps(b.decision) if b.decision is not None else None
                await conn.execute(
                    _WRITE_BACKORDER, b.id, b.status, decision, b.promised_date, applies
                )
        for n in d.notices:
            payload = {
                "topic": n.topic,
                "order_id": o.order_id,
                "sale_id": o.sale_id,
                "customer_id": o.customer_id,
                "status": d.status or row["status"],
                **n.details,
            }
            dedupe = f"{o.order_id}:{c.step}:{c.round}:{n.topic}:{n.recipient}"
            await conn.execute(_NOTICE, n.topic, n.recipient, json.dumps(payload), dedupe)
        await conn.execute(_STEP_DONE, c.order_id, c.step, "done", d.outcome, c.round)
        for step, outcome in d.history:
            await conn.execute(_STEP_DONE, c.order_id, step, "done", outcome, c.round)
        next_step, next_at = d.next_step, d.next_at
        if (d.status or row["status"]) in FINAL:
            await conn.execute(_CLOSE_BACKORDERS, c.order_id)  # nothing left to decide
        elif await conn.fetchval(_DECIDED, c.order_id):
            # The retailer decided while this step ran: carry that out next.
            next_step, next_at = "backorder.apply", None
        if next_step is not None:
            await conn.execute(_REARM, c.order_id, next_step)
        await conn.execute(_NEXT, c.order_id, next_step, next_at or dt.datetime.now(dt.UTC))
    return True


async def give_up_or_retry(
    conn: asyncpg.Connection, c: Claim, error: str, config: SagaConfig
) -> bool:
    """A try that could not finish: due again after a backoff, or dead. True if dead."""
    dead = c.attempts >= config.max_attempts
    delay_ms = jittered_ms(config.backoff_base_ms, config.backoff_cap_ms, c.attempts - 1)
    async with conn.transaction():
        row = await conn.fetchrow(_LOCK, c.order_id)
        if row is None or row["step_token"] != c.token:
            return False
        await conn.execute(
            "UPDATE saga_steps SET status = $3, last_error = $4, updated_at = now(), "
            "next_attempt_at = now() + $5 * interval '1 millisecond' "
            "WHERE order_id = $1 AND step = $2",
            c.order_id,
            c.step,
            "dead" if dead else "pending",
            error[:2000],
            delay_ms,
        )
        if dead:
            await conn.execute(
                "UPDATE orders SET next_step = NULL, dead_step = $2, step_token = step_token + 1, "
                "claimed_until = NULL WHERE order_id = $1",
                c.order_id,
                c.step,
            )
            await conn.execute(
                _TRANSITION,
                c.order_id,
                row["status"],
                row["status"],
                f"step {c.step} dead after {c.attempts} tries: {error[:500]}",
            )
        else:
            await conn.execute(
                "UPDATE orders SET step_due_at = now() + $2 * interval '1 millisecond', "
                "step_token = step_token + 1, claimed_until = NULL WHERE order_id = $1",
                c.order_id,
                delay_ms,
            )
    return dead


async def retry_dead(conn: asyncpg.Connection, order_id: str) -> bool:
    """An operator's retry of a dead-lettered step: due now, with a fresh count of tries."""
    async with conn.transaction():
        step = await conn.fetchval(
            "UPDATE orders SET next_step = dead_step, dead_step = NULL, step_due_at = now(), "
            "step_token = step_token + 1 "
            "WHERE order_id = $1 AND dead_step IS NOT NULL AND next_step IS NULL "
            "RETURNING next_step",
            order_id,
        )
        if step is None:
            return False
        await conn.execute(
            "UPDATE saga_steps SET status = 'pending', attempts = 0 "
            "WHERE order_id = $1 AND step = $2",
            order_id,
            step,
        )
    return True


# --- the loop ------------------------------------------------------------------------------------


class SagaRunner:
    def __init__(
        self,
        pool: asyncpg.Pool,
        parties: Parties,
        config: SagaConfig,
        metrics: Metrics,
        log: Log,
    ) -> None:
        self.pool = pool
        self.parties = parties
        self.config = config
        self.metrics = metrics
        self.log = log
        self._running: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        running = self._running
        try:
            while not stop.is_set():
                free = self.config.concurrency - len(running)
                claims: list[Claim] = []
                if free > 0:
                    try:
                        async with self.pool.acquire() as conn:
                            claims = await claim(conn, free, self.config.lease_ms)
                    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                        self.log(f"saga: PostgreSQL unavailable ({exc}); retrying")
                        await _pause(stop, 1.0)
                        continue
                for c in claims:
                    task = asyncio.create_task(self._one(c))
                    running.add(task)
                    task.add_done_callback(running.discard)
                if not claims:
                    await _pause(stop, self.config.poll_idle_ms / 1000)
        finally:
            # Steps in flight finish and write their outcome; a kill instead leaves their lease
            # to run out, and another process takes them over.
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    async def _one(self, c: Claim) -> None:
        """One try of one step. No PostgreSQL connection is held while the parties are asked."""
        try:
            if c.attempts > self.config.max_attempts:
                await self._failed(c, "too many tries (the step's process died each time)")
                return
            async with self.pool.acquire() as conn:
                order = await load(conn, c)
            try:
                decision = await STEPS[c.step](self.parties, order)
            except TRANSIENT as exc:
                self.metrics.saga_retries += 1
                await self._failed(c, f"{type(exc).__name__}: {exc}")
                return
            async with self.pool.acquire() as conn:
                if await write(conn, c, order, decision):
                    self.metrics.saga_steps += 1
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            # The lease runs out and the step runs again; its parties answer by key.
            self.log(f"saga: order {c.order_id} step {c.step}: PostgreSQL failed ({exc})")
        except Exception as exc:  # a bug in a step must not stop the others
            self.log(f"saga: order {c.order_id} step {c.step}: {type(exc).__name__}: {exc}")
            with contextlib.suppress(Exception):
                await self._failed(c, f"{type(exc).__name__}: {exc}")

    async def _failed(self, c: Claim, error: str) -> None:
        async with self.pool.acquire() as conn:
            if await give_up_or_retry(conn, c, error, self.config):
                self.metrics.saga_dead += 1
                self.log(f"saga: order {c.order_id} step {c.step} dead: {error}")


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
