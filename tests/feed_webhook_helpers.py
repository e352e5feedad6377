"""Helpers of the webhook tests: a sale with a webhook-fed supplier on a real gateway, signed
posts, and what the admin routes say about the offer and the feed's health."""

from __future__ import annotations

from typing import Any

import httpx

from tests.feed_helpers import supplier_id
from tests.gateway_helpers import (
    ADMIN,
    admin_view,
    create_sale,
    new_sale_id,
    sale_body,
    supplier_counts,
)

SECRET = "acme-feed-secret-0123456789abcdef0123"


async def fed_sale(http: httpx.AsyncClient, **thresholds: int) -> tuple[str, str, str]:
    """A sale of sku A from p (60) then q (40), p with a webhook feed; (sale, p, q)."""
    p, q = supplier_id("p"), supplier_id("q")
    sale = new_sale_id("feed")
    await create_sale(http, sale, sale_body([(p, 60), (q, 40)]))
    body = {
        "name": "P",
        "feed": {
            "kind": "webhook",
            "secret": SECRET,
            "sku_map": [{"supplier_sku": "P-A", "sku": "A"}],
            "thresholds": thresholds,
        },
    }
    reply = await http.put(f"/v1/admin/suppliers/{p}", json=body, headers=ADMIN)
    assert reply.status_code == 201, reply.text
    return sale, p, q


async def post(
    http: httpx.AsyncClient, supplier: str, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    return await http.post(f"/v1/feeds/{supplier}", content=body, headers=headers)


async def offer(http: httpx.AsyncClient, sale: str, supplier: str) -> int:
    return int(supplier_counts(await admin_view(http, sale))[supplier]["available"])


async def health(http: httpx.AsyncClient, supplier: str) -> dict[str, Any]:
    reply = await http.get(f"/v1/admin/suppliers/{supplier}", headers=ADMIN)
    doc: dict[str, Any] = reply.json()["health"]
    return doc
