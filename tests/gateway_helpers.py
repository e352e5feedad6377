"""Helpers for the end-to-end gateway tests: sale bodies, admin calls, problem+json checks."""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import urlsplit

import httpx

from flashsale.engine import load_settings
from flashsale.loadtests.crowd.passes import customer_token
from flashsale.loadtests.gateway_process import Gateway

# Plain HTTP on loopback; one context shared by every client, because building httpx's default
# one (the CA bundle) costs ~30 ms per client.
NO_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ADMIN_KEY = load_settings().admin_key
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def as_customer(customer: str) -> dict[str, str]:
    """The customer token the shop would give `customer` (dev mode's key)."""
    s = load_settings()
    return {"X-Customer-Token": customer_token(s.customer_secret, s.customer_audience, customer)}


PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}
Stock = list[tuple[str, int]]


def client(gw: Gateway, *, max_connections: int = 20, timeout_s: float = 30) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=gw.url,
        timeout=timeout_s,
        limits=httpx.Limits(max_connections=max_connections),
        verify=NO_TLS,
    )


async def crowd_post(
    gw: Gateway,
    path: str,
    bodies: Sequence[Any],
    *,
    connections: int = 200,
    headers: dict[str, str] | None = None,
) -> list[httpx.Response]:
    """POSTs every body at once over `connections` keep-alive connections, answers in order.

    One client per connection: a single httpx pool of 200 connections spends CPU on the order
    of connections x queued requests per request (httpcore's pool scan), which made 3,000
    requests take 20+ s of client CPU on 2 cores; single-connection pools take ~4 s."""
    gate = asyncio.Semaphore(connections)
    async with AsyncExitStack() as stack:
        fleet = [
            await stack.enter_async_context(client(gw, max_connections=1, timeout_s=60))
            for _ in range(connections)
        ]

        async def post(i: int, body: Any) -> httpx.Response:
            async with gate:
                return await fleet[i % connections].post(path, json=body, headers=headers)

        return list(await asyncio.gather(*(post(i, b) for i, b in enumerate(bodies))))


def new_sale_id(prefix: str) -> str:
    return f"gw-{prefix}-{uuid.uuid4().hex[:10]}"


def sale_body(
    stock: Stock | None = None,
    *,
    sku: str = "A",
    hold_ttl_s: int = 600,
    per_user_limit: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """A sale that started in the past; `stock` is [(supplier, units)] in priority order."""
    suppliers = [
        {"id": sup, "stock": units, "cost_minor": 500, "priority": i}
        for i, (sup, units) in enumerate(stock if stock is not None else [("p", 60), ("q", 40)])
    ]
    body: dict[str, Any] = {
        "name": "gateway test sale",
        "starts_at": "2020-01-01T00:00:00Z",
        "ends_at": None,
        "hold_ttl_s": hold_ttl_s,
        "per_user_limit": per_user_limit,
        "items": [{"sku": sku, "price_minor": 1000, "suppliers": suppliers}],
    }
    return {**body, **extra}


async def create_sale(http: httpx.AsyncClient, sale_id: str, body: dict[str, Any]) -> None:
    """PUT then open; fails the test unless both succeed."""
    put = await http.put(f"/v1/admin/sales/{sale_id}", json=body, headers=ADMIN)
    assert put.status_code == 201, put.text
    opened = await http.post(f"/v1/admin/sales/{sale_id}/open", headers=ADMIN)
    assert opened.status_code == 200, opened.text


async def admin_view(
    http: httpx.AsyncClient, sale_id: str, admin: dict[str, str] = ADMIN
) -> dict[str, Any]:
    reply = await http.get(f"/v1/admin/sales/{sale_id}", headers=admin)
    assert reply.status_code == 200, reply.text
    doc: dict[str, Any] = reply.json()
    return doc


def sku_view(view: dict[str, Any], sku: str = "A") -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in view["skus"] if s["sku"] == sku)
    return found


def supplier_counts(view: dict[str, Any], sku: str = "A") -> dict[str, dict[str, int]]:
    """supplier -> {loaded, available, reserved, sold} of one sku in the admin view."""
    names = ("loaded", "available", "reserved", "sold")
    return {s["supplier"]: {n: s[n] for n in names} for s in sku_view(view, sku)["suppliers"]}


def checkout_body(customer: str, qty: int = 1, sku: str = "A") -> dict[str, Any]:
    return {"customer_id": customer, "items": [{"sku": sku, "qty": qty}]}


async def checkout(
    http: httpx.AsyncClient,
    sale_id: str,
    customer: str,
    qty: int = 1,
    *,
    key: str | None = None,
) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return await http.post(
        f"/v1/sales/{sale_id}/holds", json=checkout_body(customer, qty), headers=headers
    )


async def hold_id_of(http: httpx.AsyncClient, sale_id: str, customer: str, qty: int = 1) -> str:
    reply = await checkout(http, sale_id, customer, qty)
    assert reply.status_code == 201, reply.text
    hold: str = reply.json()["hold_id"]
    return hold


PAYMENT = {"payment": {"method": "card", "token": "tok_visa"}}


def assert_problem(reply: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The exact status and code, as application/problem+json with every required member."""
    assert (reply.status_code, _code_of(reply)) == (status, code), reply.text
    content_type = reply.headers.get("content-type", "")
    assert content_type.split(";")[0].strip() == "application/problem+json", content_type
    doc: dict[str, Any] = reply.json()
    assert doc.keys() >= PROBLEM_FIELDS, doc
    assert doc["status"] == status
    assert all(isinstance(doc[f], str) for f in PROBLEM_FIELDS - {"status"}), doc
    assert "Traceback" not in reply.text and 'File "' not in reply.text, reply.text
    return doc


def _code_of(reply: httpx.Response) -> str | None:
    try:
        doc = reply.json()
    except ValueError:
        return None
    return doc.get("code") if isinstance(doc, dict) else None


async def raw_request(url: str, head: str, body: bytes = b"") -> httpx.Response:
    """Sends hand-written request bytes (e.g. a lying Content-Length) and reads one response."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(head.replace("\n", "\r\n").encode("latin-1") + b"\r\n" + body)
        await writer.drain()
        raw_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = raw_head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {
            k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)
        }
        content = await asyncio.wait_for(
            reader.readexactly(int(headers.get("content-length", "0"))), 10
        )
        return httpx.Response(status, headers=headers, content=content)
    finally:
        writer.close()
