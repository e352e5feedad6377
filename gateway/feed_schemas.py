"""Strict parsing of the supplier feed bodies: the admin's supplier config and a webhook delivery.
A malformed body is a 422 problem; a record whose VALUE is wrong is the feed's business
(quarantined or counted), not the body's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flashsale.engine.errors import InvalidInput
from flashsale.engine.feeds import (
    FORMATS,
    KINDS,
    MAX_DELIVERY_RECORDS,
    MAX_SKU_MAP_ROWS,
    SUPPLIER_SKU,
    Delivery,
    FeedConfig,
    FeedRecord,
    SkuMapping,
    Thresholds,
    time_ms,
)
from flashsale.engine.settings import KNOWN_DEFAULTS, MIN_SECRET_BYTES
from flashsale.gateway.problems import invalid
from flashsale.gateway.schemas import parse_path_id as _id

MAX_SECRET_BYTES = 512
THRESHOLD_LIMITS = {  # field -> (low, high)
    "max_units": (1, 10**12),
    "max_drop_pct": (0, 100),
    "max_spike_pct": (0, 1_000_000),
    "min_base_units": (0, 10**12),
    "stale_after_s": (0, 30 * 86_400),
    "max_future_s": (0, 86_400),
}


def _fields(doc: Any, where: str, required: set[str], optional: set[str] | None = None) -> None:
    if not isinstance(doc, dict):
        raise invalid(f"{where} must be an object")
    missing = required - doc.keys()
    unknown = doc.keys() - required - (optional or set())
    if missing:
        raise invalid(f"{where} misses {', '.join(sorted(missing))}")
    if unknown:
        raise invalid(f"{where} has unknown fields {', '.join(sorted(unknown))}")


def _int(value: Any, where: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise invalid(f"{where} must be an integer from {low} to {high}")
    return value


@dataclass(frozen=True, slots=True)
class SupplierBody:
    name: str
    feed: FeedConfig
    secret: str | None  # None: keep the stored one
    reports_shipments: bool | None = None  # None: keep the stored flag


def parse_supplier(doc: dict[str, Any], *, dev: bool) -> SupplierBody:
    _fields(doc, "body", {"name", "feed"}, {"reports_shipments"})
    reports = doc.get("reports_shipments")
    if reports is not None and not isinstance(reports, bool):
        raise invalid("reports_shipments must be true or false")
    name = doc["name"]
    if not isinstance(name, str) or not 1 <= len(name) <= 200 or not name.isprintable():
        raise invalid("name must be a printable string of 1 to 200 characters")
    feed = doc["feed"]
    optional = {"secret", "url", "interval_s", "format", "sku_map", "thresholds"}
    _fields(feed, "feed", {"kind"}, optional)
    kind = feed["kind"]
    if kind not in KINDS:
        raise invalid(f"feed.kind must be one of {', '.join(KINDS)}")
    secret = _secret(feed.get("secret"), dev=dev)
    if kind == "webhook" and "secret" in feed and secret is None:
        raise invalid("feed.secret must be a string")
    url, interval_s = _poll(feed, kind)
    fmt = feed.get("format", "json")
    if fmt not in FORMATS:
        raise invalid(f"feed.format must be one of {', '.join(FORMATS)}")
    config = FeedConfig(
        kind, url, interval_s, fmt, _sku_map(feed.get("sku_map", [])), _thresholds(feed)
    )
    return SupplierBody(name, config, secret, reports)


def _secret(value: Any, *, dev: bool) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value.encode()) > MAX_SECRET_BYTES:
        raise invalid(f"feed.secret must be a string of 1 to {MAX_SECRET_BYTES} bytes")
    if not dev and (len(value.encode()) < MIN_SECRET_BYTES or value in KNOWN_DEFAULTS):
        raise invalid(f"feed.secret must be at least {MIN_SECRET_BYTES} bytes, not a default")
    return value


def _poll(feed: dict[str, Any], kind: str) -> tuple[str, int]:
    if kind != "poll":
        if feed.get("url") or feed.get("interval_s"):
            raise invalid("feed.url and feed.interval_s belong to a poll feed")
        return "", 0
    url = feed.get("url")
    if not isinstance(url, str) or len(url) > 2048:
        raise invalid("feed.url must be an absolute http(s) URL of at most 2048 characters")
    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname
    except ValueError:  # a bracketed host that is no address, a port out of range
        scheme, host = "", None
    if scheme not in ("http", "https") or not host:
        raise invalid("feed.url must be an absolute http(s) URL of at most 2048 characters")
    return url, _int(feed.get("interval_s", 60), "feed.interval_s", 1, 86_400)


def _sku_map(rows: Any) -> dict[str, SkuMapping]:
    if not isinstance(rows, list) or len(rows) > MAX_SKU_MAP_ROWS:
        raise invalid(f"feed.sku_map must be a list of at most {MAX_SKU_MAP_ROWS} rows")
    out: dict[str, SkuMapping] = {}
    skus: set[str] = set()
    for i, row in enumerate(rows):
        where = f"feed.sku_map[{i}]"
        _fields(row, where, {"supplier_sku", "sku"}, {"pack_size"})
        supplier_sku = row["supplier_sku"]
        if not isinstance(supplier_sku, str) or not SUPPLIER_SKU.fullmatch(supplier_sku):
            raise invalid(f"{where}.supplier_sku must be 1-128 printable ASCII characters")
        sku = _id(row["sku"], f"{where}.sku")
        if supplier_sku in out:
            raise invalid(f"{where}.supplier_sku {supplier_sku} appears twice")
        if sku in skus:
            raise invalid(f"{where}.sku {sku} appears twice (one supplier SKU per sku)")
        skus.add(sku)
        pack = _int(row.get("pack_size", 1), f"{where}.pack_size", 1, 100_000)
        out[supplier_sku] = SkuMapping(sku, pack)
    return out


def _thresholds(feed: dict[str, Any]) -> Thresholds:
    doc = feed.get("thresholds", {})
    _fields(doc, "feed.thresholds", set(), set(THRESHOLD_LIMITS))
    values = {
        name: _int(doc[name], f"feed.thresholds.{name}", low, high)
        for name, (low, high) in THRESHOLD_LIMITS.items()
        if name in doc
    }
    return Thresholds(**values)


def parse_delivery(supplier_id: str, doc: dict[str, Any]) -> Delivery:
    """A webhook body: {delivery_id, as_of, items [{supplier_sku, on_hand, as_of?}]}."""
    _fields(doc, "body", {"delivery_id", "as_of", "items"})
    delivery_id = _id(doc["delivery_id"], "delivery_id")
    try:
        time_ms(doc["as_of"], "as_of")
    except InvalidInput as exc:
        raise invalid(str(exc)) from None
    items = doc["items"]
    if not isinstance(items, list) or len(items) > MAX_DELIVERY_RECORDS:
        raise invalid(f"items must be a list of at most {MAX_DELIVERY_RECORDS} records")
    records = []
    for i, item in enumerate(items):
        _fields(item, f"items[{i}]", {"supplier_sku", "on_hand"}, {"as_of"})
        supplier_sku = item["supplier_sku"]
        if not isinstance(supplier_sku, str) or not 1 <= len(supplier_sku) <= 128:
            raise invalid(f"items[{i}].supplier_sku must be a string of 1 to 128 characters")
        as_of = item.get("as_of")
        if as_of is not None and not isinstance(as_of, str):
            raise invalid(f"items[{i}].as_of must be an ISO 8601 string")
        records.append(FeedRecord(supplier_sku, item["on_hand"], as_of, i))
    return Delivery(supplier_id, delivery_id, "webhook", doc["as_of"], records)
