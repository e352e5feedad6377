"""Supplier feed config in PostgreSQL (supplier_feeds, supplier_sku_map), its health counters
and the poller's state. Deliveries themselves go through store/feed_intake.py."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flashsale.engine.errors import FlashsaleError
from flashsale.engine.feeds import SUPPLIER_SKU, FeedConfig, SkuMapping, Thresholds
from flashsale.engine.validation import check_id
from flashsale.store.db import Connection, columns
from flashsale.store.feed_secrets import unseal

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
RECORD_OUTCOMES = ("applied", "stale", "quarantined", "unknown", "duplicate")
DELIVERY_OUTCOMES = ("accepted", "duplicate")


FEED_LOCK = 0x66656564  # "feed": first key of the per-supplier advisory locks (two-int space)


async def lock_supplier(conn: Connection, supplier_id: str) -> None:
    """Until the transaction ends: one delivery, replay or config change of this supplier at a
    time (every gateway worker and reconciler takes the same lock)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", FEED_LOCK, supplier_id)


class FeedNotConfigured(FlashsaleError):
    """The supplier has no feed config (PUT /v1/admin/suppliers/{supplier} first)."""


def at(ms: int) -> datetime:
    return _EPOCH + ms * _MS


def ms(moment: datetime) -> int:
    return (moment - _EPOCH) // _MS


def _ms_or_none(moment: datetime | None) -> int | None:
    return None if moment is None else ms(moment)


@dataclass(frozen=True, slots=True)
class SupplierFeed:
    supplier_id: str
    name: str
    feed: FeedConfig
    has_secret: bool
    configured_at_ms: int


# --- config ------------------------------------------------------------------------------------


def thresholds_of(raw: str) -> Thresholds:
    """Keys a newer writer may have added are dropped instead of breaking the constructor."""
    names = {f.name for f in dataclasses.fields(Thresholds)}
    return Thresholds(**{k: v for k, v in json.loads(raw).items() if k in names})


_UPSERT_FEED = """
INSERT INTO supplier_feeds AS f (supplier_id, kind, url, interval_s, format, secret_enc, thresholds)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
ON CONFLICT (supplier_id) DO UPDATE SET
    kind = EXCLUDED.kind, url = EXCLUDED.url, interval_s = EXCLUDED.interval_s,
    format = EXCLUDED.format, secret_enc = coalesce(EXCLUDED.secret_enc, f.secret_enc),
    thresholds = EXCLUDED.thresholds, updated_at = now()
RETURNING (xmax = 0) AS created
"""

_INSERT_MAP = """
INSERT INTO supplier_sku_map (supplier_id, supplier_sku, sku, pack_size)
SELECT $1, * FROM unnest($2::text[], $3::text[], $4::integer[])
"""


_DROP_UNMAPPED = """
DELETE FROM feed_levels l WHERE l.supplier_id = $1 AND NOT EXISTS
    (SELECT 1 FROM supplier_sku_map m WHERE m.supplier_id = l.supplier_id AND m.sku = l.sku)
"""


async def save_feed(
    conn: Connection, supplier_id: str, name: str, feed: FeedConfig, secret_enc: bytes | None
) -> bool:
    """Create or replace a supplier's feed; `secret_enc` None keeps the stored secret. True when
    the feed is new. The SKU map is replaced whole, and the levels of skus it no longer maps
    go with it: a sale loaded later must not take a level nothing feeds any more."""
    check_id("supplier_id", supplier_id)
    async with conn.transaction():
        await lock_supplier(conn, supplier_id)  # a delivery never reads half a new map
        await conn.execute(
            "INSERT INTO suppliers (supplier_id, name) VALUES ($1, $2) "
            "ON CONFLICT (supplier_id) DO UPDATE SET name = EXCLUDED.name",
            supplier_id,
            name,
        )
        created = await conn.fetchval(
            _UPSERT_FEED,
            supplier_id,
            feed.kind,
            feed.url,
            feed.interval_s,
            feed.format,
            secret_enc,
            json.dumps(dataclasses.asdict(feed.thresholds)),
        )
        await conn.execute("DELETE FROM supplier_sku_map WHERE supplier_id = $1", supplier_id)
        rows = [(s, m.sku, m.pack_size) for s, m in sorted(feed.sku_map.items())]
        if rows:
            await conn.execute(_INSERT_MAP, supplier_id, *columns(rows, 3))
        await conn.execute(_DROP_UNMAPPED, supplier_id)
    return bool(created)


