"""The poller's shared schedule (one fetch per supplier and interval, whoever polls) and the
drop folder's per-supplier lock, for reconcilers that share the work."""

from __future__ import annotations

from dataclasses import dataclass

from flashsale.store.db import Connection

# The two-key advisory lock form's first key (ASCII "fs" + a tag; store/ownership.py has
# 0x66730001 and 0x66730002): a supplier's drop folder, second key hashtext(supplier_id).
FILES_NS = 0x66730003

_CLAIM = """
INSERT INTO feed_poll_leases AS l (supplier_id, due_at, lease_until)
VALUES ($1, now(), now() + $2 * interval '1 millisecond')
ON CONFLICT (supplier_id) DO UPDATE SET lease_until = EXCLUDED.lease_until
WHERE l.due_at <= now() AND (l.lease_until IS NULL OR l.lease_until <= now())
RETURNING (extract(epoch FROM l.due_at) * 1000)::bigint AS due_ms, l.failures
"""

# Due again one interval after the poll was due, not after it ran: the schedule does not drift
# by the scan period each time; a poller that was away a long time starts from now.
_DONE = """
UPDATE feed_poll_leases SET lease_until = NULL, failures = 0,
    due_at = greatest(due_at + $2 * interval '1 millisecond', now())
WHERE supplier_id = $1
"""

# Only a lease still running: one that ran out may be another reconciler's by now.
_RENEW = """
UPDATE feed_poll_leases SET lease_until = now() + $2 * interval '1 millisecond'
WHERE supplier_id = $1 AND lease_until > now()
"""

_FAILED = """
UPDATE feed_poll_leases SET lease_until = NULL, failures = failures + 1,
    due_at = now() + $2 * interval '1 millisecond'
WHERE supplier_id = $1
"""


@dataclass(frozen=True, slots=True)
class Claim:
    """A poll this reconciler may make now: the one due at `due_ms` (epoch ms), after
    `failures` failed in a row."""

    supplier_id: str
    due_ms: int
    failures: int


async def claim(conn: Connection, supplier_id: str, lease_ms: int) -> Claim | None:
    """The supplier's poll if it is due and no other is in flight, leased for `lease_ms`."""
    row = await conn.fetchrow(_CLAIM, supplier_id, lease_ms)
    return None if row is None else Claim(supplier_id, int(row["due_ms"]), int(row["failures"]))


async def succeeded(conn: Connection, supplier_id: str, interval_ms: int) -> None:
    await conn.execute(_DONE, supplier_id, interval_ms)


async def renew(conn: Connection, supplier_id: str, lease_ms: int) -> bool:
    """The running poll's lease, `lease_ms` from now; False when it had already run out."""
    return bool(await conn.execute(_RENEW, supplier_id, lease_ms) == "UPDATE 1")


async def failed(conn: Connection, supplier_id: str, retry_in_ms: int) -> None:
    await conn.execute(_FAILED, supplier_id, retry_in_ms)


async def try_lock_files(conn: Connection, supplier_id: str) -> bool:
    """The supplier's drop folder for this session, or False if another reconciler has it."""
    return bool(
        await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", FILES_NS, supplier_id)
    )


async def unlock_files(conn: Connection, supplier_id: str) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", FILES_NS, supplier_id)
