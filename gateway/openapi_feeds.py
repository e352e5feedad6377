"""The OpenAPI pieces of the supplier feed routes (gateway/suppliers.py, gateway/feeds.py,
gateway/feed_upload.py)."""

from __future__ import annotations

from typing import Any

from flashsale.gateway.feed_turns import MAX_QUEUED, WAIT_S
from flashsale.gateway.feed_upload import FORMAT_OF_MEDIA

ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
TIME = {"type": "string", "format": "date-time"}
COUNT = {"type": "integer", "minimum": 0, "maximum": 10**12}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        doc["required"] = required
    return doc


PCT = {"type": "integer", "minimum": 0, "maximum": 100}
SUPPLIER_FEED = _obj(
    {
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "reports_shipments": {
            "type": "boolean",
            "description": "the supplier reports shipments (POST /v1/shipments/{supplier}); "
            "absent on a replace: the stored flag stays",
        },
        "feed": _obj(
            {
                "kind": {"enum": ["webhook", "poll", "file"]},
                "secret": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 512,
                    "description": "never shown again; >= 32 bytes outside dev mode; absent "
                    "on a replace: the stored one stays",
                },
                "url": {"type": "string", "format": "uri", "maxLength": 2048},
                "interval_s": {"type": "integer", "minimum": 1, "maximum": 86400},
                "format": {"enum": ["csv", "json", "xml"]},
                "sku_map": {
                    "type": "array",
                    "maxItems": 20000,
                    "items": _obj(
                        {
                            "supplier_sku": {"type": "string", "minLength": 1, "maxLength": 128},
                            "sku": ID,
                            "pack_size": {"type": "integer", "minimum": 1, "maximum": 100000},
                        },
                        ["supplier_sku", "sku"],
                    ),
                },
                "thresholds": _obj(
                    {
                        "max_units": {"type": "integer", "minimum": 1, "maximum": 10**12},
                        "max_drop_pct": PCT,
                        "max_spike_pct": {"type": "integer", "minimum": 0, "maximum": 1000000},
                        "min_base_units": COUNT,
                        "stale_after_s": {"type": "integer", "minimum": 0, "maximum": 2592000},
                        "max_future_s": {"type": "integer", "minimum": 0, "maximum": 86400},
                    }
                ),
            },
            ["kind"],
        ),
    },
    ["name", "feed"],
)
DELIVERY = _obj(
    {
        "delivery_id": ID,
        "as_of": TIME,
        "items": {
            "type": "array",
            "maxItems": 10000,
            "items": _obj(
                {
                    "supplier_sku": {"type": "string", "minLength": 1, "maxLength": 128},
                    "on_hand": {"description": "an integer; anything else is quarantined"},
                    "as_of": TIME,
                },
                ["supplier_sku", "on_hand"],
            ),
        },
    },
    ["delivery_id", "as_of", "items"],
)


WEBHOOK_NOTES = (
    "Only a supplier whose feed kind is `webhook` takes deliveries (any other: 404 NOT_FOUND). "
    "A gateway worker applies one delivery per supplier at a time and queues the others "
    f"without a database connection: more than {MAX_QUEUED} waiting, or one waiting more than "
    f"{WAIT_S:g} s, is answered 503 UNAVAILABLE with Retry-After (nothing stored; send again)."
)
FILE_BODY = {
    "required": True,
    "content": {media: {"schema": {"type": "string"}} for media in FORMAT_OF_MEDIA},
}
FILE_NOTES = (
    "The body streams into the supplier's drop folder (FLASHSALE_FEED_DIR/<supplier>/) and the "
    "reconciler applies it; 202 {supplier, file, bytes, format, sha256, deliveries, status}. "
    "The media type names the format; a supplier without a feed: 404; an empty body: 422; past "
    "FLASHSALE_FEED_FILE_MAX_BYTES: 413."
)


def feed_schemes(window_s: int) -> dict[str, Any]:
    """The webhook's two signature headers, as security schemes."""
    return {
        "feedSignature": {
            "type": "apiKey",
            "in": "header",
            "name": "X-Flashsale-Signature",
            "description": 'v1=<hex HMAC-SHA256 of "{timestamp}.{body}" with the '
            "supplier's feed secret>",
        },
        "feedTimestamp": {
            "type": "apiKey",
            "in": "header",
            "name": "X-Flashsale-Timestamp",
            "description": f"unix seconds, within {window_s} s of the gateway's clock",
        },
    }


SHIPMENT = _obj(
    {
        "shipment_id": ID,
        "order_id": ID,
        "carrier": {"type": "string", "minLength": 1, "maxLength": 200},
        "tracking_id": {"type": "string", "minLength": 1, "maxLength": 200},
        "shipped_at": TIME,
        "lines": {
            "type": "array",
            "minItems": 1,
            "maxItems": 200,
            "items": _obj(
                {"sku": ID, "qty": {"type": "integer", "minimum": 1, "maximum": 1000000}},
                ["sku", "qty"],
            ),
        },
    },
    ["shipment_id", "order_id", "carrier", "tracking_id", "shipped_at", "lines"],
)
PROMISED_DATE = _obj(
    {
        "promised_date": {"type": "string", "format": "date"},
        "reason": {"type": "string", "minLength": 1, "maxLength": 200},
    },
    ["promised_date", "reason"],
)
