"""PUT and GET /v1/admin/suppliers/{supplier} on a real gateway: the config stored in
PostgreSQL, the secret never shown, every bad body a 422 problem that changes nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from flashsale.gateway.feed_schemas import parse_supplier
from flashsale.gateway.problems import Problem
from flashsale.store.feed_secrets import SecretUnreadable, key_bytes, seal, unseal
from tests.feed_helpers import supplier_id
from tests.gateway_helpers import ADMIN, assert_problem

SECRET = "s3cret-of-the-acme-feed-0123456789abcdef"


def supplier_body(**feed: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "kind": "webhook",
        "secret": SECRET,
        "sku_map": [
            {"supplier_sku": "ACME 1/blue", "sku": "A"},
            {"supplier_sku": "ACME-6PK", "sku": "B", "pack_size": 6},
        ],
        "thresholds": {"max_spike_pct": 300, "stale_after_s": 120},
    }
    return {"name": "Acme Wholesale", "feed": {**base, **feed}}


async def put(http: httpx.AsyncClient, supplier: str, body: Any) -> httpx.Response:
    return await http.put(f"/v1/admin/suppliers/{supplier}", json=body, headers=ADMIN)


async def get(http: httpx.AsyncClient, supplier: str) -> dict[str, Any]:
    reply = await http.get(f"/v1/admin/suppliers/{supplier}", headers=ADMIN)
    assert reply.status_code == 200, reply.text
    doc: dict[str, Any] = reply.json()
    return doc


def stored(doc: dict[str, Any]) -> dict[str, Any]:
    """The view less what time alone moves (the feed's age)."""
    health = {k: v for k, v in (doc["health"] or {}).items() if k != "age_s"}
    return {**doc, "health": health}


async def test_a_supplier_feed_is_stored_and_shown_without_its_secret(
    http: httpx.AsyncClient,
) -> None:
    s = supplier_id("acme")
    created = await put(http, s, supplier_body())
    assert created.status_code == 201, created.text
    doc = await get(http, s)
    assert SECRET not in created.text and SECRET not in str(doc)
    assert doc["name"] == "Acme Wholesale"
    feed = doc["feed"]
    assert (feed["kind"], feed["secret_set"], feed["format"]) == ("webhook", True, "json")
    assert feed["sku_map"] == [
        {"supplier_sku": "ACME 1/blue", "sku": "A", "pack_size": 1},
        {"supplier_sku": "ACME-6PK", "sku": "B", "pack_size": 6},
    ]
    assert feed["thresholds"] == {
        "max_units": 1_000_000,
        "max_drop_pct": 100,
        "max_spike_pct": 300,
        "min_base_units": 10,
        "stale_after_s": 120,
        "max_future_s": 300,
    }
    health = doc["health"]
    assert health["deliveries"] == {"accepted": 0, "duplicate": 0}
    assert health["last_update_at"] is None and health["stale"] is False
    assert doc["quarantine"] == []
    # A replace without a secret keeps the stored one; the map is replaced whole.
    body = supplier_body(sku_map=[{"supplier_sku": "X", "sku": "C"}])
    del body["feed"]["secret"]
    replaced = await put(http, s, body)
    assert replaced.status_code == 200, replaced.text
    feed = (await get(http, s))["feed"]
    assert feed["secret_set"] is True
    assert feed["sku_map"] == [{"supplier_sku": "X", "sku": "C", "pack_size": 1}]


async def test_poll_and_file_feeds(http: httpx.AsyncClient) -> None:
    s = supplier_id("poller")
    body = {
        "name": "Poller",
        "feed": {"kind": "poll", "url": "http://127.0.0.1:9/stock", "interval_s": 30},
    }
    assert (await put(http, s, body)).status_code == 201
    feed = (await get(http, s))["feed"]
    assert (feed["url"], feed["interval_s"], feed["secret_set"]) == (
        "http://127.0.0.1:9/stock",
        30,
        False,
    )
    f = supplier_id("filer")
    assert (
        await put(http, f, {"name": "F", "feed": {"kind": "file", "format": "xml"}})
    ).status_code == 201
    assert (await get(http, f))["feed"]["format"] == "xml"


BAD_FEEDS: dict[str, Any] = {
    "kind unknown": {"kind": "pigeon"},
    "poll without url": {"kind": "poll", "secret": None},
    "poll url not http": {"kind": "poll", "url": "ftp://x/y"},
    "poll url no host": {"kind": "poll", "url": "http:///stock"},
    "poll url bad port": {"kind": "poll", "url": "http://[::1"},
    "poll interval 0": {"kind": "poll", "url": "http://x/y", "interval_s": 0},
    "url on a webhook": {"url": "http://x/y"},
    "format unknown": {"format": "yaml"},
    "secret empty": {"secret": ""},
    "secret not a string": {"secret": 12},
    "secret too long": {"secret": "x" * 513},
    "sku_map not a list": {"sku_map": {"a": "b"}},
    "supplier_sku twice": {
        "sku_map": [{"supplier_sku": "X", "sku": "A"}, {"supplier_sku": "X", "sku": "B"}]
    },
    "sku twice": {
        "sku_map": [{"supplier_sku": "X", "sku": "A"}, {"supplier_sku": "Y", "sku": "A"}]
    },
    "sku not an id": {"sku_map": [{"supplier_sku": "X", "sku": "a b"}]},
    "supplier_sku blank-edged": {"sku_map": [{"supplier_sku": " X", "sku": "A"}]},
    "supplier_sku control char": {"sku_map": [{"supplier_sku": "X\n", "sku": "A"}]},
    "pack_size 0": {"sku_map": [{"supplier_sku": "X", "sku": "A", "pack_size": 0}]},
    "pack_size float": {"sku_map": [{"supplier_sku": "X", "sku": "A", "pack_size": 1.5}]},
    "map row extra field": {"sku_map": [{"supplier_sku": "X", "sku": "A", "cost": 1}]},
    "threshold unknown": {"thresholds": {"max_bananas": 3}},
    "drop over 100": {"thresholds": {"max_drop_pct": 101}},
    "stale negative": {"thresholds": {"stale_after_s": -1}},
    "future over a day": {"thresholds": {"max_future_s": 86_401}},
    "thresholds a list": {"thresholds": [1]},
    "feed unknown field": {"colour": "red"},
}


@pytest.mark.parametrize("case", sorted(BAD_FEEDS))
async def test_a_bad_feed_is_refused_and_changes_nothing(
    http: httpx.AsyncClient, case: str
) -> None:
    s = supplier_id("acme")
    assert (await put(http, s, supplier_body())).status_code == 201
    before = await get(http, s)
    feed = {k: v for k, v in supplier_body(**BAD_FEEDS[case])["feed"].items() if v is not None}
    reply = await put(http, s, {"name": "Changed", "feed": feed})
    assert_problem(reply, 422, "INVALID_REQUEST")
    assert stored(await get(http, s)) == stored(before)


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"name": "x"},
        {"feed": {"kind": "file"}},
        {"name": "", "feed": {"kind": "file"}},
        {"name": "x", "feed": {"kind": "file"}, "extra": 1},
        {"name": "x", "feed": "file"},
    ],
)
async def test_a_bad_body_is_refused(http: httpx.AsyncClient, body: Any) -> None:
    s = supplier_id("acme")
    assert_problem(await put(http, s, body), 422, "INVALID_REQUEST")
    assert_problem(await http.get(f"/v1/admin/suppliers/{s}", headers=ADMIN), 404, "NOT_FOUND")


