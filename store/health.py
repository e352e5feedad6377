"""What an operator's dashboard asks PostgreSQL: orders per saga state and dead-lettered steps."""

from __future__ import annotations

from flashsale.store.db import Connection

# Every state an order can be in (the CHECK constraint of migration V3), so that a state with no
# orders is a 0 on the dashboard rather than a missing series.
ORDER_STATUSES = (
    "PENDING",
    "AUTHORIZED",
    "ALLOCATED",
    "CONFIRMED",
    "FULFILLED",
    "PARTIALLY_FULFILLED",
    "BACKORDERED",
    "PAYMENT_FAILED",
    "CANCELLED",
    "REFUNDED",
)


async def orders_by_status(conn: Connection) -> dict[str, int]:
    counts = dict.fromkeys(ORDER_STATUSES, 0)
    for r in await conn.fetch("SELECT status, count(*) AS n FROM orders GROUP BY status"):
        counts[r["status"]] = int(r["n"])
    return counts


async def dead_steps(conn: Connection) -> int:
    """Orders whose saga stopped at a dead step that no operator has retried yet."""
    return int(await conn.fetchval("SELECT count(*) FROM orders WHERE dead_step IS NOT NULL"))