async def has_secret(conn: Connection, supplier_id: str) -> bool:
    found = await conn.fetchval(
        "SELECT secret_enc IS NOT NULL FROM supplier_feeds WHERE supplier_id = $1", supplier_id
    )
    return bool(found)


async def takes_webhooks(conn: Connection, supplier_id: str) -> bool:
    """A webhook feed with a secret to check signatures with (a poll or file feed that once was
    a webhook keeps its sealed secret, for a switch back, but takes no webhooks)."""
    found = await conn.fetchval(
        "SELECT kind = 'webhook' AND secret_enc IS NOT NULL FROM supplier_feeds "
        "WHERE supplier_id = $1",
        supplier_id,
    )
    return bool(found)


async def supplier_name(conn: Connection, supplier_id: str) -> str | None:
    """The supplier's name; None when PostgreSQL knows no such supplier (feed or not)."""
    found = await conn.fetchval("SELECT name FROM suppliers WHERE supplier_id = $1", supplier_id)
    return None if found is None else str(found)


async def _sku_maps(conn: Connection, ids: list[str]) -> dict[str, dict[str, SkuMapping]]:
    rows = await conn.fetch(
        "SELECT supplier_id, supplier_sku, sku, pack_size FROM supplier_sku_map "
        "WHERE supplier_id = ANY($1::text[])",
        ids,
    )
    out: dict[str, dict[str, SkuMapping]] = {i: {} for i in ids}
    for r in rows:
        out[r["supplier_id"]][r["supplier_sku"]] = SkuMapping(r["sku"], r["pack_size"])
    return out


_FEEDS = """
SELECT f.supplier_id, s.name, f.kind, f.url, f.interval_s, f.format, f.thresholds,
       f.secret_enc IS NOT NULL AS has_secret, f.configured_at
FROM supplier_feeds f JOIN suppliers s USING (supplier_id)
"""


def _feed(r: Any, sku_map: dict[str, SkuMapping]) -> SupplierFeed:
    config = FeedConfig(
        r["kind"], r["url"], r["interval_s"], r["format"], sku_map, thresholds_of(r["thresholds"])
    )
    return SupplierFeed(
        r["supplier_id"], r["name"], config, r["has_secret"], ms(r["configured_at"])
    )


async def _feeds(conn: Connection, where: str, *args: Any) -> list[SupplierFeed]:
    rows = await conn.fetch(_FEEDS + where + " ORDER BY f.supplier_id", *args)
    maps = await _sku_maps(conn, [r["supplier_id"] for r in rows])
    return [_feed(r, maps[r["supplier_id"]]) for r in rows]


async def load_feed(conn: Connection, supplier_id: str) -> SupplierFeed | None:
    found = await _feeds(conn, "WHERE f.supplier_id = $1", supplier_id)
    return found[0] if found else None


async def feed_for(
    conn: Connection, supplier_id: str, supplier_skus: Iterable[str]
) -> SupplierFeed | None:
    """The supplier's feed with only the mappings of these supplier SKUs: a delivery of one
    record does not read a map of 20,000 rows. A SKU no map can hold (SUPPLIER_SKU) is not
    asked for: text such as a NUL would make PostgreSQL refuse the query, and the delivery."""
    row = await conn.fetchrow(_FEEDS + "WHERE f.supplier_id = $1", supplier_id)
    if row is None:
        return None
    mapped = await conn.fetch(
        "SELECT supplier_sku, sku, pack_size FROM supplier_sku_map "
        "WHERE supplier_id = $1 AND supplier_sku = ANY($2::text[])",
        supplier_id,
        sorted({s for s in supplier_skus if SUPPLIER_SKU.fullmatch(s)}),
    )
    return _feed(row, {r["supplier_sku"]: SkuMapping(r["sku"], r["pack_size"]) for r in mapped})


