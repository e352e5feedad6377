"""The OpenAPI document of the routes gateway/app.py serves (a test keeps the two in step)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from flashsale.engine.settings import Settings
from flashsale.gateway.openapi_after_sale import CREDIT_POLICY, RETURN, after_sale_paths
from flashsale.gateway.openapi_changes import SCHEMAS as CHANGE_SCHEMAS
from flashsale.gateway.openapi_changes import change_paths
from flashsale.gateway.openapi_feeds import (
    DELIVERY,
    FILE_BODY,
    FILE_NOTES,
    PROMISED_DATE,
    SHIPMENT,
    SUPPLIER_FEED,
    WEBHOOK_NOTES,
    feed_schemes,
)

ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
TIME = {"type": "string", "format": "date-time"}
COUNT = {"type": "integer", "minimum": 0, "maximum": 10**12}
PROBLEM = {"$ref": "#/components/schemas/Problem"}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        doc["required"] = required
    return doc


def _param(name: str, where: str = "path") -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path", "schema": ID}


def _op(
    summary: str,
    ok: int | tuple[int, ...],
    params: list[str],
    body: str | None = None,
    *,
    admin: bool = False,
) -> dict[str, Any]:
    success = {"description": "success", "content": {"application/json": {}}}
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": [_param(p) for p in params],
        "responses": {
            **{str(code): success for code in (ok if isinstance(ok, tuple) else (ok,))},
            "default": {
                "description": "a problem",
                "content": {"application/problem+json": {"schema": PROBLEM}},
            },
        },
    }
    if body:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
        }
    if admin:
        op["security"] = [{"adminKey": []}]
    return op


SUPPLIER = _obj(
    {
        "id": ID,
        "stock": COUNT,
        "cost_minor": COUNT,
        "priority": {"type": "integer", "minimum": -1000, "maximum": 1000},
    },
    ["id", "stock"],
)
ITEM = _obj(
    {
        "sku": ID,
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "price_minor": COUNT,
        "suppliers": {"type": "array", "items": SUPPLIER, "minItems": 1, "maxItems": 50},
    },
    ["sku", "price_minor", "suppliers"],
)
SALE = _obj(
    {
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "starts_at": TIME,
        "ends_at": {"oneOf": [TIME, {"type": "null"}]},
        "hold_ttl_s": {"type": "integer", "minimum": 1, "maximum": 86400},
        "per_user_limit": COUNT,
        "waiting_room": _obj(
            {
                "enabled": {"type": "boolean"},
                "admit_rate_per_s": {"type": "integer", "minimum": 1, "maximum": 10**12},
                "max_active": {"type": "integer", "minimum": 1, "maximum": 10**12},
                "token_ttl_s": {"type": "integer", "minimum": 10, "maximum": 86400},
            },
            ["enabled"],
        ),
        "rate_limit": _obj(
            {
                n: {"type": ["integer", "null"], "minimum": 0}
                for n in ("per_client_per_s", "burst", "per_sale_per_s")
            }
        ),
        "items": {"type": "array", "items": ITEM, "minItems": 1, "maxItems": 1000},
        "return_url": {
            "type": ["string", "null"],
            "format": "uri-template",
            "maxLength": 2048,
            "description": "the shop's checkout for a hold: https (http for loopback only), "
            "{hold_id} exactly once",
        },
        "credit_policy": CREDIT_POLICY,
    },
    ["name", "starts_at", "ends_at", "hold_ttl_s", "per_user_limit", "items"],
)


def _checkout(settings: Settings) -> dict[str, Any]:
    qty = {"type": "integer", "minimum": 1, "maximum": settings.max_line_qty}
    line = _obj({"sku": ID, "qty": qty}, ["sku", "qty"])
    lines = {"type": "array", "minItems": 1, "maxItems": settings.max_cart_lines, "items": line}
    return _obj({"customer_id": ID, "items": lines}, ["items"])


CONFIRM = _obj(
    {
        "payment": _obj(
            {"method": ID, "token": {"type": "string", "minLength": 1, "maxLength": 256}},
            ["method", "token"],
        )
    },
    ["payment"],
)
PROBLEM_SCHEMA = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "instance": {"type": "string"},
    },
    "required": ["type", "title", "status", "detail", "code"],
}
IDEM = {"name": "Idempotency-Key", "in": "header", "required": False, "schema": ID}
DECISION = {
    "oneOf": [
        _obj(
            {"decision": {"const": "wait"}, "promised_date": {"type": "string", "format": "date"}},
            ["decision", "promised_date"],
        ),
        _obj({"decision": {"const": "cancel"}}, ["decision"]),
        _obj(
            {"decision": {"const": "secondary"}, "supplier_id": ID, "cost_minor": COUNT},
            ["decision", "supplier_id"],
        ),
    ]
}


Security = list[dict[str, list[str]]]
CUSTOMER: Security = [{"customerToken": []}]  # outside FLASHSALE_ENV=dev, every customer route
OWNER: Security = [{"customerToken": []}, {"adminKey": []}]  # the customer, or the admin


def _customer(op: dict[str, Any], who: Security = CUSTOMER) -> dict[str, Any]:
    op["security"] = who
    return op


def _console_paths() -> dict[str, Any]:
    """The operator console's page and the admin routes it added (gateway/console.py)."""
    page = _op("The operator console (HTML; it asks for the admin key)", 200, [])
    page["responses"]["200"] = {"description": "the page", "content": {"text/html": {}}}
    asset = _op("The console's script and stylesheet", 200, ["name"])
    dead = _op("Orders stopped at a dead-lettered saga step (dead=true)", 200, [], admin=True)
    dead["parameters"] = [
        {"name": "dead", "in": "query", "required": True, "schema": {"const": "true"}},
        {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer"}},
    ]
    retry = _op("Run the dead-lettered step again (202; 409 NOT_DEAD)", 202, ["order"], admin=True)
    return {
        "/admin/": {"get": page},
        "/admin/assets/{name}": {"get": asset},
        "/v1/admin/sales": {"get": _op("The sales, newest first", 200, [], admin=True)},
        "/v1/admin/orders": {"get": dead},
        "/v1/admin/orders/{order}/retry": {"post": retry},
    }


def document(settings: Settings) -> dict[str, Any]:
    sale, hold = "/v1/sales/{sale}", "/v1/sales/{sale}/holds/{hold}"
    admin = "/v1/admin/sales/{sale}"
    create_hold = _op("Place a hold (checkout)", 201, ["sale"], "Checkout")
    create_hold["parameters"].append(IDEM)
    # The admission token too, on sales with a waiting room.
    create_hold["security"] = [
        {"customerToken": []},
        {"customerToken": [], "admissionToken": []},
    ]
    join = _op("Join the waiting room (201; 200: the same ticket)", (200, 201), ["sale"], "Join")
    join["requestBody"]["required"] = False
    backorders = _op("Backorders in one status (default open)", 200, [], admin=True)
    backorders["parameters"] = [
        {"name": "status", "in": "query", "required": False, "schema": {"type": "string"}}
    ]
    decide = _op(
        "The retailer's decision on a backorder (202: the saga carries it out)",
        202,
        ["backorder"],
        "BackorderDecision",
        admin=True,
    )
    decide["parameters"] = [
        {"name": "backorder", "in": "path", "required": True, "schema": {"type": "integer"}}
    ]
    feed_hook = _op(
        "A supplier's signed stock delivery (202 with counts; 200: a delivery id seen before)",
        (200, 202),
        ["supplier"],
        "Delivery",
    )
    feed_hook["security"] = [{"feedSignature": [], "feedTimestamp": []}]
    feed_hook["description"] = WEBHOOK_NOTES
    shipment = _op(
        "A supplier's signed shipment (201; 200: a shipment id seen before)",
        (200, 201),
        ["supplier"],
        "Shipment",
    )
    shipment["security"] = [{"feedSignature": [], "feedTimestamp": []}]
    promised = _op(
        "Move a waiting backorder's promised date (the customer is told)",
        200,
        ["backorder"],
        "PromisedDate",
        admin=True,
    )
    promised["parameters"] = decide["parameters"]
    feed_file = _op("A stock file for the supplier's feed (202: queued)", 202, ["supplier"])
    feed_file.update(description=FILE_NOTES, requestBody=FILE_BODY, security=[{"adminKey": []}])
    page = _op("The waiting-room page (HTML)", 200, ["sale"])
    receipt = _op("The fairness receipt of the pre-queue draw (409 before it)", 200, ["sale"])
    receipt["parameters"] += [
        _param("ticket", "query"),
        {"name": "include", "in": "query", "required": False, "schema": {"const": "order"}},
    ]
    page["responses"]["200"] = {"description": "the page", "content": {"text/html": {}}}
    paths: dict[str, Any] = {
        admin: {
            "put": _op(
                "Create (201) or replace (200) a sale", (200, 201), ["sale"], "Sale", admin=True
            ),
            "get": _op("Live state of a sale", 200, ["sale"], admin=True),
        },
        **{
            f"{admin}/{action}": {
                "post": _op(f"{action.title()} the sale", 200, ["sale"], admin=True)
            }
            for action in ("open", "pause", "close")
        },
        sale: {"get": _op("A sale with soft availability levels", 200, ["sale"])},
        f"{sale}/holds": {"post": create_hold},
        f"{sale}/queue": {
            "post": _customer(join),
            "get": _op("The room's public figures and shuffle commitment", 200, ["sale"]),
        },
        f"{sale}/queue/{{ticket}}": {"get": _op("A ticket's status", 200, ["sale", "ticket"])},
        f"{sale}/fairness": {"get": receipt},
        "/sales/{sale}/waiting-room": {"get": page},
        hold: {"get": _customer(_op("A hold and its status", 200, ["sale", "hold"]), OWNER)},
        f"{hold}/confirm": {
            "post": _customer(_op("Confirm (pay) a hold", 200, ["sale", "hold"], "Confirm"), OWNER)
        },
        f"{hold}/release": {
            "post": _customer(_op("Give the units back", 200, ["sale", "hold"]), OWNER)
        },
        f"{hold}/extend": {
            "post": _customer(_op("Extend the hold once", 200, ["sale", "hold"]), OWNER)
        },
        "/v1/orders/{order}": {
            "get": _customer(_op("The customer's own order", 200, ["order"]), OWNER)
        },
        "/v1/admin/orders/{order}": {
            "get": _op("An order with payment, suppliers and margins", 200, ["order"], admin=True)
        },
        **_console_paths(),
        **after_sale_paths(),
        **change_paths(),
        "/v1/admin/backorders": {"get": backorders},
        "/v1/admin/backorders/{backorder}/decision": {"post": decide},
        "/v1/admin/suppliers/{supplier}": {
            "put": _op(
                "Create (201) or replace (200) a supplier's stock feed",
                (200, 201),
                ["supplier"],
                "SupplierFeed",
                admin=True,
            ),
            "get": _op("A supplier's feed, no secret, and health", 200, ["supplier"], admin=True),
        },
        "/v1/admin/suppliers/{supplier}/feed/file": {"put": feed_file},
        "/v1/feeds/{supplier}": {"post": feed_hook},
        "/v1/shipments/{supplier}": {"post": shipment},
        "/v1/admin/backorders/{backorder}/promised-date": {"post": promised},
        "/healthz": {"get": _op("Liveness, no I/O", 200, [])},
        "/readyz": {"get": _op("Redis and PostgreSQL reachable", 200, [])},
        "/metrics": {"get": _op("Prometheus text", 200, [])},
        "/openapi.json": {"get": _op("This document", 200, [])},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "flashsale", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": {
                "Sale": SALE,
                "Checkout": _checkout(settings),
                "Confirm": CONFIRM,
                "Join": _obj({"customer_id": ID}),
                "BackorderDecision": DECISION,
                "Return": RETURN,
                "SupplierFeed": SUPPLIER_FEED,
                "Delivery": DELIVERY,
                "Shipment": SHIPMENT,
                "PromisedDate": PROMISED_DATE,
                "Problem": PROBLEM_SCHEMA,
                **CHANGE_SCHEMAS,
            },
            "securitySchemes": {
                "adminKey": {"type": "http", "scheme": "bearer"},
                "customerToken": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Customer-Token",
                    "description": "a JWT the shop signs: sub (the customer), exp, aud",
                },
                "admissionToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                **feed_schemes(settings.feed_signature_window_s),
            },
        },
    }


def openapi_body(settings: Settings) -> bytes:
    return orjson.dumps(document(settings))


async def openapi_json(request: Request) -> Response:
    return Response(request.app.state.openapi, media_type="application/json")
