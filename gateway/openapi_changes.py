"""The OpenAPI part of the cancel and refund routes (gateway/order_changes.py)."""

from __future__ import annotations

from typing import Any

ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
PROBLEM = {"$ref": "#/components/schemas/Problem"}
LINES = {
    "type": "array",
    "minItems": 1,
    "maxItems": 100,
    "description": "each sku once; its units are taken from the order's lines of that sku",
    "items": {
        "type": "object",
        "properties": {"sku": ID, "qty": {"type": "integer", "minimum": 1, "maximum": 1000000}},
        "required": ["sku", "qty"],
        "additionalProperties": False,
    },
}
REASON = {"type": "string", "maxLength": 500}
CANCEL = {
    "type": "object",
    "description": "{} (or no body): every unit left on the order; lines: those units",
    "properties": {"lines": LINES, "reason": REASON},
    "additionalProperties": False,
}
REFUND = {
    "type": "object",
    "description": "amount_minor, or lines (qty x the line's unit price); never both",
    "properties": {
        "amount_minor": {"type": "integer", "minimum": 1, "maximum": 10**12},
        "lines": LINES,
        "reason": {**REASON, "minLength": 1},
    },
    "required": ["reason"],
    "additionalProperties": False,
}
SCHEMAS = {"Cancel": CANCEL, "Refund": REFUND}


def _op(summary: str, ok: int, body: str | None, key: str | None) -> dict[str, Any]:
    params: list[dict[str, Any]] = [{"name": "order", "in": "path", "required": True, "schema": ID}]
    if key is not None:
        params.append(
            {"name": "Idempotency-Key", "in": "header", "required": key == "required", "schema": ID}
        )
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": params,
        "responses": {
            str(ok): {"description": "success", "content": {"application/json": {}}},
            "default": {
                "description": "a problem",
                "content": {"application/problem+json": {"schema": PROBLEM}},
            },
        },
        "security": [{"adminKey": []}],
    }
    if body is not None:
        schema = {"$ref": f"#/components/schemas/{body}"}
        op["requestBody"] = {
            "required": body == "Refund",
            "content": {"application/json": {"schema": schema}},
        }
    return op


def change_paths() -> dict[str, Any]:
    customer = _op(
        "The customer cancels before the capture (202 with the change; 409 ORDER_CAPTURED, "
        "ORDER_FINAL, LINE_QTY_EXCEEDED; another's order: 404)",
        202,
        "Cancel",
        "optional",
    )
    customer["security"] = [{"customerToken": []}, {"adminKey": []}]
    operator = _op(
        "An operator cancels any order not final, whole or by line (202; 409 ORDER_FINAL, "
        "LINE_SHIPPED, LINE_QTY_EXCEEDED, NOTHING_TO_CANCEL)",
        202,
        "Cancel",
        "optional",
    )
    refund = _op(
        "An operator's refund by amount or by line (202; 409 REFUND_EXCEEDS_CAPTURED)",
        202,
        "Refund",
        "required",
    )
    listed = _op(
        "The cancels and refunds asked of the order, with outcomes (no query parameters: 422)",
        200,
        None,
        None,
    )
    return {
        "/v1/orders/{order}/cancel": {"post": customer},
        "/v1/admin/orders/{order}/cancel": {"post": operator},
        "/v1/admin/orders/{order}/refunds": {"post": refund},
        "/v1/admin/orders/{order}/changes": {"get": listed},
    }
