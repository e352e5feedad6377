"""The sale body's fields for shoppers (v1.1): an optional `return_url` template, where the queue
page sends a shopper after reserving, and an optional `name` per item. Bad values get
`422 INVALID_REQUEST` and nothing is stored, in Redis or PostgreSQL, whether the PUT creates or
replaces the sale; good ones are stored and reach the public sale view."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from flashsale.engine import keys
from flashsale.engine.connection import RedisClient
from flashsale.engine.errors import InvalidInput
from flashsale.engine.validation import check_name, check_return_url
from flashsale.store import sales
from flashsale.store.db import Connection
from tests.gateway_helpers import ADMIN, assert_problem, new_sale_id, sale_body
from tests.helpers import eventually, snapshot

RETURN_URL = "https://shop.example/checkout?hold={hold_id}"
LONGEST = "https://shop.example/{hold_id}/".ljust(2048, "p")  # the longest one allowed

GOOD_RETURN_URLS = [
    RETURN_URL,
    "https://shop.example:8443/orders/{hold_id}/pay",
    "https://SHOP.example./pay#{hold_id}",
    "https://203.0.113.7/pay?hold={hold_id}&from=queue",
    "http://127.0.0.1:8080/c?h={hold_id}",
    "http://localhost/pay/{hold_id}",
    "http://[::1]:9000/pay?hold={hold_id}",
    LONGEST,
]
BAD_RETURN_URLS: dict[str, Any] = {
    "a number": 5,
    "a list": [RETURN_URL],
    "an object": {"url": RETURN_URL},
    "empty": "",
    "over 2048 characters": LONGEST + "p",
    "no placeholder": "https://shop.example/checkout",
    "placeholder twice": "https://shop.example/{hold_id}?again={hold_id}",
    "another placeholder": "https://shop.example/{hold_id}?c={customer_id}",
    "an unclosed brace": "https://shop.example/{hold_id}?x={",
    "placeholder misspelt": "https://shop.example/{hold}",
    "relative": "/checkout?hold={hold_id}",
    "scheme-relative": "//shop.example/checkout?hold={hold_id}",
    "one slash": "https:/shop.example/{hold_id}",
    "javascript": "javascript:alert(1)//{hold_id}",
    "data": "data:text/html,{hold_id}",
    "ftp": "ftp://shop.example/{hold_id}",
    "http to the internet": "http://shop.example/checkout?hold={hold_id}",
    "http to a loopback-looking name": "http://127.0.0.1.shop.example/{hold_id}",
    "placeholder in the host": "https://{hold_id}.shop.example/pay",
    "user and password": "https://user:secret@shop.example/{hold_id}",
    "a disguised host": "https://shop.example@evil.example/{hold_id}",
    "a backslash": "https://shop.example\\@evil.example/{hold_id}",
    "port out of range": "https://shop.example:70000/{hold_id}",
    "port not a number": "https://shop.example:https/{hold_id}",
    "bad IPv6": "https://[12345::1]/{hold_id}",
    "bad IPv4": "https://300.1.2.3/{hold_id}",
    "underscore in the host": "https://shop_example.com/{hold_id}",
    "a space": "https://shop.example/check out?hold={hold_id}",
    "a newline": "https://shop.example/\n{hold_id}",
    "not ASCII": "https://shop.example/caf\u00e9?hold={hold_id}",
}
BAD_NAMES: dict[str, Any] = {
    "a number": 5,
    "null": None,
    "a list": ["Red runner"],
    "empty": "",
    "201 characters": "n" * 201,
    "only spaces": "   ",
    "a leading space": " Red runner",
    "a trailing space": "Red runner ",
    "a newline": "Red\nrunner",
    "a tab": "Red\trunner",
    "a NUL": "Red\x00runner",
    "an escape sequence": "\x1b[31mRed runner",
    "a right-to-left override": "Red \u202erunner",
    "a zero-width space": "Red\u200brunner",
}


def _body(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(sale_body())
    body["items"][0]["name"] = "Red runner"
    body["return_url"] = RETURN_URL
    return {**body, **changes}


def _named(name: Any) -> dict[str, Any]:
    body = _body()
    body["items"][0]["name"] = name
    return body


CASES = {f"return_url {k}": (_body(return_url=v), "return_url") for k, v in BAD_RETURN_URLS.items()}
CASES |= {f"item name {k}": (_named(v), "items[0].name") for k, v in BAD_NAMES.items()}


# --- the rules, without services ---------------------------------------------------------------


@pytest.mark.parametrize("url", GOOD_RETURN_URLS)
def test_good_return_urls_pass(url: str) -> None:
    assert check_return_url("return_url", url) == url


@pytest.mark.parametrize("url", list(BAD_RETURN_URLS.values()), ids=list(BAD_RETURN_URLS))
def test_bad_return_urls_are_refused(url: Any) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_return_url("return_url", url)
    assert refused.value.field == "return_url"


@pytest.mark.parametrize("name", list(BAD_NAMES.values()), ids=list(BAD_NAMES))
def test_bad_names_are_refused(name: Any) -> None:
    with pytest.raises(InvalidInput):
        check_name("items[0].name", name)


def test_names_may_be_any_printable_text() -> None:
    for name in (
        "Red runner, size 42",
        "Turnschuh \u00bbRot\u00ab \u2013 42",
        "\u8d64\u3044\u9774",
        "<b>x</b>",
    ):
        assert check_name("name", name) == name


# --- over HTTP ---------------------------------------------------------------------------------


async def _stored(db: Connection, redis_client: RedisClient, sale: str) -> tuple[Any, ...]:
    """What PostgreSQL and Redis hold of the sale."""
    record = await sales.load_sale_record(db, sale)
    indexed = await redis_client.sismember(keys.sales_index(), sale)
    return record, indexed, await snapshot(redis_client, sale)


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
@pytest.mark.parametrize("replacing", [False, True], ids=["create", "replace"])
async def test_a_bad_return_url_or_name_is_refused_and_nothing_is_stored(
    http: httpx.AsyncClient,
    redis_client: RedisClient,
    gateway_db: Connection,
    case: tuple[dict[str, Any], str],
    replacing: bool,
) -> None:
    body, field = case
    sale = new_sale_id("shopper-fields")
    if replacing:
        put = await http.put(f"/v1/admin/sales/{sale}", json=_body(), headers=ADMIN)
        assert put.status_code == 201, put.text
    before = await _stored(gateway_db, redis_client, sale)
    reply = await http.put(f"/v1/admin/sales/{sale}", json=body, headers=ADMIN)
    problem = assert_problem(reply, 422, "INVALID_REQUEST")
    assert field in problem["detail"], problem
    assert await _stored(gateway_db, redis_client, sale) == before
    if not replacing:
        assert before[:2] == (None, False)


async def test_the_public_view_carries_the_names_and_the_return_url(
    http: httpx.AsyncClient, gateway_db: Connection
) -> None:
    sale = new_sale_id("shopper-fields")
    body = _body(name="Midnight drop")
    body["items"].append({**body["items"][0], "sku": "B", "name": "Blue runner"})
    del body["items"][1]["name"]
    put = await http.put(f"/v1/admin/sales/{sale}", json=body, headers=ADMIN)
    assert put.status_code == 201, put.text
    view = (await http.get(f"/v1/sales/{sale}")).json()
    assert (view["name"], view["return_url"]) == ("Midnight drop", RETURN_URL)
    assert [(i["sku"], i["name"]) for i in view["items"]] == [("A", "Red runner"), ("B", "B")]
    assert view["waiting_room"] == {"enabled": False, "token_ttl_s": 300}
    stored = await sales.load_sale_record(gateway_db, sale)
    assert stored is not None and stored[0].return_url == RETURN_URL

    # A replace without a return_url (or with null) takes it away, as any other field.
    without = {k: v for k, v in body.items() if k != "return_url"}
    for replacement, url in (
        (without, None),
        (body, RETURN_URL),
        ({**body, "return_url": None}, None),
    ):
        put = await http.put(f"/v1/admin/sales/{sale}", json=replacement, headers=ADMIN)
        assert put.status_code == 200, put.text
        stored = await sales.load_sale_record(gateway_db, sale)
        assert stored is not None and stored[0].return_url == (url or "")

        async def the_view_says(url: str | None = url) -> None:
            assert (await http.get(f"/v1/sales/{sale}")).json()["return_url"] == url

        await eventually(the_view_says)  # each worker keeps a record for up to 3 s
