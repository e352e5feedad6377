"""The saga's outside parties behind two small interfaces, and the built-in HTTP adapters.

A business refusal (a declined card, a supplier out of stock) is an answer, returned as a value.
Anything else (a timeout, a refused connection, a 5xx, a reply that is not the protocol) raises
`PartyUnavailable`: the step is tried again later with the same idempotency key, so a call that
did reach the party before its answer was lost is not done twice.

Protocol of the built-in adapters (the simulators in loadtests/simulators/ speak it), every
write carrying an `Idempotency-Key` header (and every call the order's `X-Request-Id`, when it
has one), bodies in JSON, money in integer minor units:
  payment  POST {payment_url}/authorizations {order_id, customer_id, amount_minor, payment_ref}
             -> 201 {id, status: authorized | declined, reason}
           POST {payment_url}/authorizations/{id}/capture {amount_minor} -> 200 {status}
           POST {payment_url}/authorizations/{id}/void {}                -> 200 {status}
           POST {payment_url}/authorizations/{id}/refund {amount_minor}  -> 200 {status}
           refusals: 409 {code, detail}
  supplier POST {supplier_url}/allocations {sku, qty, lock_s} -> 201 {id, status: locked}
             | 409 {code: OUT_OF_STOCK | UNKNOWN_SKU, detail}
           POST {supplier_url}/allocations/{id}/confirm | /cancel -> 200 {status} | 409 {code}
           GET  {supplier_url}/stock/{sku} -> 200 {available, cost_minor} | 404
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import httpx
import orjson

from flashsale.engine import logs
from flashsale.engine.errors import FlashsaleError


class PartyUnavailable(FlashsaleError):
    """The party gave no usable answer; try again later with the same key."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A party's answer to a write: ok, or refused with a stable code and why."""

    ok: bool
    ref: str = ""  # the party's id of what was created (authorization, allocation)
    code: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class StockQuote:
    supplier_id: str
    available: int
    cost_minor: int


class PaymentProvider(Protocol):
    async def authorize(
        self, key: str, order_id: str, customer_id: str, amount_minor: int, payment_ref: str
    ) -> Answer: ...

    async def capture(self, key: str, authorization_id: str, amount_minor: int) -> Answer: ...

    async def void(self, key: str, authorization_id: str) -> Answer: ...

    async def refund(self, key: str, authorization_id: str, amount_minor: int) -> Answer: ...


class Suppliers(Protocol):
    async def allocate(
        self, supplier_id: str, key: str, sku: str, qty: int, lock_s: int
    ) -> Answer: ...

    async def confirm(self, supplier_id: str, key: str, allocation_id: str) -> Answer: ...

    async def cancel(self, supplier_id: str, key: str, allocation_id: str) -> Answer: ...

    async def stock(self, supplier_id: str, sku: str) -> StockQuote | None: ...


# --- HTTP ---------------------------------------------------------------------------------------


def _decode(reply: httpx.Response) -> dict[str, Any]:
    try:
        body = orjson.loads(reply.content)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise PartyUnavailable(f"{reply.request.url}: HTTP {reply.status_code}, not a JSON object")
    return body


def segment(value: str) -> str:
    """An id a party gave us, made one URL path segment (it may hold '/', '?' or '#'). A bare
    '.' or '..' would still climb the path, however encoded: such an id is no answer."""
    if value in ("", ".", ".."):
        raise PartyUnavailable(f"{value!r} is not a usable id in a URL path")
    return quote(value, safe="")


