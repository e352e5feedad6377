"""The holds journal (table `holds`): each hold's last known state, folded from a batch's hold
events inside the flush's transaction, so `flashsale recover` can bring holds back.

A row only moves forward, whatever order its events arrive in or however often: the status by
STATUS_ORDER (held, then the one way it ended, then compensated after a confirmation) with the
earliest time it is known to have had it, the expiry only later, the creation details
(idempotency key, fingerprint, created_at) never replaced once known. So a replayed batch
changes nothing, and a `reserved` that comes after its hold's `confirmed` does not reopen it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from flashsale.engine.events import Event, HoldEvent
from flashsale.store.db import Connection, columns

STATUS_OF_KIND = {
    "reserved": "held",
    "extended": "held",
    "confirmed": "confirmed",
    "released": "released",
    "expired": "expired",
    "compensated": "compensated",
}
# A hold ends once (confirmed, released or expired: never two of them), and only a confirmed one
# is compensated later; the order among the three endings is therefore never put to use.
STATUS_ORDER = ("held", "confirmed", "released", "expired", "compensated")


@dataclass(frozen=True, slots=True)
class HoldRow:
    hold_id: str
    customer_id: str
    lines: str  # sku:supplier:qty,... in the hold's own order
    status: str
    status_at_ms: int
    idem_key: str
    fingerprint: str
    created_at_ms: int | None  # None: this hold's `reserved` is not among the events
    expires_at_ms: int | None
    extended: bool


def row_of(e: HoldEvent) -> HoldRow:
    """What one event says of its hold."""
    return HoldRow(
        e.hold_id,
        e.customer_id,
        ",".join(f"{a.sku}:{a.supplier}:{a.qty}" for a in e.lines),
        STATUS_OF_KIND[e.kind],
        e.at_ms,
        e.idem_key,
        e.fingerprint,
        e.at_ms if e.kind == "reserved" else None,
        e.expires_at_ms or None,
        e.kind == "extended",
    )


def merge(old: HoldRow, new: HoldRow) -> HoldRow:
    """Both rows' knowledge of one hold, by the rules of the module's docstring (_UPSERT's SQL
    applies the same)."""
    later = STATUS_ORDER.index(new.status) > STATUS_ORDER.index(old.status)
    since = min(old.status_at_ms, new.status_at_ms) if new.status == old.status else None
    expiries = [t for t in (old.expires_at_ms, new.expires_at_ms) if t is not None]
    return HoldRow(
        old.hold_id,
        old.customer_id,
        old.lines,
        new.status if later else old.status,
        new.status_at_ms if later else old.status_at_ms if since is None else since,
        old.idem_key or new.idem_key,
        old.fingerprint or new.fingerprint,
        old.created_at_ms if old.created_at_ms is not None else new.created_at_ms,
        max(expiries) if expiries else None,
        old.extended or new.extended,
    )


def fold(events: Sequence[Event]) -> list[HoldRow]:
    """One row per hold of the batch (one INSERT ... ON CONFLICT may touch a row only once)."""
    rows: dict[str, HoldRow] = {}
    for e in events:
        if isinstance(e, HoldEvent):
            new = row_of(e)
            rows[e.hold_id] = merge(rows[e.hold_id], new) if e.hold_id in rows else new
    return list(rows.values())


def _ms(column: str) -> str:
    return f"'epoch'::timestamptz + {column} * interval '1 millisecond'"


def _rank(column: str) -> str:
    order = ", ".join(f"'{s}'" for s in STATUS_ORDER)
    return f"array_position(ARRAY[{order}], {column})"


_LATER = f"{_rank('EXCLUDED.status')} > {_rank('h.status')}"

_UPSERT = f"""
INSERT INTO holds AS h (sale_id, hold_id, customer_id, lines, status, status_at, idem_key,
                        fingerprint, created_at, expires_at, extended)
SELECT $1, r.hold_id, r.customer_id, r.lines, r.status, {_ms("r.status_at_ms")}, r.idem_key,
       r.fingerprint, {_ms("r.created_at_ms")}, {_ms("r.expires_at_ms")}, r.extended
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[],
            $8::text[], $9::bigint[], $10::bigint[], $11::boolean[])
     AS r(hold_id, customer_id, lines, status, status_at_ms, idem_key, fingerprint,
          created_at_ms, expires_at_ms, extended)
ON CONFLICT (sale_id, hold_id) DO UPDATE SET
    status = CASE WHEN {_LATER} THEN EXCLUDED.status ELSE h.status END,
    status_at = CASE WHEN {_LATER} THEN EXCLUDED.status_at
                     WHEN EXCLUDED.status = h.status THEN least(h.status_at, EXCLUDED.status_at)
                     ELSE h.status_at END,
    idem_key = CASE WHEN h.idem_key = '' THEN EXCLUDED.idem_key ELSE h.idem_key END,
    fingerprint = CASE WHEN h.fingerprint = '' THEN EXCLUDED.fingerprint ELSE h.fingerprint END,
    created_at = coalesce(h.created_at, EXCLUDED.created_at),
    expires_at = greatest(h.expires_at, EXCLUDED.expires_at),
    extended = h.extended OR EXCLUDED.extended
"""


async def record_holds(conn: Connection, sale_id: str, events: Sequence[Event]) -> int:
    """Fold the batch's hold events into the journal, in the caller's transaction; how many
    holds they touched."""
    rows = fold(events)
    if rows:
        await conn.execute(_UPSERT, sale_id, *columns([_values(r) for r in rows], 10))
    return len(rows)


def _values(r: HoldRow) -> tuple[object, ...]:
    return (
        r.hold_id,
        r.customer_id,
        r.lines,
        r.status,
        r.status_at_ms,
        r.idem_key,
        r.fingerprint,
        r.created_at_ms,
        r.expires_at_ms,
        r.extended,
    )
