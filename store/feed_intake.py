"""A supplier feed delivery, start to end, in one PostgreSQL transaction: the function every
connector (webhook, poller, file drop, `feeds load`) calls, and the replay of reviewed records.

Per supplier one delivery at a time (a transaction-scoped advisory lock, so any number of gateway
workers and reconcilers can share the work); the (supplier, delivery_id) key makes every
connector idempotent. The Redis side is handed in (`FeedApplier`, which the engine is) and runs
inside the transaction: if Redis fails, nothing is stored and the same delivery can come again.
A commit that fails after Redis was written leaves offers PostgreSQL does not know about, but
they are absolute values computed from the counters of that moment, so the retried delivery
computes and writes them again, and the ledger (from the stream) follows Redis either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from flashsale.engine.errors import FlashsaleError, InvalidInput
from flashsale.engine.feed_rules import Accepted, Resolution, resolve
from flashsale.engine.feeds import (
    Delivery,
    FeedApplier,
    FeedRecord,
    FeedRef,
    FeedRow,
    Level,
    iso_of_ms,
)
from flashsale.store.db import Connection, columns
from flashsale.store.feeds import FeedNotConfigured, at, feed_for, lock_supplier, ms

# Lines held at a supplier that no longer wait for it: allocated (there or rerouted) or
# backordered (the retailer decides; if it decides to wait, the line counts again). Cancelled
# lines gave their units back to Redis, so they are not counted. Pending and waiting lines do
# wait: a waiting line asks its chain again, the supplier it was held at first, on its day.
SETTLED = ("allocated", "backordered")


class DeliveryNotFound(FlashsaleError):
    """No stored delivery has that id (for that supplier)."""


@dataclass(frozen=True, slots=True)
class Receipt:
    delivery_id: str
    duplicate: bool
    applied: int = 0
    stale: int = 0
    quarantined: int = 0
    unknown: int = 0
    duplicates: int = 0
    sales: int = 0
    shortfall: int = 0

    def counts(self) -> dict[str, int]:
        return {
            "applied": self.applied,
            "stale": self.stale,
            "quarantined": self.quarantined,
            "unknown": self.unknown,
            "duplicates": self.duplicates,
        }


async def receive(
    conn: Connection, applier: FeedApplier, delivery: Delivery, *, received_at_ms: int | None = None
) -> Receipt:
    """Store, resolve and apply one delivery; a delivery id seen before does nothing."""
    delivery.check()
    supplier_id = delivery.supplier_id
    async with conn.transaction():
        await lock_supplier(conn, supplier_id)
        feed = await feed_for(conn, supplier_id, (r.supplier_sku for r in delivery.records))
        if feed is None:
            raise FeedNotConfigured(f"supplier {supplier_id} has no feed")
        if delivery.source == "webhook" and feed.feed.kind != "webhook":
            raise FeedNotConfigured(f"supplier {supplier_id} has no webhook feed")
        fresh = await conn.fetchval(
            "INSERT INTO feed_deliveries (supplier_id, delivery_id, source, received_at, records) "
            "VALUES ($1, $2, $3, coalesce($4, now()), $5) ON CONFLICT DO NOTHING RETURNING true",
            supplier_id,
            delivery.delivery_id,
            delivery.source,
            None if received_at_ms is None else at(received_at_ms),
            len(delivery.records),
        )
        if not fresh:
            await conn.execute(
                "UPDATE supplier_feeds SET deliveries_duplicate = deliveries_duplicate + 1 "
                "WHERE supplier_id = $1",
                supplier_id,
            )
            return Receipt(delivery.delivery_id, duplicate=True)
        skus = {m.sku for r in delivery.records if (m := feed.feed.sku_map.get(r.supplier_sku))}
        latest = await levels(conn, supplier_id, skus)
        res = resolve(delivery, feed.feed, latest, received_at_ms=received_at_ms)
        return await _commit(conn, applier, delivery, res, delivered=True)


async def _commit(
    conn: Connection, applier: FeedApplier, delivery: Delivery, res: Resolution, *, delivered: bool
) -> Receipt:
    """Levels, quarantine, Redis, counters: everything a resolved delivery changes. A replay
    (not `delivered`) writes no quarantine: what it refuses again is held already."""
    supplier_id, delivery_id = delivery.supplier_id, delivery.delivery_id
    taken = await _write_levels(conn, supplier_id, delivery_id, res.accepted.values())
    if delivered:
        await _write_quarantine(conn, supplier_id, delivery_id, res)
    as_of_ms = max((a.as_of_ms for a in res.accepted.values()), default=0)
    ref = FeedRef("replay" if not delivered else delivery.source, delivery_id, as_of_ms)
    on_hand = {a.sku: max(0, a.units - taken.get(a.sku, 0)) for a in res.accepted.values()}
    sales, shortfall = await apply_levels(conn, applier, supplier_id, on_hand, ref)
    receipt = Receipt(
        delivery_id,
        False,
        len(res.accepted),
        res.stale,
        len(res.quarantined),
        res.unknown,
        res.duplicates,
        sales,
        shortfall,
    )
    await _count(conn, supplier_id, receipt, as_of_ms, delivered=delivered)
    if delivered:
        await _close_delivery(conn, supplier_id, receipt, as_of_ms, res.unknown_sample)
    return receipt


# --- levels ------------------------------------------------------------------------------------


async def levels(conn: Connection, supplier_id: str, skus: Iterable[str]) -> dict[str, Level]:
    """The newest accepted level of each sku at the supplier (those it has)."""
    rows = await conn.fetch(
        "SELECT sku, on_hand, as_of FROM feed_levels WHERE supplier_id = $1 "
        "AND sku = ANY($2::text[])",
        supplier_id,
        sorted(skus),
    )
    return {r["sku"]: Level(int(r["on_hand"]), ms(r["as_of"])) for r in rows}


# A level starts with allocated_since = the units allocated at the supplier (any sale) after its
# as_of: the supplier's snapshot still counts them, and our lines no longer wait for them. The
# guard on as_of repeats the rule that resolve() applied under the lock: a level only moves
# forward, whoever writes it.
_WRITE_LEVELS = """
INSERT INTO feed_levels AS l (supplier_id, sku, on_hand, as_of, delivery_id, allocated_since)
SELECT $1, n.sku, n.on_hand, n.as_of, n.delivery_id,
       (SELECT coalesce(sum(a.qty), 0) FROM order_allocations a
        WHERE a.supplier_id = $1 AND a.sku = n.sku AND a.status = 'allocated'
          AND a.updated_at > n.as_of)