class _Http:
    """JSON over HTTP to one party; `auth` (from the settings) goes in the Authorization
    header, never in a URL, where proxies and logs would keep it."""

    def __init__(self, client: httpx.AsyncClient, auth: str = "") -> None:
        self.client = client
        self.auth = auth

    async def call(
        self, method: str, url: str, key: str = "", body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        headers = {"content-type": "application/json"}
        if self.auth:
            headers["authorization"] = self.auth
        if key:
            headers["idempotency-key"] = key
        request_id = logs.request_id.get()  # the order's, bound by the saga runner
        if request_id:
            headers["x-request-id"] = request_id
        try:
            reply = await self.client.request(
                method, url, content=orjson.dumps(body or {}), headers=headers
            )
        except httpx.HTTPError as exc:
            raise PartyUnavailable(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
        if reply.status_code >= 500 or reply.status_code in (408, 425, 429):
            raise PartyUnavailable(f"{method} {url}: HTTP {reply.status_code}")
        return reply.status_code, _decode(reply)

    async def write(
        self, url: str, key: str, body: dict[str, Any], ok_status: tuple[int, ...] = (200, 201)
    ) -> Answer:
        status, doc = await self.call("POST", url, key, body)
        if status in ok_status:
            return Answer(True, str(doc.get("id", "")))
        if status in (404, 409, 422):
            return Answer(
                False, code=str(doc.get("code", status)), detail=str(doc.get("detail", ""))
            )
        raise PartyUnavailable(f"POST {url}: unexpected HTTP {status}")


class HttpPaymentProvider:
    def __init__(self, client: httpx.AsyncClient, base_url: str, auth: str = "") -> None:
        self._http = _Http(client, auth)
        self._base = base_url.rstrip("/")

    async def authorize(
        self, key: str, order_id: str, customer_id: str, amount_minor: int, payment_ref: str
    ) -> Answer:
        body = {
            "order_id": order_id,
            "customer_id": customer_id,
            "amount_minor": amount_minor,
            "payment_ref": payment_ref,
        }
        status, doc = await self._http.call("POST", f"{self._base}/authorizations", key, body)
        if status == 201 and doc.get("status") == "authorized" and doc.get("id"):
            return Answer(True, str(doc["id"]))
        if status == 201 and doc.get("status") == "declined":
            return Answer(False, str(doc.get("id", "")), "DECLINED", str(doc.get("reason", "")))
        if status in (409, 422):
            return Answer(False, code=str(doc.get("code", status)), detail=str(doc.get("detail")))
        raise PartyUnavailable(f"authorize {order_id}: unexpected HTTP {status} {doc}")

    async def capture(self, key: str, authorization_id: str, amount_minor: int) -> Answer:
        url = f"{self._base}/authorizations/{segment(authorization_id)}/capture"
        return await self._http.write(url, key, {"amount_minor": amount_minor})

    async def void(self, key: str, authorization_id: str) -> Answer:
        return await self._http.write(
            f"{self._base}/authorizations/{segment(authorization_id)}/void", key, {}
        )

    async def refund(self, key: str, authorization_id: str, amount_minor: int) -> Answer:
        url = f"{self._base}/authorizations/{segment(authorization_id)}/refund"
        return await self._http.write(url, key, {"amount_minor": amount_minor})


class HttpSuppliers:
    """One URL template for every supplier: `{supplier}` is replaced by the supplier's id."""

    def __init__(self, client: httpx.AsyncClient, url_template: str, auth: str = "") -> None:
        if "{supplier}" not in url_template:
            raise ValueError("the supplier URL must contain {supplier}")
        self._http = _Http(client, auth)
        self._template = url_template.rstrip("/")

    def _url(self, supplier_id: str) -> str:
        return self._template.replace("{supplier}", segment(supplier_id))

    async def allocate(self, supplier_id: str, key: str, sku: str, qty: int, lock_s: int) -> Answer:
        url = f"{self._url(supplier_id)}/allocations"
        return await self._http.write(url, key, {"sku": sku, "qty": qty, "lock_s": lock_s}, (201,))

    async def confirm(self, supplier_id: str, key: str, allocation_id: str) -> Answer:
        url = f"{self._url(supplier_id)}/allocations/{segment(allocation_id)}/confirm"
        return await self._http.write(url, key, {})

    async def cancel(self, supplier_id: str, key: str, allocation_id: str) -> Answer:
        url = f"{self._url(supplier_id)}/allocations/{segment(allocation_id)}/cancel"
        return await self._http.write(url, key, {})

    async def stock(self, supplier_id: str, sku: str) -> StockQuote | None:
        url = f"{self._url(supplier_id)}/stock/{segment(sku)}"
        status, doc = await self._http.call("GET", url)
        if status == 404:
            return None
        available, cost = doc.get("available"), doc.get("cost_minor")
        if status != 200 or not isinstance(available, int) or not isinstance(cost, int):
            raise PartyUnavailable(f"stock of {sku} at {supplier_id}: HTTP {status} {doc}")
        return StockQuote(supplier_id, available, cost)
