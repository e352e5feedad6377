"""POST /v1/feeds/{supplier} on a real gateway: signed deliveries applied to the live sale,
every refusal a problem that stores nothing, the public view's freshness, /metrics."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx
import pytest

from flashsale.engine import load_settings
from flashsale.gateway.feed_status import FeedViews
from flashsale.gateway.openapi import document
from tests.feed_helpers import T0, at, signed, supplier_id, webhook_body
from tests.feed_webhook_helpers import SECRET, fed_sale, health, offer, post
from tests.gateway_helpers import (
    ADMIN,
    assert_problem,
)
from tests.helpers import eventually


async def test_a_signed_delivery_is_applied_and_a_repeat_is_a_duplicate(
    http: httpx.AsyncClient,
) -> None:
    sale, p, _ = await fed_sale(http)
    body = webhook_body(
        "d-1", [{"supplier_sku": "P-A", "on_hand": 12}, {"supplier_sku": "??", "on_hand": 1}]
    )
    headers = signed(SECRET, body)
    reply = await post(http, p, body, headers)
    assert reply.status_code == 202, reply.text
    assert reply.json() == {
        "delivery_id": "d-1",
        "duplicate": False,
        "applied": 1,
        "stale": 0,
        "quarantined": 0,
        "unknown": 1,
        "duplicates": 0,
    }
    assert await offer(http, sale, p) == 12
    again = await post(http, p, body, headers)  # the very same request, replayed
    assert (again.status_code, again.json()) == (200, {"delivery_id": "d-1", "duplicate": True})
    h = await health(http, p)
    assert h["deliveries"] == {"accepted": 1, "duplicate": 1}
    assert h["records"]["applied"] == 1 and h["records"]["unknown"] == 1
    assert h["last_as_of"] == "2026-11-21T18:00:00.000Z"
    # Re-signed under a new delivery id, the same records are just a delivery: nothing is news.
    body = webhook_body("d-2", [{"supplier_sku": "P-A", "on_hand": 12}])
    reply = await post(http, p, body, signed(SECRET, body))
    assert (reply.status_code, reply.json()["duplicates"]) == (202, 1)


async def test_out_of_order_spikes_and_bad_values(http: httpx.AsyncClient) -> None:
    sale, p, _ = await fed_sale(http, max_spike_pct=100)
    newer = webhook_body("new", [{"supplier_sku": "P-A", "on_hand": 20}], as_of=at(60))
    older = webhook_body("old", [{"supplier_sku": "P-A", "on_hand": 3}], as_of=at(0))
    assert (await post(http, p, newer, signed(SECRET, newer))).json()["applied"] == 1
    assert (await post(http, p, older, signed(SECRET, older))).json()["stale"] == 1
    assert await offer(http, sale, p) == 20
    items: list[dict[str, Any]] = [
        {"supplier_sku": "P-A", "on_hand": 55, "as_of": at(120)},  # +175 %: spike
        {"supplier_sku": "P-A", "on_hand": -2, "as_of": at(90)},
        {"supplier_sku": "P-A", "on_hand": "7.5", "as_of": at(80)},
    ]
    wild = webhook_body("wild", items)
    assert (await post(http, p, wild, signed(SECRET, wild))).json()["quarantined"] == 3
    assert await offer(http, sale, p) == 20
    held = (await http.get(f"/v1/admin/suppliers/{p}", headers=ADMIN)).json()["quarantine"]
    assert sorted(r["reason"] for r in held) == ["negative", "non-integer", "spike"]


async def test_refused_signatures_store_nothing(http: httpx.AsyncClient) -> None:
    sale, p, _ = await fed_sale(http)
    body = webhook_body("d-1", [{"supplier_sku": "P-A", "on_hand": 1}])
    now = int(time.time())
    good = signed(SECRET, body)
    cases = [
        ({"content-type": "application/json"}, "SIGNATURE_MISSING"),
        ({**good, "x-flashsale-signature": ""}, "SIGNATURE_MISSING"),
        ({k: v for k, v in good.items() if k != "x-flashsale-timestamp"}, "SIGNATURE_MISSING"),
        (signed("another-secret-0123456789abcdef0123", body), "SIGNATURE_INVALID"),
        ({**good, "x-flashsale-signature": good["x-flashsale-signature"][3:]}, "SIGNATURE_INVALID"),
        ({**good, "x-flashsale-signature": "v1=" + "0" * 64}, "SIGNATURE_INVALID"),
        # A captured request with its timestamp moved on to stretch the window: the MAC covers it.
        ({**good, "x-flashsale-timestamp": str(now + 5)}, "SIGNATURE_INVALID"),
        # 305, not 301: `now` is whole seconds, and the gateway reads its clock a moment later.
        (signed(SECRET, body, ts=now - 305), "SIGNATURE_STALE"),
        (signed(SECRET, body, ts=now + 305), "SIGNATURE_STALE"),
        ({**good, "x-flashsale-timestamp": "soon"}, "SIGNATURE_STALE"),
    ]
    for headers, code in cases:
        assert_problem(await post(http, p, body, headers), 401, code)
    # A good signature over another body: one new delivery id is a new body.
    other = webhook_body("d-2", [{"supplier_sku": "P-A", "on_hand": 1}])
    assert_problem(await post(http, p, other, good), 401, "SIGNATURE_INVALID")
    assert (await health(http, p))["deliveries"] == {"accepted": 0, "duplicate": 0}
    assert await offer(http, sale, p) == 60


async def test_a_timestamp_of_other_digits_is_refused(http: httpx.AsyncClient) -> None:
    """Latin-1 0xB2 in a header reads as a superscript two, which str.isdigit() takes and int()
    refuses: still a 401, not a 500."""
    sale, p, _ = await fed_sale(http)
    body = webhook_body("d-1", [{"supplier_sku": "P-A", "on_hand": 1}])
    headers = [(k.encode(), v.encode()) for k, v in signed(SECRET, body).items()]
    headers = [(k, b"\xb2" if k == b"x-flashsale-timestamp" else v) for k, v in headers]
    reply = await http.post(f"/v1/feeds/{p}", content=body, headers=headers)
    assert_problem(reply, 401, "SIGNATURE_STALE")
    assert await offer(http, sale, p) == 60


async def test_text_postgresql_cannot_store_is_only_a_bad_record(http: httpx.AsyncClient) -> None:
    """A NUL in a supplier SKU or a value is the record's problem (unknown, quarantined), not a
    503 the supplier would retry forever."""
    sale, p, _ = await fed_sale(http)
    items: list[dict[str, Any]] = [
        {"supplier_sku": "P-A\u0000", "on_hand": 1},
        {"supplier_sku": "P-A", "on_hand": "7\u0000"},
    ]
    body = webhook_body("d-nul", items)
    reply = await post(http, p, body, signed(SECRET, body))
    assert reply.status_code == 202, reply.text
    assert (reply.json()["unknown"], reply.json()["quarantined"]) == (1, 1)
    held = (await http.get(f"/v1/admin/suppliers/{p}", headers=ADMIN)).json()["quarantine"]
    assert [(r["on_hand"], r["reason"]) for r in held] == [("7\ufffd", "non-integer")]
    assert await offer(http, sale, p) == 60


MALFORMED: dict[str, tuple[bytes, int, str]] = {
    "not json": (b"{nope", 400, "MALFORMED_JSON"),
    "not an object": (b"[1]", 422, "INVALID_REQUEST"),
    "no delivery_id": (b'{"as_of": "2026-11-21T18:00:00Z", "items": []}', 422, "INVALID_REQUEST"),
    "bad delivery_id": (webhook_body("a b", []), 422, "INVALID_REQUEST"),
    "as_of without zone": (
        webhook_body("d", [], as_of="2026-11-21T18:00:00"),
        422,
        "INVALID_REQUEST",
    ),
    "as_of not a time": (webhook_body("d", [], as_of="noon"), 422, "INVALID_REQUEST"),
    "items not a list": (
        b'{"delivery_id": "d", "as_of": "' + T0.encode() + b'", "items": {}}',
        422,
        "INVALID_REQUEST",
    ),
    "item without on_hand": (webhook_body("d", [{"supplier_sku": "P-A"}]), 422, "INVALID_REQUEST"),
    "item extra field": (
        webhook_body("d", [{"supplier_sku": "P-A", "on_hand": 1, "x": 1}]),
        422,
        "INVALID_REQUEST",
    ),
    "supplier_sku not a string": (
        webhook_body("d", [{"supplier_sku": 5, "on_hand": 1}]),
        422,
        "INVALID_REQUEST",
    ),
    "item as_of a number": (
        webhook_body("d", [{"supplier_sku": "P-A", "on_hand": 1, "as_of": 5}]),
        422,
        "INVALID_REQUEST",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_a_malformed_delivery_is_refused_and_stores_nothing(
    http: httpx.AsyncClient, case: str
) -> None:
    sale, p, _ = await fed_sale(http)
    body, status, code = MALFORMED[case]
    assert_problem(await post(http, p, body, signed(SECRET, body)), status, code)
    assert (await health(http, p))["deliveries"] == {"accepted": 0, "duplicate": 0}
    assert await offer(http, sale, p) == 60


async def test_other_refusals(http: httpx.AsyncClient) -> None:
    _, p, q = await fed_sale(http)
    body = webhook_body("d-1", [{"supplier_sku": "P-A", "on_hand": 1}])
    headers = signed(SECRET, body)
    assert_problem(await post(http, q, body, headers), 404, "NOT_FOUND")  # q has no feed
    assert_problem(await post(http, supplier_id("ghost"), body, headers), 404, "NOT_FOUND")
    assert_problem(await post(http, "bad id!", body, headers), 422, "INVALID_REQUEST")
    text = {**headers, "content-type": "text/plain"}
    assert_problem(await post(http, p, body, text), 415, "UNSUPPORTED_MEDIA_TYPE")
    huge = webhook_body("big", [{"supplier_sku": "P-A" * 30, "on_hand": 1}] * 20_000)
    assert len(huge) > 2_097_152
    assert_problem(await post(http, p, huge, signed(SECRET, huge)), 413, "PAYLOAD_TOO_LARGE")
    assert (await health(http, p))["deliveries"] == {"accepted": 0, "duplicate": 0}


async def test_the_public_view_says_how_current_the_stock_is(http: httpx.AsyncClient) -> None:
    sale, p, _ = await fed_sale(http, stale_after_s=6)  # the view is cached 2 s per worker
    view = (await http.get(f"/v1/sales/{sale}")).json()
    assert view["stock_as_of"] is None  # no level yet
    body = webhook_body("d-1", [{"supplier_sku": "P-A", "on_hand": 30}], as_of=at(0))
    assert (await post(http, p, body, signed(SECRET, body))).status_code == 202

    async def fresh() -> None:
        doc = (await http.get(f"/v1/sales/{sale}")).json()
        assert doc["stock_as_of"] == "2026-11-21T18:00:00.000Z"
        assert doc["updating"] is False

    await eventually(fresh, timeout_s=10)

    async def behind() -> None:  # no update for more than stale_after_s
        assert (await http.get(f"/v1/sales/{sale}")).json()["updating"] is True
        assert (await health(http, p))["stale"] is True

    await eventually(behind, timeout_s=15)


async def test_metrics_carry_feed_health(http: httpx.AsyncClient) -> None:
    _, p, _ = await fed_sale(http)
    body = webhook_body(
        "d-1",
        [
            {"supplier_sku": "P-A", "on_hand": 30},
            {"supplier_sku": "P-A", "on_hand": -1, "as_of": at(-1)},
        ],
    )
    assert (await post(http, p, body, signed(SECRET, body))).status_code == 202

    async def counted() -> None:
        page = (await http.get("/metrics")).text
        assert f'flashsale_feed_records_total{{outcome="applied",supplier="{p}"}} 1.0' in page
        assert f'flashsale_feed_records_total{{outcome="quarantined",supplier="{p}"}} 1.0' in page
        assert f'flashsale_feed_quarantine_open{{supplier="{p}"}} 1.0' in page
        assert f'flashsale_feed_stale{{supplier="{p}"}} 0.0' in page
        assert f'flashsale_feed_deliveries_total{{outcome="accepted",supplier="{p}"}} 1.0' in page
        assert "flashsale_feeds_unreadable 0.0" in page

    await eventually(counted, timeout_s=15, interval_s=0.5)


async def test_a_supplier_that_is_not_a_webhook_feed_takes_no_webhooks(
    http: httpx.AsyncClient,
) -> None:
    """Switching a feed to poll or file keeps its sealed secret (for a switch back), but a
    signed delivery is then refused like one to a supplier without a webhook feed."""
    sale, p, _ = await fed_sale(http)
    for kind, extra in (("poll", {"url": "http://127.0.0.1:9/stock"}), ("file", {})):
        feed = {"kind": kind, "sku_map": [{"supplier_sku": "P-A", "sku": "A"}], **extra}
        reply = await http.put(
            f"/v1/admin/suppliers/{p}", json={"name": "P", "feed": feed}, headers=ADMIN
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["feed"]["secret_set"] is True
        body = webhook_body(f"d-{kind}", [{"supplier_sku": "P-A", "on_hand": 5}])
        assert_problem(await post(http, p, body, signed(SECRET, body)), 404, "NOT_FOUND")
    assert (await health(http, p))["deliveries"] == {"accepted": 0, "duplicate": 0}
    assert await offer(http, sale, p) == 60


async def test_feed_views_without_postgresql_say_nothing_rather_than_fail(test_url: str) -> None:
    """A closed pool raises asyncpg's InterfaceError, not a PostgresError: the public view
    leaves the freshness out and /metrics says the feeds are unreadable."""
    pool = await asyncpg.create_pool(test_url, min_size=0, max_size=1)
    await pool.close()
    views = FeedViews(pool)
    assert await views.sale("any-sale") is None
    assert await views.samples() == [("flashsale_feeds_unreadable", {}, 1)]


def test_the_documented_signature_window_is_the_setting() -> None:
    doc = document(dataclasses.replace(load_settings(), feed_signature_window_s=120))
    scheme = doc["components"]["securitySchemes"]["feedTimestamp"]
    assert "within 120 s of the gateway's clock" in scheme["description"]


async def test_a_supplier_without_a_feed_has_the_same_shape(http: httpx.AsyncClient) -> None:
    _, p, q = await fed_sale(http)  # q sells in the sale, with no feed
    fed = (await http.get(f"/v1/admin/suppliers/{p}", headers=ADMIN)).json()
    bare = (await http.get(f"/v1/admin/suppliers/{q}", headers=ADMIN)).json()
    assert bare.keys() == fed.keys()
    assert (bare["feed"], bare["health"], bare["quarantine"]) == (None, None, [])