FROM unnest($2::text[], $3::bigint[], $4::timestamptz[], $5::text[])
    AS n (sku, on_hand, as_of, delivery_id)
ON CONFLICT (supplier_id, sku) DO UPDATE SET
    on_hand = EXCLUDED.on_hand, as_of = EXCLUDED.as_of, delivery_id = EXCLUDED.delivery_id,
    accepted_at = now(), allocated_since = EXCLUDED.allocated_since
WHERE l.as_of < EXCLUDED.as_of
RETURNING sku, allocated_since
"""


async def _write_levels(
    conn: Connection, supplier_id: str, delivery_id: str, accepted: Iterable[Accepted]
) -> dict[str, int]:
    """The new levels; sku -> units allocated at the supplier since each one's as_of."""
    rows = [(a.sku, a.units, at(a.as_of_ms), delivery_id) for a in accepted]
    if not rows:
        return {}
    written = await conn.fetch(_WRITE_LEVELS, supplier_id, *columns(rows, 4))
    return {r["sku"]: int(r["allocated_since"]) for r in written}


_WRITE_QUARANTINE = """
INSERT INTO feed_quarantine (supplier_id, delivery_id, line, supplier_sku, on_hand, as_of, reason)
SELECT $1, $2, * FROM unnest($3::integer[], $4::text[], $5::text[], $6::timestamptz[], $7::text[])
"""


async def _write_quarantine(
    conn: Connection, supplier_id: str, delivery_id: str, res: Resolution
) -> None:
    rows = [
        (q.line, q.supplier_sku, q.on_hand, _at_or_none(q.as_of_ms), q.reason)
        for q in res.quarantined
    ]
    if rows:
        await conn.execute(_WRITE_QUARANTINE, supplier_id, delivery_id, *columns(rows, 5))


def _at_or_none(ms_: int | None) -> datetime | None:
    return None if ms_ is None else at(ms_)


# --- Redis -------------------------------------------------------------------------------------

