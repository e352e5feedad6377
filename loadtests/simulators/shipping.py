"""The simulated suppliers' shipments: signed shipment webhooks POSTed to the gateway
(POST /v1/shipments/{supplier}), on request (POST /_sim/suppliers/{supplier}/ship) or by
themselves after a confirmed allocation (`auto_ship` in PUT /_sim/suppliers/{supplier}), each
one recorded with the gateway's answer (GET /_sim/records: `shipments`)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response

from flashsale.loadtests.simulators.common import body_of, refuse, reply
from flashsale.loadtests.simulators.feed_docs import signed_headers

NOT_CONFIRMED_TRIES = 50  # 409 LINE_NOT_CONFIRMED: sent again every 0.2 s, this many times


@dataclass(slots=True)
class ShipperConfig:
    secret: str = ""  # the supplier's feed secret at the gateway
    auto_ship: int = 0  # after a confirm, ship the allocation in this many shipments (0: don't)
    carrier: str = "SIMPOST"


def split(lines: list[tuple[str, int]], n: int) -> list[list[tuple[str, int]]]:
    """The lines over n shipments, each line's units as even as can be, the bigger parts first
    (3 units in 2 gives 2 then 1); shipments left empty are dropped."""
    parts: list[list[tuple[str, int]]] = [[] for _ in range(n)]
    for sku, qty in lines:
        for i in range(n):
            units = qty // n + (1 if i < qty % n else 0)
            if units:
                parts[i].append((sku, units))
    return [p for p in parts if p]


class Shipper:
    def __init__(self) -> None:
        self.gateway_url = ""
        self.suppliers: dict[str, ShipperConfig] = {}
        self.sent: list[dict[str, Any]] = []
        self.ids = itertools.count(1)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(10.0))

    def reset(self) -> Shipper:
        """Forgets the suppliers and what was sent; keeps the gateway's URL and the client."""
        self.suppliers.clear()
        self.sent.clear()
        return self

    def configure(self, doc: dict[str, Any]) -> None:
        if isinstance(doc.get("gateway_url"), str):
            self.gateway_url = doc["gateway_url"].rstrip("/")

    def put_supplier(self, supplier_id: str, doc: dict[str, Any]) -> None:
        self.suppliers[supplier_id] = ShipperConfig(
            str(doc.get("shipment_secret", "")),
            int(doc.get("auto_ship", 0)),
            str(doc.get("carrier", "SIMPOST")),
        )

    def confirmed(self, supplier_id: str, order_id: str, sku: str, qty: int) -> None:
        """An allocation made firm: shipped by itself if the supplier is told to."""
        cfg = self.suppliers.get(supplier_id)
        if cfg is None or cfg.auto_ship <= 0:
            return
        task = asyncio.create_task(
            self.ship(supplier_id, order_id, [(sku, qty)], cfg.auto_ship, f"auto{next(self.ids)}")
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def ship_route(self, request: Request) -> Response:
        """{order_id, lines: [{sku, qty}], split: n, shipment_id?, signature?: good|bad|stale}:
        n signed shipments sent one after the other; what each was answered."""
        doc = await body_of(request)
        supplier_id = request.path_params["supplier"]
        try:
            lines = [(str(x["sku"]), int(x["qty"])) for x in doc["lines"]]
            order_id, n = str(doc["order_id"]), int(doc.get("split", 1))
        except (KeyError, TypeError, ValueError):
            return refuse(422, "INVALID_REQUEST", "order_id and lines [{sku, qty}] are required")
        base = str(doc.get("shipment_id") or f"sh{next(self.ids)}")
        signature = str(doc.get("signature", "good"))
        sent = await self.ship(supplier_id, order_id, lines, max(1, n), base, signature)
        return reply(200, {"sent": sent})

    async def ship(
        self,
        supplier_id: str,
        order_id: str,
        lines: list[tuple[str, int]],
        n: int,
        base: str,
        signature: str = "good",
    ) -> list[dict[str, Any]]:
        cfg = self.suppliers.get(supplier_id, ShipperConfig())
        out = []
        for i, part in enumerate(split(lines, n), start=1):
            shipment_id = base if n == 1 else f"{base}-{i}"
            doc = {
                "shipment_id": shipment_id,
                "order_id": order_id,
                "carrier": cfg.carrier,
                "tracking_id": f"{cfg.carrier}-{supplier_id}-{shipment_id}",
                "shipped_at": datetime.now(UTC).isoformat(),
                "lines": [{"sku": sku, "qty": qty} for sku, qty in part],
            }
            out.append(await self._send(supplier_id, cfg, doc, signature))
        return out

    async def _send(
        self, supplier_id: str, cfg: ShipperConfig, doc: dict[str, Any], signature: str
    ) -> dict[str, Any]:
        body = json.dumps(doc).encode()
        timestamp = int(time.time()) - (600 if signature == "stale" else 0)
        secret = cfg.secret + ("x" if signature == "bad" else "")
        record: dict[str, Any] = {"supplier_id": supplier_id, **doc, "sent_at": time.time()}
        # A line the gateway has not seen confirmed yet (the confirm's answer may reach us
        # before the saga writes it) is sent again a little later, as a real supplier would.
        for tries in range(1, NOT_CONFIRMED_TRIES + 1):
            try:
                answer = await self.client.post(
                    f"{self.gateway_url}/v1/shipments/{supplier_id}",
                    content=body,
                    headers=signed_headers(secret, body, timestamp),
                )
                record.update(status=answer.status_code, answer=_json(answer), tries=tries)
            except httpx.HTTPError as exc:
                record.update(status=0, answer={"error": f"{type(exc).__name__}: {exc}"})
            answer_doc = record["answer"]
            again = isinstance(answer_doc, dict) and answer_doc.get("code") == "LINE_NOT_CONFIRMED"
            if not again:
                break
            await asyncio.sleep(0.2)
        self.sent.append(record)
        return record


def _json(answer: httpx.Response) -> Any:
    try:
        return answer.json()
    except ValueError:
        return answer.text[:500]
