"""The names requests are filed under in Locust's statistics, and small helpers that read a
reply."""

from __future__ import annotations

from typing import Any

from locust import FastHttpUser
from locust.contrib.fasthttp import ResponseContextManager

# Request names: the route template, so Locust groups every sale, ticket and hold per route.
JOIN = "/v1/sales/{sale}/queue"
STATUS = "/v1/sales/{sale}/queue/{ticket}"
HOLDS = "/v1/sales/{sale}/holds"
BOT_HOLDS = "/v1/sales/{sale}/holds (bot)"
CONFIRM = "/v1/sales/{sale}/holds/{hold}/confirm"
RELEASE = "/v1/sales/{sale}/holds/{hold}/release"
SALE = "/v1/sales/{sale}"
ADMIN = "/v1/admin/sales/{sale}"
ROOM = "/v1/sales/{sale}/queue (room)"


def problem_code(reply: ResponseContextManager) -> str:
    """The problem+json `code`, or '' (transport error, not JSON)."""
    try:
        doc = reply.json()
    except (ValueError, TypeError):
        return ""
    code = doc.get("code") if isinstance(doc, dict) else None
    return code if isinstance(code, str) else ""


def header(reply: ResponseContextManager, name: str) -> str:
    headers: Any = reply.headers
    value = headers.get(name) if headers is not None else None
    return str(value) if value is not None else ""


def retry_after_s(reply: ResponseContextManager) -> float:
    try:
        return min(10.0, max(0.2, float(header(reply, "Retry-After") or 1)))
    except ValueError:
        return 1.0


def describe(reply: ResponseContextManager) -> str:
    if reply.status_code == 0:
        return f"transport error: {getattr(reply, 'error', None)!r}"
    return f"unexpected {reply.status_code} {problem_code(reply) or (reply.text or '')[:120]}"


def sale_skus(user: FastHttpUser, path: str, *, in_stock_only: bool = False) -> list[str]:
    """The sale page's skus that are not sold out; when none is left, all of them (units come
    back when holds expire) or, with in_stock_only, none. [] when the page failed."""
    with user.client.get(path, name=SALE, catch_response=True) as reply:
        if reply.status_code != 200:
            reply.failure(describe(reply))
            return []
        items = reply.json()["items"]
    left = [item["sku"] for item in items if item["availability"] != "sold_out"]
    return left or ([] if in_stock_only else [item["sku"] for item in items])


def lines_of(hold: dict[str, Any]) -> dict[str, int]:
    return {line["sku"]: int(line["qty"]) for line in hold["lines"]}