_OFFERING = """
SELECT m.sale_id, m.sku FROM supplier_skus m JOIN sales s USING (sale_id)
WHERE m.supplier_id = $1 AND m.sku = ANY($2::text[]) AND s.status <> 'closed'
  AND (s.ends_at IS NULL OR s.ends_at > now())
ORDER BY m.sale_id, m.sku
"""

_SETTLED = """
SELECT o.sale_id, l.sku, sum(l.qty)::bigint AS units
FROM order_allocations l JOIN orders o USING (order_id)
WHERE o.sale_id = ANY($1::text[]) AND l.hold_supplier = $2 AND l.sku = ANY($3::text[])
  AND l.status = ANY($4::text[])
GROUP BY o.sale_id, l.sku
"""


async def apply_levels(
    conn: Connection,
    applier: FeedApplier,
    supplier_id: str,
    on_hand: Mapping[str, int],
    ref: FeedRef,
    *,
    only_sale: str | None = None,
) -> tuple[int, int]:
    """Every sale that is not over and offers (supplier, sku) gets its offer set from `on_hand`
    (sku -> units), one Redis call per sale. (sales set, units of shortfall)."""
    if not on_hand:
        return 0, 0
    offering = await conn.fetch(_OFFERING, supplier_id, sorted(on_hand))
    by_sale: dict[str, list[str]] = {}
    for r in offering:
        if only_sale is None or r["sale_id"] == only_sale:
            by_sale.setdefault(r["sale_id"], []).append(r["sku"])
    if not by_sale:
        return 0, 0
    settled_rows = await conn.fetch(
        _SETTLED, sorted(by_sale), supplier_id, sorted(on_hand), list(SETTLED)
    )
    settled = {(r["sale_id"], r["sku"]): int(r["units"]) for r in settled_rows}
    sales = shortfall = 0
    for sale_id, skus in by_sale.items():
        rows = [FeedRow(k, supplier_id, on_hand[k], settled.get((sale_id, k), 0)) for k in skus]
        changes = await applier.apply_feed(sale_id, rows, ref)
        done = [c for c in changes if c.code == "OK"]
        sales += bool(done)
        shortfall += sum(c.shortfall for c in done)
    return sales, shortfall


async def apply_to_sale(conn: Connection, applier: FeedApplier, sale_id: str) -> int:
    """A sale just (re)loaded takes the newest levels of its fed suppliers (under their locks,
    so a delivery cannot slip a newer level in between the read and the write)."""
    fed = await conn.fetch(
        "SELECT DISTINCT m.supplier_id FROM supplier_skus m JOIN supplier_feeds f "
        "USING (supplier_id) WHERE m.sale_id = $1 ORDER BY m.supplier_id",
        sale_id,
    )
    for r in fed:
        await lock_supplier(conn, r["supplier_id"])
    rows = await conn.fetch(
        "SELECT l.supplier_id, l.sku, l.on_hand - l.allocated_since AS units, l.as_of, "
        "l.delivery_id FROM feed_levels l JOIN supplier_skus m USING (supplier_id, sku) "
        "WHERE m.sale_id = $1 ORDER BY l.supplier_id, l.sku",
        sale_id,
    )
    by_supplier: dict[str, dict[str, int]] = {}
    newest: dict[str, int] = {}
    for r in rows:
        by_supplier.setdefault(r["supplier_id"], {})[r["sku"]] = max(0, int(r["units"]))
        newest[r["supplier_id"]] = max(newest.get(r["supplier_id"], 0), ms(r["as_of"]))
    total = 0
    for supplier_id, on_hand in by_supplier.items():
        ref = FeedRef("sale", sale_id, newest[supplier_id])
        done, _ = await apply_levels(conn, applier, supplier_id, on_hand, ref, only_sale=sale_id)
        total += done
    return total


# --- counters ----------------------------------------------------------------------------------

_COUNT = """
UPDATE supplier_feeds SET
    deliveries_accepted = deliveries_accepted + $2,
    records_applied = records_applied + $3, records_stale = records_stale + $4,
    records_quarantined = records_quarantined + $5, records_unknown = records_unknown + $6,
    records_duplicate = records_duplicate + $7,
    last_applied_at = CASE WHEN $3 > 0 THEN clock_timestamp() ELSE last_applied_at END,
    last_as_of = CASE WHEN $3 > 0 THEN greatest(last_as_of, $8) ELSE last_as_of END,
    last_lag_ms = CASE WHEN $3 > 0
        THEN (extract(epoch FROM clock_timestamp() - $8) * 1000)::bigint ELSE last_lag_ms END
WHERE supplier_id = $1
"""