async def feeds_of_kind(conn: Connection, kind: str) -> list[SupplierFeed]:
    """Every supplier whose feed is of this kind (the poller's and the file watcher's list)."""
    return await _feeds(conn, "WHERE f.kind = $1", kind)


async def feed_secret(conn: Connection, supplier_id: str, key: bytes) -> str | None:
    """The supplier's feed secret in clear (to check a signature); None when it has none."""
    sealed = await conn.fetchval(
        "SELECT secret_enc FROM supplier_feeds WHERE supplier_id = $1", supplier_id
    )
    return None if sealed is None else unseal(key, supplier_id, bytes(sealed))


# --- health ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeedHealth:
    supplier_id: str
    kind: str
    now_ms: int  # PostgreSQL's clock, which wrote the times below
    configured_at_ms: int
    last_applied_ms: int | None
    last_as_of_ms: int | None
    last_lag_ms: int | None
    stale_after_s: int
    deliveries: Mapping[str, int]  # by DELIVERY_OUTCOMES
    records: Mapping[str, int]  # by RECORD_OUTCOMES
    quarantine_open: int
    poll_errors: int
    last_poll_ms: int | None  # the last good poll (200 or 304)
    last_poll_error: str
    last_poll_error_ms: int | None

    @property
    def age_s(self) -> float:
        """Seconds since the feed last said something true: a record applied, or a good poll (a
        304 is the supplier saying nothing changed). Before either, since it was configured."""
        heard = [t for t in (self.last_applied_ms, self.last_poll_ms) if t is not None]
        since = max(heard) if heard else self.configured_at_ms
        return max(0.0, (self.now_ms - since) / 1000)

    @property
    def stale(self) -> bool:
        return self.stale_after_s > 0 and self.age_s > self.stale_after_s


_HEALTH = """
SELECT f.*, (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now_ms,
       (SELECT count(*) FROM feed_quarantine q
        WHERE q.supplier_id = f.supplier_id AND q.status = 'open') AS quarantine_open
FROM supplier_feeds f
"""


def _health(r: Any) -> FeedHealth:
    return FeedHealth(
        supplier_id=r["supplier_id"],
        kind=r["kind"],
        now_ms=int(r["now_ms"]),
        configured_at_ms=ms(r["configured_at"]),
        last_applied_ms=_ms_or_none(r["last_applied_at"]),
        last_as_of_ms=_ms_or_none(r["last_as_of"]),
        last_lag_ms=r["last_lag_ms"],
        stale_after_s=thresholds_of(r["thresholds"]).stale_after_s,
        deliveries={o: int(r[f"deliveries_{o}"]) for o in DELIVERY_OUTCOMES},
        records={o: int(r[f"records_{o}"]) for o in RECORD_OUTCOMES},
        quarantine_open=int(r["quarantine_open"]),
        poll_errors=int(r["poll_errors"]),
        last_poll_ms=_ms_or_none(r["last_poll_at"]),
        last_poll_error=r["last_poll_error"] or "",
        last_poll_error_ms=_ms_or_none(r["last_poll_error_at"]),
    )


async def health(conn: Connection, supplier_id: str) -> FeedHealth | None:
    row = await conn.fetchrow(_HEALTH + "WHERE f.supplier_id = $1", supplier_id)
    return None if row is None else _health(row)


async def all_health(conn: Connection, limit: int = 500) -> list[FeedHealth]:
    rows = await conn.fetch(_HEALTH + "ORDER BY f.supplier_id LIMIT $1", limit)
    return [_health(r) for r in rows]


_QUARANTINE = """
SELECT delivery_id, line, supplier_sku, on_hand, as_of, reason, created_at FROM feed_quarantine
WHERE supplier_id = $1 AND status = 'open' ORDER BY id DESC LIMIT $2
"""