async def test_the_admin_routes_refuse_the_rest(http: httpx.AsyncClient) -> None:
    s = supplier_id("acme")
    no_secret = supplier_body()
    del no_secret["feed"]["secret"]
    assert_problem(await put(http, s, no_secret), 422, "INVALID_REQUEST")  # webhook needs one
    reply = await http.put(f"/v1/admin/suppliers/{s}", json=supplier_body())
    assert_problem(reply, 401, "UNAUTHORIZED")
    assert_problem(await http.get(f"/v1/admin/suppliers/{s}"), 401, "UNAUTHORIZED")
    assert_problem(await put(http, "not an id!", supplier_body()), 422, "INVALID_REQUEST")
    reply = await http.put(
        f"/v1/admin/suppliers/{s}",
        content=b"{",
        headers={**ADMIN, "content-type": "application/json"},
    )
    assert_problem(reply, 400, "MALFORMED_JSON")
    reply = await http.put(
        f"/v1/admin/suppliers/{s}",
        content=b"name=x",
        headers={**ADMIN, "content-type": "text/plain"},
    )
    assert_problem(reply, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert_problem(await http.get(f"/v1/admin/suppliers/{s}", headers=ADMIN), 404, "NOT_FOUND")


def test_outside_dev_a_feed_secret_must_be_strong() -> None:
    for weak in ("short", "dev-feed-key-not-for-production", "changeme"):
        with pytest.raises(Problem) as refused:
            parse_supplier(supplier_body(secret=weak), dev=False)
        assert refused.value.code == "INVALID_REQUEST"
    assert parse_supplier(supplier_body(), dev=False).secret == SECRET
    assert parse_supplier(supplier_body(secret="short"), dev=True).secret == "short"


def test_a_sealed_secret_opens_only_with_its_key_and_supplier() -> None:
    key = key_bytes("k" * 40)
    sealed = seal(key, "acme", SECRET)
    assert SECRET.encode() not in sealed
    assert unseal(key, "acme", sealed) == SECRET
    assert seal(key, "acme", SECRET) != sealed  # a fresh nonce every time
    for bad_key, supplier, blob in (
        (key_bytes("x" * 40), "acme", sealed),  # another FLASHSALE_FEED_KEY
        (key, "beta", sealed),  # copied to another supplier's row
        (key, "acme", sealed[:-1] + bytes([sealed[-1] ^ 1])),  # tampered
        (key, "acme", b"\x02" + sealed[1:]),  # unknown format
    ):
        with pytest.raises(SecretUnreadable):
            unseal(bad_key, supplier, blob)
