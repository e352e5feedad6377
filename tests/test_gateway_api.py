"""The API around the hot path over real HTTP: ops routes, OpenAPI, public view, sale replace."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from flashsale.engine import Engine, load_settings
from flashsale.engine.invariants import check_sale
from flashsale.gateway.admin import STATUS_OF_ACTION
from flashsale.gateway.app import routes
from flashsale.gateway.openapi import document
from flashsale.gateway.state import PUBLIC_VIEW_TTL_S
from flashsale.loadtests.gateway_process import Gateway
from flashsale.store import sales
from tests.gateway_helpers import (
    ADMIN,
    PAYMENT,
    admin_view,
    as_customer,
    assert_problem,
    checkout,
    checkout_body,
    client,
    create_sale,
    hold_id_of,
    new_sale_id,
    sale_body,
    sku_view,
    supplier_counts,
)
from tests.helpers import eventually, snapshot
from tests.metrics_helpers import delta, parse_metrics, series, value

SCHEMAS: dict[str, Any] = document(load_settings())["components"]["schemas"]


# --- ops routes --------------------------------------------------------------------------------


async def test_healthz_answers_ok_without_io(http: httpx.AsyncClient) -> None:
    reply = await http.get("/healthz")
    assert (reply.status_code, reply.content) == (200, b'{"status":"ok"}')
    assert reply.headers["content-type"] == "application/json"


async def test_readyz_checks_redis_and_postgres(http: httpx.AsyncClient) -> None:
    reply = await http.get("/readyz")
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"ready": True, "checks": {"redis": True, "postgres": True}}


async def test_metrics_count_the_checkout_route_and_show_stock(
    gw: Gateway, http: httpx.AsyncClient
) -> None:
    sale = new_sale_id("metrics")
    await create_sale(http, sale, sale_body())
    async with client(gw, max_connections=1) as one:
        before = parse_metrics((await one.get("/metrics")).text)
        assert (await checkout(one, sale, "c1")).status_code == 201
        assert (await checkout(one, sale, "c2", 1000)).status_code == 422
        public = await one.get("/metrics")
        reply = await one.get("/metrics", headers=ADMIN)  # unit counts: the admin's
    assert public.status_code == 200 and "flashsale_stock_units" not in public.text
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    after = parse_metrics(reply.text)  # prometheus_client's own parser: the page is well formed
    route = {"route": "/v1/sales/{sale}/holds", "method": "POST"}
    for status in ("201", "422"):
        labels = {**route, "status": status}
        assert delta(before, after, "flashsale_http_requests_total", labels) == 1, status
    count = ("flashsale_http_request_duration_seconds_count", {"route": route["route"]})
    assert delta(before, after, *count) == 2
    assert delta(before, after, "flashsale_checkouts_total", {"outcome": "OK"}) == 1
    assert delta(before, after, "flashsale_checkouts_total", {"outcome": "INVALID_REQUEST"}) == 1
    stock = [labels for labels, _ in series(after, "flashsale_stock_units")]
    stock = [labels for labels in stock if labels["sale"] == sale]
    assert stock, "no stock series for the sale"
    assert all(set(labels) == {"sale", "sku", "supplier", "state"} for labels in stock)
    assert value(after, "flashsale_redis_up") == 1


# --- OpenAPI -----------------------------------------------------------------------------------


def _served_routes() -> set[tuple[str, str]]:
    pairs = set()
    for route in routes():
        paths = [route.path]
        if "{action}" in route.path:
            paths = [route.path.replace("{action}", action) for action in STATUS_OF_ACTION]
        for method in (route.methods or set()) - {"HEAD"}:
            pairs |= {(path, method) for path in paths}
    return pairs


async def test_openapi_lists_exactly_the_served_routes(http: httpx.AsyncClient) -> None:
    reply = await http.get("/openapi.json")
    assert reply.status_code == 200
    doc = reply.json()
    assert doc == document(load_settings())
    listed = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    assert listed == _served_routes()
    for path, ops in doc["paths"].items():
        declared = set(re.findall(r"\{(\w+)\}", path))
        for op in ops.values():
            assert {p["name"] for p in op["parameters"] if p["in"] == "path"} == declared


def _walk(schema: dict[str, Any], body: Any, where: tuple[str, ...] = ()) -> Iterator[Any]:
    """(path, required) for every property of `schema` that the example `body` holds."""
    if schema.get("type") == "array":
        yield from _walk(schema["items"], body[0], (*where, "0"))
        return
    if schema.get("type") != "object":
        return
    for name, sub in schema["properties"].items():
        if name in body:
            yield (*where, name), name in schema.get("required", [])
            yield from _walk(sub, body[name], (*where, name))


FULL_SALE = sale_body(
    waiting_room={"enabled": False, "admit_rate_per_s": 50, "max_active": 500, "token_ttl_s": 300},
    rate_limit={"per_client_per_s": 5, "burst": 10, "per_sale_per_s": 1000},
)
FULL_SALE["items"][0]["name"] = "Red runner"
FULL_SALE["return_url"] = "https://shop.example/checkout?hold={hold_id}"
FULL_SALE["credit_policy"] = {"share": 0.5}
EXAMPLES = {"Sale": FULL_SALE, "Checkout": checkout_body("c1"), "Confirm": PAYMENT}
FIELDS = [
    pytest.param(name, path, required, id=f"{name}.{'.'.join(path)}")
    for name, example in EXAMPLES.items()
    for path, required in _walk(SCHEMAS[name], example)
]


def _without(body: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    out = copy.deepcopy(body)
    node: Any = out
    for part in path[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    del node[path[-1]]
    return out


def _properties(schema: dict[str, Any], where: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    if schema.get("type") == "array":
        return _properties(schema["items"], (*where, "0"))
    out: set[tuple[str, ...]] = set()
    for name, sub in schema.get("properties", {}).items():
        out |= {(*where, name)} | _properties(sub, (*where, name))
    return out


def test_the_examples_hold_every_schema_property() -> None:
    """So the test below checks each property of the three documents, none skipped."""
    for name, example in EXAMPLES.items():
        assert {p for p, _ in _walk(SCHEMAS[name], example)} == _properties(SCHEMAS[name])


@pytest.mark.parametrize(("schema", "path", "required"), FIELDS)
async def test_openapi_required_fields_are_what_the_server_enforces(
    http: httpx.AsyncClient, schema: str, path: tuple[str, ...], required: bool
) -> None:
    body = _without(EXAMPLES[schema], path)
    sale = new_sale_id("schema")
    if schema == "Sale":
        reply = await http.put(f"/v1/admin/sales/{sale}", json=body, headers=ADMIN)
        expected = 201
    else:
        await create_sale(http, sale, sale_body())
        if schema == "Checkout":  # the token says who, when the body does not
            holds = f"/v1/sales/{sale}/holds"
            reply = await http.post(holds, json=body, headers=as_customer("c1"))
            expected = 201
        else:
            hold = await hold_id_of(http, sale, "c1")
            reply = await http.post(f"/v1/sales/{sale}/holds/{hold}/confirm", json=body)
            expected = 200
    if required:
        assert path[-1] in assert_problem(reply, 422, "INVALID_REQUEST")["detail"]
    else:
        assert reply.status_code == expected, reply.text


# --- public sale view --------------------------------------------------------------------------


async def _availability(http: httpx.AsyncClient, sale: str) -> str:
    reply = await http.get(f"/v1/sales/{sale}")
    assert reply.status_code == 200, reply.text
    (item,) = reply.json()["items"]
    assert set(item) == {"sku", "name", "availability"}  # a level, never a count
    level: str = item["availability"]
    return level


async def _shows(http: httpx.AsyncClient, sale: str, level: str) -> None:
    """Each worker caches the view for up to PUBLIC_VIEW_TTL_S (1 s), so a change shows within
    a few seconds, never at once."""

    async def availability_is_level() -> None:
        seen = await _availability(http, sale)
        assert seen == level, f"availability stayed {seen}, expected {level}"

    await eventually(availability_is_level, timeout_s=3 * PUBLIC_VIEW_TTL_S, interval_s=0.1)


async def _release(http: httpx.AsyncClient, sale: str, hold: str) -> None:
    assert (await http.post(f"/v1/sales/{sale}/holds/{hold}/release")).status_code == 200


async def test_public_view_goes_in_stock_low_sold_out(http: httpx.AsyncClient) -> None:
    sale = new_sale_id("levels")
    await create_sale(http, sale, sale_body([("p", 12), ("q", 8)]))
    # Before the sale's first public read, so no worker has it cached: the first read is fresh,
    # no waiting out the cache's TTL.
    first = await hold_id_of(http, sale, "c1", 17)
    reply = await http.get(f"/v1/sales/{sale}")
    assert reply.status_code == 200
    doc = reply.json()
    assert {k: doc[k] for k in ("sale_id", "status", "hold_ttl_s", "per_user_limit")} == {
        "sale_id": sale,
        "status": "open",
        "hold_ttl_s": 600,
        "per_user_limit": 0,
    }
    assert doc["items"] == [{"sku": "A", "name": "A", "availability": "in_stock"}]  # 3 of 20

    second = await hold_id_of(http, sale, "c2", 1)  # 2 left
    await _shows(http, sale, "low")
    last = await hold_id_of(http, sale, "c3", 2)
    await _shows(http, sale, "sold_out")
    await _release(http, sale, last)
    await _shows(http, sale, "low")
    # Both releases before the next read, so "in_stock" can only come from all 20 back.
    await _release(http, sale, first)
    await _release(http, sale, second)
    await _shows(http, sale, "in_stock")


# --- replacing a sale --------------------------------------------------------------------------


async def _committed_sale(http: httpx.AsyncClient) -> tuple[str, str]:
    """A sale with, on supplier p, 6 units reserved and 4 sold; returns (sale, the held hold)."""
    sale = new_sale_id("replace")
    await create_sale(http, sale, sale_body())
    bought = await hold_id_of(http, sale, "c1", 4)
    held = await hold_id_of(http, sale, "c2", 6)
    confirmed = await http.post(f"/v1/sales/{sale}/holds/{bought}/confirm", json=PAYMENT)
    assert confirmed.status_code == 200, confirmed.text
    return sale, held


async def _pg_record(service_urls: dict[str, str], sale: str) -> Any:
    conn = await asyncpg.connect(service_urls["FLASHSALE_DATABASE_URL"])
    try:
        return await sales.load_sale_record(conn, sale)
    finally:
        await conn.close()


async def test_replace_changes_loaded_stock_and_keeps_holds(
    http: httpx.AsyncClient, live_engine: Engine, service_urls: dict[str, str]
) -> None:
    sale, held = await _committed_sale(http)
    reply = await http.put(
        f"/v1/admin/sales/{sale}", json=sale_body([("p", 80), ("q", 30)]), headers=ADMIN
    )
    assert (reply.status_code, reply.json()) == (200, {"sale_id": sale, "version": 2})

    view = await admin_view(http, sale)
    assert (view["version"], view["status"], view["open_holds"]) == (2, "open", 1)
    assert supplier_counts(view) == {
        "p": {"loaded": 80, "available": 70, "reserved": 6, "sold": 4},
        "q": {"loaded": 30, "available": 30, "reserved": 0, "sold": 0},
    }
    assert sku_view(view)["loaded"] == 110
    record, version, status = await _pg_record(service_urls, sale)
    assert (version, status) == (2, "open")
    assert [(s.supplier_id, s.stock) for s in record.items[0].suppliers] == [("p", 80), ("q", 30)]
    assert await check_sale(live_engine, sale) == []
    done = await http.post(f"/v1/sales/{sale}/holds/{held}/confirm", json=PAYMENT)
    assert done.status_code == 200, done.text
    assert supplier_counts(await admin_view(http, sale))["p"]["sold"] == 10


@pytest.mark.parametrize(
    "stock",
    [[("p", 9), ("q", 40)], [("q", 100)], [("q", 40), ("p", 0)]],
    ids=["below reserved+sold", "supplier dropped", "supplier zeroed"],
)
async def test_replace_below_committed_units_is_refused_and_changes_nothing(
    http: httpx.AsyncClient,
    live_engine: Engine,
    service_urls: dict[str, str],
    stock: list[tuple[str, int]],
) -> None:
    sale, _ = await _committed_sale(http)
    redis_before = await snapshot(live_engine.client, sale)
    view_before = await admin_view(http, sale)
    pg_before = await _pg_record(service_urls, sale)

    reply = await http.put(f"/v1/admin/sales/{sale}", json=sale_body(stock), headers=ADMIN)
    assert_problem(reply, 409, "STOCK_COMMITTED")

    assert await snapshot(live_engine.client, sale) == redis_before
    view_after = await admin_view(http, sale)
    assert {k: v for k, v in view_after.items() if k != "reconciler"} == {
        k: v for k, v in view_before.items() if k != "reconciler"
    }
    assert await _pg_record(service_urls, sale) == pg_before
    # The refused replace did not use up a version either.
    again = await http.put(f"/v1/admin/sales/{sale}", json=sale_body(), headers=ADMIN)
    assert (again.status_code, again.json()["version"]) == (200, 2)


# --- sale status -------------------------------------------------------------------------------


async def test_status_changes_gate_checkout_and_closed_is_final(
    http: httpx.AsyncClient, service_urls: dict[str, str]
) -> None:
    sale = new_sale_id("status")
    put = await http.put(f"/v1/admin/sales/{sale}", json=sale_body(), headers=ADMIN)
    assert (put.status_code, put.json()) == (201, {"sale_id": sale, "version": 1})
    admin = f"/v1/admin/sales/{sale}"
    for action, status, previous in [
        ("pause", "paused", "scheduled"),
        ("open", "open", "paused"),
        ("close", "closed", "open"),
    ]:
        reply = await http.post(f"{admin}/{action}", headers=ADMIN)
        assert reply.json() == {"sale_id": sale, "status": status, "previous": previous}
        if status != "open":
            assert_problem(await checkout(http, sale, "c1"), 409, "SALE_NOT_OPEN")
        else:
            assert (await checkout(http, sale, "c1")).status_code == 201

    assert_problem(await http.post(f"{admin}/open", headers=ADMIN), 409, "BAD_TRANSITION")
    assert (await admin_view(http, sale))["status"] == "closed"
    _, _, pg_status = await _pg_record(service_urls, sale)
    assert pg_status == "closed"  # the refused change was rolled back in PostgreSQL too


@pytest.mark.parametrize(
    ("starts_at", "ends_at"),
    [("2999-01-01T00:00:00Z", None), ("2020-01-01T00:00:00Z", "2021-01-01T00:00:00Z")],
    ids=["not started", "ended"],
)
async def test_checkout_outside_the_sale_window_is_refused(
    http: httpx.AsyncClient, starts_at: str, ends_at: str | None
) -> None:
    sale = new_sale_id("window")
    body = sale_body(starts_at=starts_at, ends_at=ends_at)
    put = await http.put(f"/v1/admin/sales/{sale}", json=body, headers=ADMIN)
    assert put.status_code == 201, put.text
    assert_problem(await checkout(http, sale, "c1"), 409, "SALE_NOT_OPEN")
    if ends_at is not None:  # opening by hand does not reopen an ended sale
        assert (await http.post(f"/v1/admin/sales/{sale}/open", headers=ADMIN)).status_code == 200
        assert_problem(await checkout(http, sale, "c1"), 409, "SALE_NOT_OPEN")
    assert sku_view(await admin_view(http, sale))["reserved"] == 0
