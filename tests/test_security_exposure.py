"""Hostile tests of what the public routes give away, against a real gateway in production
mode: a customer's order view holds nothing internal, and exact stock stays with the admin."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest

from flashsale.engine.settings import Settings
from flashsale.loadtests.gateway_process import Gateway
from flashsale.store.db import Connection
from tests.gateway_helpers import assert_problem, client, new_sale_id, sale_body
from tests.metrics_helpers import parse_metrics, series
from tests.security_helpers import INTERNAL, Shop, production_gateway, seed_order


@pytest.fixture(scope="module")
def prod(settings: Settings, service_urls: dict[str, str]) -> Iterator[tuple[Gateway, Shop]]:
    with production_gateway(settings, service_urls) as running:
        yield running


async def _sale(http: httpx.AsyncClient, shop: Shop, units: int = 5) -> str:
    sale = new_sale_id("expo")
    body = sale_body([("p", units)], per_user_limit=0)
    assert (await http.put(f"/v1/admin/sales/{sale}", json=body, headers=shop.admin)).is_success
    assert (await http.post(f"/v1/admin/sales/{sale}/open", headers=shop.admin)).is_success
    return sale


async def test_the_customers_order_view_holds_nothing_internal(
    prod: tuple[Gateway, Shop], gateway_db: Connection
) -> None:
    """Before: GET /v1/orders/{order} showed authorisation ids, suppliers, costs, margins,
    adapter URLs and the providers' raw answers to anyone."""
    gw, shop = prod
    async with client(gw) as http:
        sale = await _sale(http, shop)
        order_id = new_sale_id("ord")
        await seed_order(gateway_db, sale, order_id, "alice")
        mine = await http.get(f"/v1/orders/{order_id}", headers=shop.as_customer("alice"))
        admin = await http.get(f"/v1/admin/orders/{order_id}", headers=shop.admin)
    assert mine.status_code == 200 and admin.status_code == 200
    doc, text = mine.json(), mine.text
    assert doc["status"] == "CONFIRMED" and doc["paid_minor"] == 2000
    # Every field a line shows is named here: a new one is a deliberate choice. The units
    # cancelled and refunded are the customer's own story; who ships, at what cost, is not.
    line = {"sku": "A", "qty": 2, "price_minor": 1000, "status": "allocated"}
    assert doc["lines"] == [{**line, "cancelled_qty": 0, "refunded_qty": 0}]
    assert doc["notifications"] == [
        {"topic": "order.confirmed", "at": doc["notifications"][0]["at"]}
    ]
    for secret in INTERNAL:
        assert secret not in text, secret
    hidden = ("saga", "transitions", "payment", "customer_id", "cost_minor", "margin_minor")
    for field in (*hidden, "supplier_id", "hold_supplier"):
        assert field not in text, field
    internals = orjson.dumps(admin.json()).decode()
    for secret in ("auth_internal_7", "payments.internal", "provider body"):
        assert secret in internals, f"the admin's view lost {secret}"


async def test_exact_stock_stays_with_the_admin(prod: tuple[Gateway, Shop]) -> None:
    """Before: /metrics and the SOLD_OUT detail told anyone the exact units left."""
    gw, shop = prod
    async with client(gw) as http:
        sale = await _sale(http, shop, units=3)
        too_many = await http.post(
            f"/v1/sales/{sale}/holds",
            json={"items": [{"sku": "A", "qty": 5}]},
            headers=shop.as_customer("alice"),
        )
        problem = assert_problem(too_many, 409, "SOLD_OUT")
        assert "3" not in problem["detail"], problem
        public = (await http.get("/metrics")).text
        admin = (await http.get("/metrics", headers=shop.admin)).text
    assert f'sale="{sale}"' not in public and "flashsale_stock_units" not in public
    # The gauges cover up to 50 open sales: other tests' sales may come first.
    stock = series(parse_metrics(admin), "flashsale_stock_units")
    assert any(labels["state"] == "available" for labels, _ in stock)
