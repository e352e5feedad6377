"""Which reconciler flushes which sale: PostgreSQL session advisory locks, a fair share each.

One owner per sale keeps the sale's events in stream order in PostgreSQL (a compensation is
never applied before its confirmation, a cut never before the sales it made room for). The lock
is held by the very connection that commits the sale's batches, so it doubles as a fence: a
reconciler whose connection died has lost the lock and cannot commit, and a killed process's
locks vanish with its session, so another reconciler takes over at once, no timeout to guess.
"""

from __future__ import annotations

import math

from flashsale.store.db import Connection

# Two int4 namespaces of the two-key advisory lock form (ASCII "fs" + a tag); the second key
# is 0 for presence and hashtext(sale_id) for a sale. A hash collision only means two sales
# share one owner.
PRESENCE_NS = 0x66730001
SALE_NS = 0x66730002

_LIVE = """
SELECT count(DISTINCT pid) FROM pg_locks
WHERE locktype = 'advisory' AND granted AND classid = $1::bigint::oid AND objid = 0
  AND objsubid = 2 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""

_OWNERS = """
SELECT l.pid, count(*) AS sales FROM pg_locks l
WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::bigint::oid AND l.objsubid = 2
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
GROUP BY l.pid
"""


async def register(conn: Connection) -> None:
    """Count this session among the live reconcilers (a shared lock, held until it ends)."""
    await conn.execute("SELECT pg_advisory_lock_shared($1, 0)", PRESENCE_NS)


async def live_reconcilers(conn: Connection) -> int:
    return int(await conn.fetchval(_LIVE, PRESENCE_NS))


async def owners(conn: Connection) -> dict[int, int]:
    """Backend pid -> how many sale locks it holds (tests and the audit read it)."""
    rows = await conn.fetch(_OWNERS, SALE_NS)
    return {int(r["pid"]): int(r["sales"]) for r in rows}


async def try_acquire(conn: Connection, sale_id: str) -> bool:
    return bool(
        await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", SALE_NS, sale_id)
    )


async def release(conn: Connection, sale_id: str) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", SALE_NS, sale_id)


def fair_share(sales: int, reconcilers: int) -> int:
    """The most sales one reconciler keeps while others could take some."""
    return math.ceil(sales / max(1, reconcilers))


async def known_sales(conn: Connection, candidates: list[str]) -> list[str]:
    """The candidates PostgreSQL has a record of: a sale only Redis knows (a benchmark, a test
    of the engine alone) has nowhere to be flushed to and is left alone."""
    rows = await conn.fetch(
        "SELECT sale_id FROM sales WHERE sale_id = ANY($1::text[]) ORDER BY sale_id", candidates
    )
    return [str(r["sale_id"]) for r in rows]