async def _count(
    conn: Connection, supplier_id: str, r: Receipt, as_of_ms: int, *, delivered: bool
) -> None:
    await conn.execute(
        _COUNT,
        supplier_id,
        int(delivered),
        r.applied,
        r.stale,
        r.quarantined if delivered else 0,  # a replay's were counted when they arrived
        r.unknown,
        r.duplicates,
        at(as_of_ms),
    )


async def _close_delivery(
    conn: Connection, supplier_id: str, r: Receipt, as_of_ms: int, unknown: list[str]
) -> None:
    await conn.execute(
        "UPDATE feed_deliveries SET applied_at = clock_timestamp(), as_of = $3, applied = $4, "
        "stale = $5, quarantined = $6, unknown = $7, duplicates = $8, sales = $9, "
        "shortfall = $10, unknown_sample = $11 WHERE supplier_id = $1 AND delivery_id = $2",
        supplier_id,
        r.delivery_id,
        at(as_of_ms) if r.applied else None,
        r.applied,
        r.stale,
        r.quarantined,
        r.unknown,
        r.duplicates,
        r.sales,
        r.shortfall,
        unknown,
    )


# --- replay after review -----------------------------------------------------------------------


async def replay(
    conn: Connection, applier: FeedApplier, delivery_id: str, supplier_id: str | None = None
) -> Receipt:
    """Re-applies the open quarantined records of a stored delivery, thresholds waived (an
    operator reviewed them); the newest as_of still wins. Records refused again (negative,
    non-integer, absurd, a bad or future as_of) stay open: listed and counted once however often
    the delivery is replayed (the receipt's `quarantined` says how many are still held). The
    others (applied, stale or duplicate against the newest level, or no longer mapped) are
    marked replayed: a second replay finds only the ones still held."""
    async with conn.transaction():
        supplier = await _owner(conn, delivery_id, supplier_id)
        await lock_supplier(conn, supplier)
        held = await conn.fetch(
            "SELECT id, supplier_sku, on_hand, as_of FROM feed_quarantine WHERE supplier_id = $1 "
            "AND delivery_id = $2 AND status = 'open' ORDER BY id",
            supplier,
            delivery_id,
        )
        # Each record's `line` is its quarantine row: what resolve() refuses again stays open.
        records = [
            FeedRecord(
                r["supplier_sku"],
                r["on_hand"],
                None if r["as_of"] is None else iso_of_ms(ms(r["as_of"])),
                r["id"],
            )
            for r in held
        ]
        feed = await feed_for(conn, supplier, (r.supplier_sku for r in records))
        if feed is None:
            raise FeedNotConfigured(f"supplier {supplier} has no feed")
        delivery = Delivery(supplier, delivery_id, "replay", None, records)
        skus = {m.sku for r in records if (m := feed.feed.sku_map.get(r.supplier_sku))}
        latest = await levels(conn, supplier, skus)
        res = resolve(delivery, feed.feed, latest, waive_thresholds=True)
        again = {q.line for q in res.quarantined}
        await conn.execute(
            "UPDATE feed_quarantine SET status = 'replayed' WHERE id = ANY($1::bigint[])",
            [r["id"] for r in held if r["id"] not in again],
        )
        return await _commit(conn, applier, delivery, res, delivered=False)


async def _owner(conn: Connection, delivery_id: str, supplier_id: str | None) -> str:
    """The supplier of a stored delivery (named when several have used that id)."""
    found = await conn.fetch(
        "SELECT supplier_id FROM feed_deliveries WHERE delivery_id = $1 "
        "AND ($2::text IS NULL OR supplier_id = $2)",
        delivery_id,
        supplier_id,
    )
    if not found:
        raise DeliveryNotFound(f"no delivery {delivery_id}")
    if len(found) > 1:
        raise InvalidInput("supplier_id", f"delivery {delivery_id} exists for several")
    return str(found[0]["supplier_id"])
