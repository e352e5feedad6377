"""Bad input to every route over real HTTP: the exact problem+json answer and no state change."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from flashsale.engine import load_settings
from flashsale.engine.connection import RedisClient
from flashsale.loadtests.gateway_process import Gateway
from tests.gateway_helpers import (
    ADMIN,
    assert_problem,
    checkout_body,
    create_sale,
    hold_id_of,
    new_sale_id,
    raw_request,
    sale_body,
)
from tests.helpers import snapshot

MAX_BODY = load_settings().max_body_bytes
ADMIN_MAX_BODY = 1_048_576
ADMIN_SALE = "/v1/admin/sales/{sale}"
PUBLIC_SALE = "/v1/sales/{sale}"
HOLDS = "/v1/sales/{sale}/holds"
HOLD = "/v1/sales/{sale}/holds/{hold}"
ACTIONS = ("open", "pause", "close")
BAD_IDS = {"space": "bad%20id", "65 chars": "x" * 65, "dot": "a.b", "brace": "a%7Bb%7D"}
PAYMENT = {"payment": {"method": "card", "token": "tok_visa"}}
NO_BODY = object()


@dataclass(frozen=True)
class Case:
    method: str
    path: str  # {sale} and {hold} are the test's own sale and a held hold in it
    status: int
    code: str
    json: Any = NO_BODY
    content: bytes | None = None
    headers: tuple[tuple[str, str | bytes], ...] = ()
    admin: bool = False  # send the right admin key
    lying_length: bool = False  # declare a huge Content-Length, send a short body


# --- bodies ------------------------------------------------------------------------------------

Edit = Callable[[dict[str, Any]], None]


def sale_with(edit: Edit) -> dict[str, Any]:
    body = copy.deepcopy(sale_body())
    edit(body)
    return body


def _set(path: str, value: Any) -> Edit:
    """An edit setting a dotted path (numbers index lists) of a body."""

    def edit(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = body
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value

    return edit


def _drop(path: str) -> Edit:
    def edit(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = body
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[last]

    return edit


def line(**changes: Any) -> dict[str, Any]:
    return {**checkout_body("c9"), "items": [{"sku": "A", "qty": 1, **changes}]}


# --- the table ---------------------------------------------------------------------------------


def put(edit_or_body: Edit | Any, status: int = 422, code: str = "INVALID_REQUEST") -> Case:
    body = sale_with(edit_or_body) if callable(edit_or_body) else edit_or_body
    return Case("PUT", ADMIN_SALE, status, code, json=body, admin=True)


def put_raw(content: bytes, status: int = 400, code: str = "MALFORMED_JSON") -> Case:
    return Case("PUT", ADMIN_SALE, status, code, content=content, admin=True)


def post(path: str, body: Any, status: int = 422, code: str = "INVALID_REQUEST") -> Case:
    return Case("POST", path, status, code, json=body)


def post_raw(path: str, content: bytes, status: int = 400, code: str = "MALFORMED_JSON") -> Case:
    return Case("POST", path, status, code, content=content)


def _admin_put_cases() -> dict[str, Case]:
    cases = {
        "malformed json": put_raw(b'{"name": '),
        "empty body": put_raw(b""),
        "not utf-8": put_raw(b"\xff\xfe{}"),
        "NaN": put_raw(b'{"name": NaN}'),
        "array body": put([]),
        "unknown field": put(_set("colour", "red")),
        "name a number": put(_set("name", 5)),
        "name empty": put(_set("name", "")),
        "name 201 chars": put(_set("name", "n" * 201)),
        "hold_ttl_s string": put(_set("hold_ttl_s", "60")),
        "hold_ttl_s float": put(_set("hold_ttl_s", 60.5)),
        "hold_ttl_s bool": put(_set("hold_ttl_s", True)),
        "hold_ttl_s 0": put(_set("hold_ttl_s", 0)),
        "hold_ttl_s 86401": put(_set("hold_ttl_s", 86_401)),
        "per_user_limit -1": put(_set("per_user_limit", -1)),
        "per_user_limit null": put(_set("per_user_limit", None)),
        "per_user_limit 10**13": put(_set("per_user_limit", 10**13)),
        "items empty": put(_set("items", [])),
        "items object": put(_set("items", {})),
        "item unknown field": put(_set("items.0.colour", "red")),
        "item sku malformed": put(_set("items.0.sku", "a b")),
        "item sku 65 chars": put(_set("items.0.sku", "s" * 65)),
        "item sku with colon": put(_set("items.0.sku", "a:b")),
        "price_minor -1": put(_set("items.0.price_minor", -1)),
        "price_minor string": put(_set("items.0.price_minor", "1000")),
        "suppliers empty": put(_set("items.0.suppliers", [])),
        "51 suppliers": put(
            _set("items.0.suppliers", [{"id": f"s{i}", "stock": 1} for i in range(51)])
        ),
        "supplier missing stock": put(_drop("items.0.suppliers.0.stock")),
        "supplier unknown field": put(_set("items.0.suppliers.0.colour", "red")),
        "supplier id malformed": put(_set("items.0.suppliers.0.id", "p q")),
        "stock -1": put(_set("items.0.suppliers.0.stock", -1)),
        "stock string": put(_set("items.0.suppliers.0.stock", "5")),
        "stock 10**13": put(_set("items.0.suppliers.0.stock", 10**13)),
        "priority 1001": put(_set("items.0.suppliers.0.priority", 1001)),
        "duplicate supplier": put(_set("items.0.suppliers.1.id", "p")),
        "duplicate sku": put(lambda b: b["items"].append(copy.deepcopy(b["items"][0]))),
        "waiting_room not an object": put(_set("waiting_room", "yes")),
        "waiting_room enabled string": put(_set("waiting_room", {"enabled": "yes"})),
        "waiting_room missing enabled": put(_set("waiting_room", {})),
        "waiting_room token_ttl_s 5": put(
            _set("waiting_room", {"enabled": True, "token_ttl_s": 5})
        ),
        "waiting_room unknown field": put(_set("waiting_room", {"enabled": False, "x": 1})),
        "rate_limit negative": put(_set("rate_limit", {"burst": -1})),
        "rate_limit a list": put(_set("rate_limit", [])),
        "rate_limit unknown field": put(_set("rate_limit", {"per_hour": 5})),
        "starts_at not a time": put(_set("starts_at", "yesterday")),
        "starts_at month 13": put(_set("starts_at", "2026-13-01T00:00:00Z")),
        "starts_at 30 february": put(_set("starts_at", "2026-02-30T00:00:00Z")),
        "starts_at without zone": put(_set("starts_at", "2026-01-01T00:00:00")),
        "starts_at a number": put(_set("starts_at", 1_700_000_000)),
        "starts_at null": put(_set("starts_at", None)),
        "starts_at before 1970": put(_set("starts_at", "1960-01-01T00:00:00Z")),
        "starts_at 100 chars": put(_set("starts_at", "2026-01-01T00:00:00Z" + " " * 80)),
        "ends_at not a time": put(_set("ends_at", "soon")),
        "ends_at before starts_at": put(_set("ends_at", "2019-12-31T23:59:59Z")),
        "ends_at equal to starts_at": put(_set("ends_at", "2020-01-01T00:00:00Z")),
        "ends_at before starts_at across zones": put(
            lambda b: b.update(
                starts_at="2026-01-01T10:00:00+02:00", ends_at="2026-01-01T07:30:00Z"
            )
        ),
        "body over 1 MiB": put(_set("name", "n" * (ADMIN_MAX_BODY + 1)), 413, "PAYLOAD_TOO_LARGE"),
        "lying Content-Length": Case(
            "PUT",
            ADMIN_SALE,
            413,
            "PAYLOAD_TOO_LARGE",
            content=b"{}",
            admin=True,
            lying_length=True,
        ),
    }
    for field in ("name", "starts_at", "ends_at", "hold_ttl_s", "per_user_limit", "items"):
        cases[f"missing {field}"] = put(_drop(field))
    for label, bad in BAD_IDS.items():
        path = ADMIN_SALE.replace("{sale}", bad)
        cases[f"sale id {label}"] = Case(
            "PUT", path, 422, "INVALID_REQUEST", sale_body(), admin=True
        )
    return {f"admin PUT {k}": v for k, v in cases.items()}


def _admin_read_and_action_cases() -> dict[str, Case]:
    cases = {
        "GET unknown sale": Case("GET", ADMIN_SALE + "-nope", 404, "NOT_FOUND", admin=True),
        "POST unknown action": Case("POST", ADMIN_SALE + "/explode", 404, "NOT_FOUND", admin=True),
    }
    for label, bad in BAD_IDS.items():
        path = ADMIN_SALE.replace("{sale}", bad)
        cases[f"GET sale id {label}"] = Case("GET", path, 422, "INVALID_REQUEST", admin=True)
        for action in ACTIONS:
            cases[f"{action} sale id {label}"] = Case(
                "POST", f"{path}/{action}", 422, "INVALID_REQUEST", admin=True
            )
    for action in ACTIONS:
        cases[f"{action} unknown sale"] = Case(
            "POST", f"{ADMIN_SALE}-nope/{action}", 404, "NOT_FOUND", admin=True
        )
    return {f"admin {k}": v for k, v in cases.items()}


def _unauthorized_cases() -> dict[str, Case]:
    routes = [("PUT", ADMIN_SALE), ("GET", ADMIN_SALE), ("POST", ADMIN_SALE + "/explode")]
    routes += [("POST", f"{ADMIN_SALE}/{action}") for action in ACTIONS]
    routes += [("GET", ADMIN_SALE.replace("{sale}", "bad%20id"))]
    wrong: dict[str, tuple[tuple[str, str | bytes], ...]] = {
        "no key": (),
        "wrong key": (("Authorization", "Bearer not-the-key"),),
        "key with a suffix": (("Authorization", ADMIN["Authorization"] + "x"),),
        "key without Bearer": (("Authorization", ADMIN["Authorization"].split()[1]),),
        "basic scheme": (("Authorization", "Basic ZGV2OmtleQ=="),),
        "non-ascii key": (("Authorization", "Bearer dév".encode()),),
    }
    cases = {}
    for method, path in routes:
        for label, headers in wrong.items():
            body = sale_body() if method == "PUT" else NO_BODY
            cases[f"{method} {path} {label}"] = Case(
                method, path, 401, "UNAUTHORIZED", json=body, headers=headers
            )
    return cases


def _public_sale_cases() -> dict[str, Case]:
    cases = {"unknown sale": Case("GET", PUBLIC_SALE + "-nope", 404, "NOT_FOUND")}
    for label, bad in BAD_IDS.items():
        path = PUBLIC_SALE.replace("{sale}", bad)
        cases[f"sale id {label}"] = Case("GET", path, 422, "INVALID_REQUEST")
    return {f"public GET {k}": v for k, v in cases.items()}


def _checkout_cases() -> dict[str, Case]:
    big = {**checkout_body("c9"), "pad": "x" * MAX_BODY}
    cases = {
        "malformed json": post_raw(HOLDS, b'{"customer_id": "c9", "items": ['),
        "empty body": post_raw(HOLDS, b""),
        "not utf-8": post_raw(HOLDS, b'{"customer_id": "\xff"}'),
        "infinite qty": post_raw(HOLDS, b'{"customer_id":"c9","items":[{"sku":"A","qty":1e400}]}'),
        "nesting too deep": post_raw(HOLDS, b"[" * 2000 + b"]" * 2000),
        "array body": post(HOLDS, [checkout_body("c9")]),
        "string body": post(HOLDS, "c9"),
        # Nobody named: no customer token, and no body customer_id (which only dev mode takes).
        "missing customer_id": post(
            HOLDS, {"items": [{"sku": "A", "qty": 1}]}, 401, "CUSTOMER_UNAUTHENTICATED"
        ),
        "missing items": post(HOLDS, {"customer_id": "c9"}),
        "unknown field": post(HOLDS, {**checkout_body("c9"), "coupon": "FREE"}),
        "customer_id a number": post(HOLDS, {**checkout_body("c9"), "customer_id": 9}),
        "customer_id malformed": post(HOLDS, checkout_body("c 9")),
        "customer_id 65 chars": post(HOLDS, checkout_body("c" * 65)),
        "customer_id empty": post(HOLDS, checkout_body("")),
        "items empty": post(HOLDS, {"customer_id": "c9", "items": []}),
        "items an object": post(HOLDS, {"customer_id": "c9", "items": {"sku": "A", "qty": 1}}),
        "items null": post(HOLDS, {"customer_id": "c9", "items": None}),
        "line a list": post(HOLDS, {"customer_id": "c9", "items": [["A", 1]]}),
        "line missing qty": post(HOLDS, {"customer_id": "c9", "items": [{"sku": "A"}]}),
        "line missing sku": post(HOLDS, {"customer_id": "c9", "items": [{"qty": 1}]}),
        "line unknown field": post(HOLDS, line(colour="red")),
        "qty 0": post(HOLDS, line(qty=0)),
        "qty -1": post(HOLDS, line(qty=-1)),
        "qty string": post(HOLDS, line(qty="1")),
        "qty true": post(HOLDS, line(qty=True)),
        "qty 1.0": post(HOLDS, line(qty=1.0)),
        "qty null": post(HOLDS, line(qty=None)),
        "qty 10**9": post(HOLDS, line(qty=10**9)),
        "qty 10**30": post(HOLDS, line(qty=10**30)),
        "qty above the line maximum": post(HOLDS, line(qty=101)),
        "sku malformed": post(HOLDS, line(sku="A B")),
        "sku with colon": post(HOLDS, line(sku="A:p")),
        "sku 65 chars": post(HOLDS, line(sku="A" * 65)),
        "unknown sku": post(HOLDS, line(sku="NOPE"), 422, "UNKNOWN_SKU"),
        "unknown sku after a good line": post(
            HOLDS,
            {"customer_id": "c9", "items": [{"sku": "A", "qty": 1}, {"sku": "NOPE", "qty": 1}]},
            422,
            "UNKNOWN_SKU",
        ),
        "same sku twice": post(HOLDS, {"customer_id": "c9", "items": [{"sku": "A", "qty": 1}] * 2}),
        "11 lines": post(
            HOLDS,
            {"customer_id": "c9", "items": [{"sku": f"S{i}", "qty": 1} for i in range(11)]},
        ),
        "more than the stock": post(HOLDS, line(qty=100), 409, "SOLD_OUT"),
        "unknown sale": post(HOLDS.replace("{sale}", "{sale}-nope"), line(), 404, "NOT_FOUND"),
        "Idempotency-Key malformed": Case(
            "POST",
            HOLDS,
            422,
            "INVALID_REQUEST",
            json=line(),
            headers=(("Idempotency-Key", "a b"),),
        ),
        "Idempotency-Key 65 chars": Case(
            "POST",
            HOLDS,
            422,
            "INVALID_REQUEST",
            json=line(),
            headers=(("Idempotency-Key", "k" * 65),),
        ),
        "body over the limit": post(HOLDS, big, 413, "PAYLOAD_TOO_LARGE"),
        "lying Content-Length": Case(
            "POST", HOLDS, 413, "PAYLOAD_TOO_LARGE", content=b"{}", lying_length=True
        ),
    }
    for label, bad in BAD_IDS.items():
        path = HOLDS.replace("{sale}", bad)
        cases[f"sale id {label}"] = post(path, line())
    return {f"checkout {k}": v for k, v in cases.items()}


def _hold_route_cases() -> dict[str, Case]:
    routes = {
        "GET hold": ("GET", HOLD),
        "confirm": ("POST", HOLD + "/confirm"),
        "release": ("POST", HOLD + "/release"),
        "extend": ("POST", HOLD + "/extend"),
    }
    cases: dict[str, Case] = {}
    for name, (method, path) in routes.items():
        body = PAYMENT if name == "confirm" else NO_BODY
        unknown_hold = path.replace("{hold}", "nope")
        cases[f"{name} unknown hold"] = Case(method, unknown_hold, 404, "NOT_FOUND", json=body)
        other_sale = path.replace("{sale}", "{sale}-nope")
        cases[f"{name} unknown sale"] = Case(method, other_sale, 404, "NOT_FOUND", json=body)
        for label, bad in BAD_IDS.items():
            for part in ("hold", "sale"):
                bad_path = path.replace("{" + part + "}", bad)
                cases[f"{name} {part} id {label}"] = Case(
                    method, bad_path, 422, "INVALID_REQUEST", json=body
                )
    return cases


def _confirm_body_cases() -> dict[str, Case]:
    confirm = HOLD + "/confirm"
    pay = PAYMENT["payment"]
    cases = {
        "malformed json": post_raw(confirm, b'{"payment": {'),
        "empty body": post_raw(confirm, b""),
        "array body": post(confirm, [PAYMENT]),
        "missing payment": post(confirm, {}),
        "unknown field": post(confirm, {**PAYMENT, "tip": 5}),
        "payment a string": post(confirm, {"payment": "card:tok"}),
        "payment missing method": post(confirm, {"payment": {"token": "t"}}),
        "payment missing token": post(confirm, {"payment": {"method": "card"}}),
        "payment unknown field": post(confirm, {"payment": {**pay, "cvv": "123"}}),
        "method malformed": post(confirm, {"payment": {**pay, "method": "credit card"}}),
        "token empty": post(confirm, {"payment": {**pay, "token": ""}}),
        "token 257 chars": post(confirm, {"payment": {**pay, "token": "t" * 257}}),
        "token a number": post(confirm, {"payment": {**pay, "token": 42}}),
        "body over the limit": post(
            confirm, {"payment": {**pay, "token": "t" * MAX_BODY}}, 413, "PAYLOAD_TOO_LARGE"
        ),
        "lying Content-Length": Case(
            "POST", confirm, 413, "PAYLOAD_TOO_LARGE", content=b"{}", lying_length=True
        ),
    }
    return {f"confirm {k}": v for k, v in cases.items()}


def _routing_cases() -> dict[str, Case]:
    return {
        "unknown path": Case("GET", "/v1/nothing", 404, "NOT_FOUND"),
        "unknown path under a hold": Case("POST", HOLD + "/explode", 404, "NOT_FOUND"),
        "unknown path under an admin action": Case(
            "POST", ADMIN_SALE + "/open/now", 404, "NOT_FOUND", admin=True
        ),
        "no v1": Case("GET", "/sales/{sale}", 404, "NOT_FOUND"),
        "DELETE admin sale": Case("DELETE", ADMIN_SALE, 405, "METHOD_NOT_ALLOWED", admin=True),
        "PUT public sale": Case("PUT", PUBLIC_SALE, 405, "METHOD_NOT_ALLOWED", json=sale_body()),
        "GET holds": Case("GET", HOLDS, 405, "METHOD_NOT_ALLOWED"),
        "DELETE hold": Case("DELETE", HOLD, 405, "METHOD_NOT_ALLOWED"),
        "GET confirm": Case("GET", HOLD + "/confirm", 405, "METHOD_NOT_ALLOWED"),
        "PUT release": Case("PUT", HOLD + "/release", 405, "METHOD_NOT_ALLOWED"),
        "POST healthz": Case("POST", "/healthz", 405, "METHOD_NOT_ALLOWED"),
        "POST metrics": Case("POST", "/metrics", 405, "METHOD_NOT_ALLOWED"),
    }


def _order_cases() -> dict[str, Case]:
    """Order and backorder routes. A body is judged before the backorder is looked up, so the
    unknown id 999999999 still reaches every body check."""
    decision = "/v1/admin/backorders/999999999/decision"
    past = "2020-01-01"
    cases = {
        "GET order that is a held hold": Case("GET", "/v1/orders/{hold}", 404, "NOT_FOUND"),
        "admin GET order unknown": Case(
            "GET", "/v1/admin/orders/nope", 404, "NOT_FOUND", admin=True
        ),
        "admin GET order without key": Case("GET", "/v1/admin/orders/nope", 401, "UNAUTHORIZED"),
        "backorders of a bogus status": Case(
            "GET", "/v1/admin/backorders?status=lost", 422, "INVALID_REQUEST", admin=True
        ),
        "backorders without key": Case("GET", "/v1/admin/backorders", 401, "UNAUTHORIZED"),
        "decision unknown backorder": Case(
            "POST", decision, 404, "NOT_FOUND", json={"decision": "cancel"}, admin=True
        ),
        "decision id not a number": Case(
            "POST",
            "/v1/admin/backorders/abc/decision",
            422,
            "INVALID_REQUEST",
            json={"decision": "cancel"},
            admin=True,
        ),
        "decision id too long": Case(
            "POST",
            f"/v1/admin/backorders/{'9' * 19}/decision",
            422,
            "INVALID_REQUEST",
            json={"decision": "cancel"},
            admin=True,
        ),
        "decision without key": Case(
            "POST", decision, 401, "UNAUTHORIZED", json={"decision": "cancel"}
        ),
        "decision malformed JSON": Case(
            "POST", decision, 400, "MALFORMED_JSON", content=b'{"decision": ', admin=True
        ),
    }
    bad_bodies: dict[str, Any] = {
        "not an object": ["cancel"],
        "no decision": {},
        "unknown decision": {"decision": "refund"},
        "wait without date": {"decision": "wait"},
        "wait date not a date": {"decision": "wait", "promised_date": "next week"},
        "wait date with a time": {"decision": "wait", "promised_date": "2030-01-01T00:00:00Z"},
        "wait date in the past": {"decision": "wait", "promised_date": past},
        "wait date a number": {"decision": "wait", "promised_date": 20300101},
        "cancel with extra field": {"decision": "cancel", "refund": True},
        "secondary without supplier": {"decision": "secondary", "cost_minor": 5},
        "secondary cost a string": {
            "decision": "secondary",
            "supplier_id": "S9",
            "cost_minor": "5",
        },
        "secondary negative cost": {"decision": "secondary", "supplier_id": "S9", "cost_minor": -1},
        "secondary cost bool": {"decision": "secondary", "supplier_id": "S9", "cost_minor": True},
        "secondary bad supplier": {"decision": "secondary", "supplier_id": "a b", "cost_minor": 1},
    }
    for label, body in bad_bodies.items():
        cases[f"decision {label}"] = Case(
            "POST", decision, 422, "INVALID_REQUEST", json=body, admin=True
        )
    for label, bad in BAD_IDS.items():
        cases[f"GET order id {label}"] = Case("GET", f"/v1/orders/{bad}", 422, "INVALID_REQUEST")
        cases[f"admin GET order id {label}"] = Case(
            "GET", f"/v1/admin/orders/{bad}", 422, "INVALID_REQUEST", admin=True
        )
    return {f"orders {k}": v for k, v in cases.items()}


CASES: dict[str, Case] = {
    **_admin_put_cases(),
    **_admin_read_and_action_cases(),
    **_unauthorized_cases(),
    **_public_sale_cases(),
    **_checkout_cases(),
    **_hold_route_cases(),
    **_confirm_body_cases(),
    **_routing_cases(),
    **_order_cases(),
}


# --- running a case ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    sale: str
    hold: str


@pytest.fixture
async def target(http: httpx.AsyncClient) -> Target:
    """A fresh open sale (A: p 60, q 40) with one held hold of 1 unit."""
    sale = new_sale_id("bad")
    await create_sale(http, sale, sale_body())
    return Target(sale, await hold_id_of(http, sale, "c1"))


async def send(gw: Gateway, http: httpx.AsyncClient, case: Case, t: Target) -> httpx.Response:
    path = case.path.replace("{sale}", t.sale).replace("{hold}", t.hold)
    given = [*(ADMIN.items() if case.admin else ()), *case.headers]
    headers = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in given}
    if case.lying_length:
        auth = f"Authorization: {ADMIN['Authorization']}\n" if case.admin else ""
        head = (
            f"{case.method} {path} HTTP/1.1\nHost: test\nContent-Type: application/json\n"
            f"Content-Length: {10**9}\n{auth}"
        )
        return await raw_request(gw.url, head, case.content or b"")
    if case.json is not NO_BODY:
        return await http.request(case.method, path, json=case.json, headers=headers)
    if case.content and b"content-type" not in headers:
        headers[b"content-type"] = b"application/json"  # bad JSON, not a bad type
    return await http.request(case.method, path, content=case.content, headers=headers)


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
async def test_bad_input_gets_its_problem_and_changes_nothing(
    gw: Gateway, http: httpx.AsyncClient, redis_client: RedisClient, target: Target, case: Case
) -> None:
    before = await snapshot(redis_client, target.sale)
    reply = await send(gw, http, case, target)
    assert_problem(reply, case.status, case.code)
    if case.status == 401:  # RFC 9110: a 401 says which scheme would do
        assert reply.headers.get("www-authenticate", "").startswith("Bearer")
    assert await snapshot(redis_client, target.sale) == before


async def test_a_streamed_body_over_the_limit_is_refused(
    http: httpx.AsyncClient, redis_client: RedisClient, target: Target
) -> None:
    """Chunked, so no Content-Length to judge by: the limit holds while reading."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"customer_id": "c9", "items": [{"sku": "A", "qty": 1}], "pad": "'
        for _ in range(MAX_BODY // 1024 + 1):
            yield b"x" * 1024
        yield b'"}'

    before = await snapshot(redis_client, target.sale)
    json_type = {"Content-Type": "application/json"}
    reply = await http.post(f"/v1/sales/{target.sale}/holds", content=chunks(), headers=json_type)
    assert_problem(reply, 413, "PAYLOAD_TOO_LARGE")
    assert await snapshot(redis_client, target.sale) == before


async def test_405_names_the_allowed_methods(http: httpx.AsyncClient, target: Target) -> None:
    """RFC 9110 15.5.6: a 405 MUST carry an Allow header listing the target's methods."""
    reply = await http.delete(f"/v1/sales/{target.sale}/holds/{target.hold}")
    assert_problem(reply, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in reply.headers.get("allow", ""), reply.headers


@pytest.mark.parametrize(
    "path",
    [HOLD + "/release", HOLD + "/extend", *(f"{ADMIN_SALE}/{a}" for a in ACTIONS)],
    ids=["release", "extend", *ACTIONS],
)
async def test_body_less_routes_refuse_an_oversized_body(
    gw: Gateway, redis_client: RedisClient, target: Target, path: str
) -> None:
    """Bodies are size-limited (docs/design.md, the hot path). These routes take no body; one
    declared at 1 GB is not read, yet the request is acted on before the client finished sending
    it."""
    path = path.replace("{sale}", target.sale).replace("{hold}", target.hold)
    before = await snapshot(redis_client, target.sale)
    head = (
        f"POST {path} HTTP/1.1\nHost: test\nContent-Type: application/json\n"
        f"Content-Length: {10**9}\nAuthorization: {ADMIN['Authorization']}\n"
    )
    reply = await raw_request(gw.url, head, b"{}")
    assert_problem(reply, 413, "PAYLOAD_TOO_LARGE")
    assert await snapshot(redis_client, target.sale) == before
