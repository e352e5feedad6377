"""Hostile tests of the body's type, against a real gateway in production mode: a cross-site
form (text/plain or form-encoded, sent without a CORS preflight) never acts."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from flashsale.engine.connection import RedisClient
from flashsale.engine.settings import Settings
from flashsale.loadtests.gateway_process import Gateway
from tests.gateway_helpers import assert_problem, client, new_sale_id, sale_body
from tests.helpers import snapshot
from tests.security_helpers import Shop, production_gateway, room_opened
from tests.waiting_room_helpers import room_body, room_snapshot

FORM_TYPES = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]


@pytest.fixture(scope="module")
def prod(settings: Settings, service_urls: dict[str, str]) -> Iterator[tuple[Gateway, Shop]]:
    with production_gateway(settings, service_urls) as running:
        yield running


@pytest.mark.parametrize("content_type", [*FORM_TYPES, None])
async def test_a_json_body_of_another_type_places_no_hold(
    prod: tuple[Gateway, Shop], redis_client: RedisClient, content_type: str | None
) -> None:
    """Before: a JSON checkout sent as text/plain placed a hold."""
    gw, shop = prod
    sale = new_sale_id("media")
    async with client(gw) as http:
        body = sale_body()
        assert (await http.put(f"/v1/admin/sales/{sale}", json=body, headers=shop.admin)).is_success
        assert (await http.post(f"/v1/admin/sales/{sale}/open", headers=shop.admin)).is_success
        before = await snapshot(redis_client, sale)
        headers = shop.as_customer("alice")
        if content_type:
            headers["Content-Type"] = content_type
        checkout = orjson.dumps({"items": [{"sku": "A", "qty": 1}]})
        reply = await http.post(f"/v1/sales/{sale}/holds", content=checkout, headers=headers)
        assert_problem(reply, 415, "UNSUPPORTED_MEDIA_TYPE")
        replaced = {**headers, **shop.admin}
        changed = await http.put(
            f"/v1/admin/sales/{sale}", content=orjson.dumps(sale_body([("p", 1)])), headers=replaced
        )
        assert_problem(changed, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert await snapshot(redis_client, sale) == before


@pytest.mark.parametrize("content_type", FORM_TYPES)
async def test_a_join_or_a_confirm_of_another_type_does_nothing(
    prod: tuple[Gateway, Shop], redis_client: RedisClient, content_type: str
) -> None:
    gw, shop = prod
    sale = new_sale_id("media")
    async with client(gw) as http:
        body = room_body(10, rate=1)
        assert (await http.put(f"/v1/admin/sales/{sale}", json=body, headers=shop.admin)).is_success
        assert (await http.post(f"/v1/admin/sales/{sale}/open", headers=shop.admin)).is_success
        headers = {**shop.as_customer("alice"), "Content-Type": content_type}
        await room_opened(redis_client, sale)
        before = await room_snapshot(redis_client, sale)
        join = await http.post(f"/v1/sales/{sale}/queue", content=b"{}", headers=headers)
        assert_problem(join, 415, "UNSUPPORTED_MEDIA_TYPE")
        pay = orjson.dumps({"payment": {"method": "card", "token": "t"}})
        confirm = await http.post(
            f"/v1/sales/{sale}/holds/h1/confirm", content=pay, headers=headers
        )
        assert_problem(confirm, 415, "UNSUPPORTED_MEDIA_TYPE")
        assert await room_snapshot(redis_client, sale) == before
