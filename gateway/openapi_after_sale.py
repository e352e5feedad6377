"""The OpenAPI part of the after-sale routes: returns, the settlement, and the
sale's credit policy (gateway/returns.py, gateway/settlement.py)."""

from __future__ import annotations

from typing import Any

ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
COUNT = {"type": "integer", "minimum": 0, "maximum": 10**12}
PROBLEM = {"$ref": "#/components/schemas/Problem"}

CREDIT_POLICY = {
    "description": "the retailer's credit when a reroute or a secondary supplier lowers a "
    "line's margin: none (the default), full, or a share of the lost margin; rounded down",
    "oneOf": [
        {"enum": ["none", "full"]},
        {
            "type": "object",
            "properties": {"share": {"type": "number", "minimum": 0, "maximum": 1}},
            "required": ["share"],
            "additionalProperties": False,
        },
    ],
}
RETURN = {
    "type": "object",
    "properties": {
        "lines": {
            "type": "array",
            "minItems": 1,
            "maxItems": 100,
            "items": {
                "type": "object",
                "properties": {
                    "sku": ID,
                    "qty": {**COUNT, "minimum": 1},
                    "condition": {"enum": ["restockable", "damaged"]},
                },
                "required": ["sku", "qty", "condition"],
                "additionalProperties": False,
            },
        },
        "reason": {"type": "string", "maxLength": 500},
    },
    "required": ["lines"],
    "additionalProperties": False,
}


def _admin_op(summary: str, ok: int, params: list[str]) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": [{"name": p, "in": "path", "required": True, "schema": ID} for p in params],
        "responses": {
            str(ok): {"description": "success", "content": {"application/json": {}}},
            "default": {
                "description": "a problem",
                "content": {"application/problem+json": {"schema": PROBLEM}},
            },
        },
        "security": [{"adminKey": []}],
    }


def after_sale_paths() -> dict[str, Any]:
    returns = _admin_op(
        "Record a return (201; a replayed Idempotency-Key: the same answer; "
        "409 RETURN_EXCEEDS_ORDER, RETURN_NOT_SHIPPED, ORDER_NOT_CAPTURED, ORDER_BUSY; "
        "503 UNAVAILABLE: replay the same request to finish the restock)",
        201,
        ["order"],
    )
    returns["parameters"].append(
        {"name": "Idempotency-Key", "in": "header", "required": True, "schema": ID}
    )
    returns["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Return"}}},
    }
    settlement = _admin_op("A sale's settlement: money, units, credits", 200, ["sale"])
    return {
        "/v1/admin/orders/{order}/returns": {"post": returns},
        "/v1/admin/sales/{sale}/settlement": {"get": settlement},
    }
