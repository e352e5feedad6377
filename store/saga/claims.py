"""The saga's cursor on the order row: claiming due steps, and what happens to a try that failed.

An order runs one step at a time. `next_step` and `step_due_at` say what is due when; a claim
bumps `step_token` and leases the step until `claimed_until`, and an outcome is written only
while the token is still the one claimed. So a step whose process died is taken over when its
lease ends, and a slow process whose lease ran out has its outcome dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from flashsale.store.db import Connection


@dataclass(frozen=True, slots=True)
class Claim:
    order_id: str
    step: str
    token: int
    attempts: int  # this try included
    round: int
    sale_id: str = ""
    request_id: str = ""  # the order's (the confirming request's), for its rows and log lines


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
RETURNING o.order_id, o.next_step, o.step_token, o.sale_id, o.request_id
"""

_COUNT_TRY = """
INSERT INTO saga_steps (order_id, step, status, attempts, request_id)
SELECT c.order_id, c.step, 'pending', 1, c.request_id
FROM unnest($1::text[], $2::text[], $3::text[]) AS c(order_id, step, request_id)
ON CONFLICT (order_id, step) DO UPDATE
SET attempts = saga_steps.attempts + 1, status = 'pending', updated_at = now()
RETURNING order_id, attempts, round
"""


async def claim(conn: Connection, limit: int, lease_ms: int) -> list[Claim]:
    """Due orders, leased to this process; each try is counted before it runs, so a step that
    kills its process every time still reaches the dead letters."""
    async with conn.transaction():
        rows = await conn.fetch(_CLAIM, limit, lease_ms)
        if not rows:
            return []
        ids = [r["order_id"] for r in rows]
        steps = [r["next_step"] for r in rows]
        counted = await conn.fetch(_COUNT_TRY, ids, steps, [r["request_id"] for r in rows])
    tries = {r["order_id"]: (r["attempts"], r["round"]) for r in counted}
    return [
        Claim(
            r["order_id"],
            r["next_step"],
            r["step_token"],
            *tries[r["order_id"]],
            sale_id=r["sale_id"],
            request_id=r["request_id"],
        )
        for r in rows
    ]


LOCK = "SELECT status, step_token FROM orders WHERE order_id = $1 FOR UPDATE"
# A step due again starts a new round: its tries count from zero, and the parties see new
# idempotency keys (they are made of order, step and round).
REARM = """
UPDATE saga_steps SET status = 'pending', attempts = 0, round = round + 1, updated_at = now()
WHERE order_id = $1 AND step = $2 AND status <> 'pending'
"""
TRANSITION = """
INSERT INTO order_transitions (order_id, from_status, to_status, cause) VALUES ($1, $2, $3, $4)
"""
_STEP_FAILED = """
UPDATE saga_steps SET status = $3, last_error = $4, updated_at = now(),
    next_attempt_at = now() + $5 * interval '1 millisecond'
WHERE order_id = $1 AND step = $2
"""
_DEAD = """
UPDATE orders SET next_step = NULL, dead_step = $2, step_token = step_token + 1,
    claimed_until = NULL
WHERE order_id = $1
"""
_LATER = """
UPDATE orders SET step_due_at = now() + $2 * interval '1 millisecond',
    step_token = step_token + 1, claimed_until = NULL
WHERE order_id = $1
"""


async def record_failure(
    conn: Connection, c: Claim, error: str, *, delay_ms: float, dead: bool
) -> bool:
    """A try that could not finish: due again after `delay_ms`, or (dead) parked in the dead
    letters for an operator. False when the claim is no longer ours (nothing written)."""
    async with conn.transaction():
        row = await conn.fetchrow(LOCK, c.order_id)
        if row is None or row["step_token"] != c.token:
            return False
        status = "dead" if dead else "pending"
        await conn.execute(_STEP_FAILED, c.order_id, c.step, status, error[:2000], delay_ms)
        if dead:
            await conn.execute(_DEAD, c.order_id, c.step)
            cause = f"step {c.step} dead after {c.attempts} tries: {error[:500]}"
            await conn.execute(TRANSITION, c.order_id, row["status"], row["status"], cause)
        else:
            await conn.execute(_LATER, c.order_id, delay_ms)
    return True


_RETRY_DEAD = """
UPDATE orders SET next_step = dead_step, dead_step = NULL, step_due_at = now(),
    step_token = step_token + 1
WHERE order_id = $1 AND dead_step IS NOT NULL AND next_step IS NULL
RETURNING next_step, status
"""


async def retry_dead(conn: Connection, order_id: str, by: str = "an operator") -> str | None:
    """An operator's retry of a dead-lettered step: due now, with a fresh count of tries, and a
    note in the order's transitions. The step, or None when the order has no dead step."""
    async with conn.transaction():
        row = await conn.fetchrow(_RETRY_DEAD, order_id)
        if row is None:
            return None
        step = str(row["next_step"])
        await conn.execute(
            "UPDATE saga_steps SET status = 'pending', attempts = 0 "
            "WHERE order_id = $1 AND step = $2",
            order_id,
            step,
        )
        cause = f"step {step} retried by {by}"
        await conn.execute(TRANSITION, order_id, row["status"], row["status"], cause)
    return step
