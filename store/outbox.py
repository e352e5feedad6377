"""The notification outbox: rows the saga writes in its own transactions, claimed for delivery
in batches (SKIP LOCKED, so several reconcilers share them) and marked delivered or due again."""

from __future__ import annotations

from typing import Any

from flashsale.store.db import Connection

Row = Any  # an asyncpg Record: id, topic, recipient, payload, attempts, created_at, order_id,
#            request_id

_CLAIM = """
UPDATE outbox SET attempts = attempts + 1, next_attempt_at = now() + $2 * interval '1 millisecond'
WHERE id IN (
    SELECT id FROM outbox WHERE delivered_at IS NULL AND next_attempt_at <= now()
    ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
)
RETURNING id, topic, recipient, payload, attempts, created_at, order_id, request_id
"""


async def claim(conn: Connection, limit: int, lease_ms: int) -> list[Row]:
    """Up to `limit` due notifications, each leased for `lease_ms` (a try counted)."""
    return list(await conn.fetch(_CLAIM, limit, lease_ms))


async def delivered(conn: Connection, notification_id: int) -> None:
    await conn.execute(
        "UPDATE outbox SET delivered_at = now(), last_error = NULL WHERE id = $1", notification_id
    )


async def retry_later(conn: Connection, notification_id: int, error: str, delay_ms: float) -> None:
    await conn.execute(
        "UPDATE outbox SET last_error = $2, "
        "next_attempt_at = now() + $3 * interval '1 millisecond' WHERE id = $1",
        notification_id,
        error[:1000],
        delay_ms,
    )