async def open_quarantine(conn: Connection, supplier_id: str, limit: int = 50) -> list[Any]:
    """The newest records held back for review (asyncpg records)."""
    return list(await conn.fetch(_QUARANTINE, supplier_id, limit))


# --- the poller's side -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PollState:
    etag: str | None
    last_modified: str | None
    errors: int
    last_error: str
    last_poll_ms: int | None  # the last good poll


async def record_poll(
    conn: Connection,
    supplier_id: str,
    *,
    error: str = "",
    etag: str | None = None,
    last_modified: str | None = None,
) -> None:
    """One poll's outcome: error '' keeps the validators for the next conditional GET (None
    keeps the stored one) and the time (last_poll_at: the last good poll, which keeps the feed
    fresh); an error is counted for health and alerts, with its text and time."""
    if error:
        await conn.execute(
            "UPDATE supplier_feeds SET poll_errors = poll_errors + 1, "
            "last_poll_error = $2, last_poll_error_at = now() WHERE supplier_id = $1",
            supplier_id,
            error[:500],
        )
        return
    await conn.execute(
        "UPDATE supplier_feeds SET last_poll_at = now(), "
        "poll_etag = coalesce($2, poll_etag), "
        "poll_last_modified = coalesce($3, poll_last_modified) WHERE supplier_id = $1",
        supplier_id,
        etag,
        last_modified,
    )


async def poll_state(conn: Connection, supplier_id: str) -> PollState:
    """The poller's validators and error count (all empty for a supplier without a feed)."""
    r = await conn.fetchrow(
        "SELECT poll_etag, poll_last_modified, poll_errors, last_poll_error, last_poll_at "
        "FROM supplier_feeds WHERE supplier_id = $1",
        supplier_id,
    )
    if r is None:
        return PollState(None, None, 0, "", None)
    return PollState(
        r["poll_etag"],
        r["poll_last_modified"],
        int(r["poll_errors"]),
        r["last_poll_error"] or "",
        _ms_or_none(r["last_poll_at"]),
    )


# --- a sale's view of its feeds ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SaleFeedStatus:
    """What shoppers are told: how current the stock is, and whether a feed is behind."""

    fed: bool  # at least one supplier of the sale has a feed
    stock_as_of_ms: int | None  # the oldest newest-level of the sale's fed (sku, supplier)s
    sku_as_of_ms: Mapping[str, int | None]  # the same per sku (None: a fed supplier has none)
    updating: bool  # a supplier of the sale is stale


_SALE_FEEDS = """
SELECT m.sku, f.supplier_id, f.thresholds, l.as_of,
       coalesce(greatest(f.last_applied_at, f.last_poll_at), f.configured_at) AS heard_at,
       clock_timestamp() AS now
FROM supplier_skus m JOIN supplier_feeds f USING (supplier_id)
LEFT JOIN feed_levels l ON l.supplier_id = m.supplier_id AND l.sku = m.sku
WHERE m.sale_id = $1
"""


def _oldest(values: list[int | None]) -> int | None:
    return None if not values or None in values else min(v for v in values if v is not None)


async def sale_feed_status(conn: Connection, sale_id: str) -> SaleFeedStatus:
    rows = await conn.fetch(_SALE_FEEDS, sale_id)
    per_sku: dict[str, list[int | None]] = {}
    updating = False
    for r in rows:
        per_sku.setdefault(r["sku"], []).append(_ms_or_none(r["as_of"]))
        stale_after_s = thresholds_of(r["thresholds"]).stale_after_s
        age_s = (r["now"] - r["heard_at"]).total_seconds()  # as FeedHealth.age_s
        updating = updating or (stale_after_s > 0 and age_s > stale_after_s)
    sku_as_of = {sku: _oldest(values) for sku, values in per_sku.items()}
    return SaleFeedStatus(
        bool(rows), _oldest(list(sku_as_of.values())) if sku_as_of else None, sku_as_of, updating
    )
