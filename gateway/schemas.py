"""Strict parsing of request bodies into engine values; anything unexpected is a 422 problem."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Set as AbstractSet
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from flashsale.engine.errors import InvalidInput
from flashsale.engine.keys import ID_PATTERN
from flashsale.engine.sale import (
    ItemConfig,
    RateLimitConfig,
    SaleRecord,
    SupplierStockConfig,
    WaitingRoomConfig,
)
from flashsale.engine.validation import check_name, check_return_url
from flashsale.gateway.problems import invalid

MAX_INT = 10**12


def _fields(
    doc: Any, where: str, required: AbstractSet[str], optional: AbstractSet[str] = frozenset()
) -> None:
    if not isinstance(doc, dict):
        raise invalid(f"{where} must be an object")
    missing = required - doc.keys()
    unknown = doc.keys() - required - optional
    if missing:
        raise invalid(f"{where} misses {', '.join(sorted(missing))}")
    if unknown:
        raise invalid(f"{where} has unknown fields {', '.join(sorted(unknown))}")


def _id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise invalid(f"{where} must be 1-64 characters of A-Z a-z 0-9 _ -")
    return value


def _int(value: Any, where: str, low: int = 0, high: int = MAX_INT) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise invalid(f"{where} must be an integer from {low} to {high}")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(f"{where} must be true or false")
    return value


def _time_ms(value: Any, where: str) -> int:
    if not isinstance(value, str) or len(value) > 40:
        raise invalid(f"{where} must be an ISO-8601 time with a zone, e.g. 2026-11-21T18:00:00Z")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise invalid(f"{where} is not an ISO-8601 time") from None
    if moment.tzinfo is None:
        raise invalid(f"{where} needs a time zone (use Z for UTC)")
    return int(moment.timestamp() * 1000)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_checkout(doc: dict[str, Any]) -> tuple[str | None, list[tuple[str, int]]]:
    """(the body's customer_id, which may be left out: the token says who; the cart)."""
    _fields(doc, "body", {"items"}, {"customer_id"})
    customer = optional_customer(doc)
    items = doc["items"]
    if not isinstance(items, list) or not items:
        raise invalid("items must be a non-empty list")
    cart = []
    for i, line in enumerate(items):
        _fields(line, f"items[{i}]", {"sku", "qty"})
        cart.append((_id(line["sku"], f"items[{i}].sku"), _int(line["qty"], f"items[{i}].qty", 1)))
    return customer, cart


def optional_customer(doc: dict[str, Any]) -> str | None:
    if "customer_id" not in doc:
        return None
    return _id(doc["customer_id"], "customer_id")


def parse_confirm(doc: dict[str, Any]) -> str:
    """The payment reference handed to the saga: '<method>:<token>'."""
    _fields(doc, "body", {"payment"})
    payment = doc["payment"]
    _fields(payment, "payment", {"method", "token"})
    method = _id(payment["method"], "payment.method")
    token = payment["token"]
    if not isinstance(token, str) or not 1 <= len(token) <= 256:
        raise invalid("payment.token must be a string of 1 to 256 characters")
    return f"{method}:{token}"


def parse_sale(sale_id: str, doc: dict[str, Any]) -> SaleRecord:
    required = {"name", "starts_at", "ends_at", "hold_ttl_s", "per_user_limit", "items"}
    optional = {"waiting_room", "rate_limit", "return_url", "credit_policy"}
    _fields(doc, "body", required, optional)
    name = doc["name"]
    if not isinstance(name, str) or not 1 <= len(name) <= 200:
        raise invalid("name must be a string of 1 to 200 characters")
    items = doc["items"]
    if not isinstance(items, list) or not 1 <= len(items) <= 1000:
        raise invalid("items must be a list of 1 to 1000 items")
    record = SaleRecord(
        sale_id=_id(sale_id, "sale"),
        name=name,
        starts_at_ms=_time_ms(doc["starts_at"], "starts_at"),
        ends_at_ms=0 if doc["ends_at"] is None else _time_ms(doc["ends_at"], "ends_at"),
        hold_ttl_s=_int(doc["hold_ttl_s"], "hold_ttl_s", 1, 86_400),
        per_user_limit=_int(doc["per_user_limit"], "per_user_limit"),
        items=tuple(_item(item, f"items[{i}]") for i, item in enumerate(items)),
        waiting_room=_waiting_room(doc.get("waiting_room")),
        rate_limit=_rate_limit(doc.get("rate_limit")),
        return_url=_return_url(doc.get("return_url")),
        credit_policy=_credit_policy(doc.get("credit_policy", "none")),
    )
    try:
        record.validate()
    except InvalidInput as exc:
        raise invalid(str(exc)) from None
    return record


def _item(doc: Any, where: str) -> ItemConfig:
    _fields(doc, where, {"sku", "price_minor", "suppliers"}, {"name"})
    name = _checked(check_name, doc["name"], f"{where}.name") if "name" in doc else ""
    suppliers = doc["suppliers"]
    if not isinstance(suppliers, list) or not 1 <= len(suppliers) <= 50:
        raise invalid(f"{where}.suppliers must be a list of 1 to 50 suppliers")
    return ItemConfig(
        sku=_id(doc["sku"], f"{where}.sku"),
        price_minor=_int(doc["price_minor"], f"{where}.price_minor"),
        suppliers=tuple(_supplier(s, f"{where}.suppliers[{j}]") for j, s in enumerate(suppliers)),
        name=name,
    )


def _return_url(value: Any) -> str:
    """Absent or null: the sale has none (the page then sends nobody anywhere)."""
    return "" if value is None else _checked(check_return_url, value, "return_url")


def _credit_policy(value: Any) -> str:
    """A policy of "none", "full" or {"share": s} (0 <= s <= 1) as the record keeps it: none,
    full or "0.<digits>" (a share of 0 is none, of 1 full)."""
    if value in ("none", "full"):
        return str(value)
    share = value.get("share") if isinstance(value, dict) and value.keys() == {"share"} else None
    if isinstance(share, bool) or not isinstance(share, int | float):
        raise invalid('credit_policy must be "none", "full" or {"share": a number from 0 to 1}')
    exact = Decimal(repr(share))
    if not exact.is_finite() or not 0 <= exact <= 1:
        raise invalid("credit_policy.share must be a number from 0 to 1")
    if exact in (0, 1):
        return "none" if exact == 0 else "full"
    text = format(exact.normalize(), "f")
    if len(text) > 14:
        raise invalid("credit_policy.share has more than 12 decimal places")
    return text


def credit_policy_doc(policy: str) -> str | dict[str, float]:
    """The record's policy as the admin API writes it."""
    return policy if policy in ("none", "full") else {"share": float(policy)}


def _checked(check: Callable[[str, object], str], value: Any, where: str) -> str:
    """A text field checked by the engine's own rule."""
    try:
        return check(where, value)
    except InvalidInput as exc:
        raise invalid(str(exc)) from None


def _supplier(doc: Any, where: str) -> SupplierStockConfig:
    _fields(doc, where, {"id", "stock"}, {"cost_minor", "priority"})
    return SupplierStockConfig(
        supplier_id=_id(doc["id"], f"{where}.id"),
        stock=_int(doc["stock"], f"{where}.stock"),
        cost_minor=_int(doc.get("cost_minor", 0), f"{where}.cost_minor"),
        priority=_int(doc.get("priority", 0), f"{where}.priority", -1000, 1000),
    )


def _waiting_room(doc: Any) -> WaitingRoomConfig:
    if doc is None:
        return WaitingRoomConfig()
    keys = {"enabled", "admit_rate_per_s", "max_active", "token_ttl_s"}
    _fields(doc, "waiting_room", {"enabled"}, keys)
    default = WaitingRoomConfig()
    return WaitingRoomConfig(
        enabled=_bool(doc["enabled"], "waiting_room.enabled"),
        admit_rate_per_s=_int(
            doc.get("admit_rate_per_s", default.admit_rate_per_s),
            "waiting_room.admit_rate_per_s",
            1,
        ),
        max_active=_int(doc.get("max_active", default.max_active), "waiting_room.max_active", 1),
        token_ttl_s=_int(
            doc.get("token_ttl_s", default.token_ttl_s), "waiting_room.token_ttl_s", 10, 86_400
        ),
    )


def _rate_limit(doc: Any) -> RateLimitConfig:
    if doc is None:
        return RateLimitConfig()
    names = ("per_client_per_s", "burst", "per_sale_per_s")
    _fields(doc, "rate_limit", set(), set(names))
    values = {n: None if doc.get(n) is None else _int(doc[n], f"rate_limit.{n}") for n in names}
    return RateLimitConfig(**values)


def parse_return(doc: dict[str, Any]) -> tuple[list[tuple[str, int, str]], str]:
    """An operator's return: {"lines": [{"sku", "qty", "condition": "restockable" | "damaged"}],
    "reason"}: ([(sku, qty, condition)], reason)."""
    _fields(doc, "body", {"lines"}, {"reason"})
    lines, reason = doc["lines"], doc.get("reason", "")
    if not isinstance(lines, list) or not 1 <= len(lines) <= 100:
        raise invalid("lines must be a list of 1 to 100 lines")
    if not isinstance(reason, str) or len(reason) > 500:
        raise invalid("reason must be a string of at most 500 characters")
    out = []
    for i, line in enumerate(lines):
        _fields(line, f"lines[{i}]", {"sku", "qty", "condition"})
        if line["condition"] not in ("restockable", "damaged"):
            raise invalid(f"lines[{i}].condition must be restockable or damaged")
        qty = _int(line["qty"], f"lines[{i}].qty", 1)
        out.append((_id(line["sku"], f"lines[{i}].sku"), qty, str(line["condition"])))
    return out, reason


def parse_path_id(value: str, where: str) -> str:
    return _id(value, where)


def parse_decision(doc: dict[str, Any]) -> dict[str, Any]:
    """A retailer's backorder decision (the saga's backorder.apply step carries it out):
    {"decision": "wait", "promised_date": "YYYY-MM-DD"} | {"decision": "cancel"}
    | {"decision": "secondary", "supplier_id": id[, "cost_minor": int]}: one of the offered
    secondary suppliers, at its quoted cost unless the retailer agreed another."""
    kind = doc.get("decision") if isinstance(doc, dict) else None
    if kind == "wait":
        _fields(doc, "body", {"decision", "promised_date"})
        raw = doc["promised_date"]
        try:
            day = date.fromisoformat(raw) if isinstance(raw, str) and len(raw) == 10 else None
        except ValueError:
            day = None
        if day is None:
            raise invalid("promised_date must be a date, YYYY-MM-DD")
        if day < datetime.now(UTC).date():
            raise invalid("promised_date is in the past")
        return {"decision": "wait", "promised_date": day.isoformat()}
    if kind == "cancel":
        _fields(doc, "body", {"decision"})
        return {"decision": "cancel"}
    if kind == "secondary":
        _fields(doc, "body", {"decision", "supplier_id"}, {"cost_minor"})
        cost = doc.get("cost_minor")  # absent: the cost the backorder's option quoted
        return {
            "decision": "secondary",
            "supplier_id": _id(doc["supplier_id"], "supplier_id"),
            "cost_minor": None if cost is None else _int(cost, "cost_minor"),
        }
    raise invalid("decision must be one of wait, cancel, secondary")
