"""The simulated suppliers: each its own stock per sku that runs out; allocations locked for a
while, then confirmed or cancelled; locks that lapse on request (PUT /_sim/suppliers/{id});
signed shipment webhooks to the gateway (loadtests/simulators/shipping.py)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from flashsale.loadtests.simulators.common import (
    Idempotent,
    Misbehaviour,
    body_of,
    control_routes,
    refuse,
    reply,
    update_numbers,
)
from flashsale.loadtests.simulators.shipping import Shipper


@dataclass(slots=True)
class SupplierConfig(Misbehaviour):
    stock: dict[str, int] = field(default_factory=dict)
    cost_minor: dict[str, int] = field(default_factory=dict)
    lapse_next: int = 0  # this many next allocations get a lock that has already run out
    lapse_sells: int = 0  # 1: a lapsed lock's units are sold elsewhere, never given back
    refuse_next: int = 0  # this many next allocations are refused (409 REFUSED), stock or not


@dataclass(slots=True)
class Allocation:
    id: str
    supplier_id: str
    sku: str
    qty: int
    status: str  # locked | confirmed | cancelled | lapsed
    expires_at: float
    key: str  # the idempotency key that made it (the saga's starts with the order id)
    confirms: int = 0


class SupplierSim:
    def __init__(self, default_stock: int) -> None:
        self.default_stock = default_stock
        self.suppliers: dict[str, SupplierConfig] = {}
        self.allocations: dict[str, Allocation] = {}
        self.keys: dict[str, Idempotent] = {}
        self.ids = itertools.count(1)
        # Every allocation request answered (a replayed key is not asked again), refusals too:
        # supplier, sku, qty and the code (LOCKED or the refusal's), in order.
        self.requests: list[dict[str, Any]] = []
        self.shipper = Shipper()

    def app(self) -> Starlette:
        base = "/suppliers/{supplier}"
        return Starlette(
            routes=[
                Route(base + "/allocations", self.allocate, methods=["POST"]),
                Route(base + "/allocations/{allocation}/confirm", self.confirm, methods=["POST"]),
                Route(base + "/allocations/{allocation}/cancel", self.cancel, methods=["POST"]),
                Route(base + "/stock/{sku}", self.stock, methods=["GET"]),
                Route("/_sim/suppliers/{supplier}", self.put_supplier, methods=["PUT"]),
                Route("/_sim/suppliers/{supplier}/ship", self.ship, methods=["POST"]),
                *control_routes(self.records, self.configure, self.reset),
            ]
        )

    def _supplier(self, supplier_id: str) -> SupplierConfig:
        return self.suppliers.setdefault(supplier_id, SupplierConfig())

    def _available(self, s: SupplierConfig, sku: str) -> int:
        now = time.time()
        for a in self.allocations.values():  # locks that ran out give their units back
            if a.status == "locked" and a.expires_at <= now:
                a.status = "lapsed"
                cfg = self._supplier(a.supplier_id)
                if not cfg.lapse_sells:
                    cfg.stock[a.sku] = cfg.stock.get(a.sku, self.default_stock) + a.qty
        return s.stock.setdefault(sku, self.default_stock)

    async def records(self, _: Request) -> Response:
        return reply(
            200,
            {
                "allocations": [asdict(a) for a in self.allocations.values()],
                "requests": self.requests,
                "stock": {k: v.stock for k, v in self.suppliers.items()},
                "shipments": self.shipper.sent,
            },
        )

    async def configure(self, request: Request) -> Response:
        doc = await body_of(request)
        if isinstance(doc.get("default_stock"), int):
            self.default_stock = doc["default_stock"]
        self.shipper.configure(doc)
        return reply(200, {"default_stock": self.default_stock})

    async def reset(self, _: Request) -> Response:
        shipper = self.shipper
        self.__init__(self.default_stock)  # type: ignore[misc]
        self.shipper = shipper.reset()
        return reply(200, {})

    async def ship(self, request: Request) -> Response:
        return await self.shipper.ship_route(request)

    async def put_supplier(self, request: Request) -> Response:
        doc = await body_of(request)
        cfg = SupplierConfig()
        update_numbers(cfg, doc)
        cfg.stock = {str(k): int(v) for k, v in dict(doc.get("stock", {})).items()}
        cfg.cost_minor = {str(k): int(v) for k, v in dict(doc.get("cost_minor", {})).items()}
        self.suppliers[request.path_params["supplier"]] = cfg
        self.shipper.put_supplier(request.path_params["supplier"], doc)
        return reply(200, asdict(cfg))

    async def _guarded(
        self,
        request: Request,
        work: Callable[[SupplierConfig, str, dict[str, Any]], tuple[int, dict[str, Any]]],
    ) -> Response:
        supplier_id = request.path_params["supplier"]
        cfg = self._supplier(supplier_id)
        keys = self.keys.setdefault(supplier_id, Idempotent())
        key = request.headers.get("idempotency-key", "")
        if not key:
            return refuse(422, "IDEMPOTENCY_KEY_REQUIRED", "send an Idempotency-Key header")
        if (answer := await keys.replay(key)) is not None:
            return answer
        try:
            if (outage := await cfg.before(key)) is not None:
                return outage
            status, body = work(cfg, key, {**await body_of(request), **request.path_params})
            answer = keys.keep(key, status, body)
        finally:
            keys.release(key)
        await cfg.after()
        return answer

    async def allocate(self, request: Request) -> Response:
        return await self._guarded(request, self._allocate)

    def _allocate(
        self, cfg: SupplierConfig, key: str, doc: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        status, body = self._decide_allocation(cfg, key, doc)
        self.requests.append(
            {
                "supplier_id": doc["supplier"],
                "sku": doc.get("sku"),
                "qty": doc.get("qty"),
                "code": "LOCKED" if status == 201 else body.get("code"),
            }
        )
        return status, body

    def _decide_allocation(
        self, cfg: SupplierConfig, key: str, doc: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        sku, qty, lock_s = doc.get("sku"), doc.get("qty"), doc.get("lock_s", 600)
        if not isinstance(sku, str) or not isinstance(qty, int) or qty < 1:
            return 422, {"code": "INVALID_REQUEST", "detail": "sku and qty >= 1 are required"}
        if cfg.refuse_next > 0:
            cfg.refuse_next -= 1
            return 409, {"code": "REFUSED", "detail": "the supplier will not lock more now"}
        if self._available(cfg, sku) < qty:
            return 409, {"code": "OUT_OF_STOCK", "detail": f"{sku}: {cfg.stock[sku]} left"}
        cfg.stock[sku] -= qty
        lock = float(lock_s if isinstance(lock_s, int) else 600)
        if cfg.lapse_next > 0:
            cfg.lapse_next -= 1
            lock = 0.0
        a = Allocation(
            f"al_{next(self.ids)}", doc["supplier"], sku, qty, "locked", time.time() + lock, key
        )
        self.allocations[a.id] = a
        return 201, {"id": a.id, "status": a.status}

    async def confirm(self, request: Request) -> Response:
        return await self._guarded(request, self._confirm)

    def _confirm(
        self, cfg: SupplierConfig, key: str, doc: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        a = self.allocations.get(doc["allocation"])
        if a is None or a.supplier_id != doc["supplier"]:
            return 404, {"code": "NOT_FOUND", "detail": "no such allocation"}
        self._available(cfg, a.sku)
        if a.status == "confirmed":  # confirming twice changes nothing
            return 200, {"id": a.id, "status": a.status}
        if a.status != "locked":
            return 409, {
                "code": "LOCK_EXPIRED" if a.status == "lapsed" else "NOT_LOCKED",
                "detail": a.status,
            }
        a.status = "confirmed"
        a.confirms += 1
        self.shipper.confirmed(a.supplier_id, a.key.split(":", 1)[0], a.sku, a.qty)
        return 200, {"id": a.id, "status": a.status}

    async def cancel(self, request: Request) -> Response:
        return await self._guarded(request, self._cancel)

    def _cancel(
        self, cfg: SupplierConfig, key: str, doc: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        a = self.allocations.get(doc["allocation"])
        if a is None or a.supplier_id != doc["supplier"]:
            return 404, {"code": "NOT_FOUND", "detail": "no such allocation"}
        self._available(cfg, a.sku)  # a lock that ran out has already given its units back
        if a.status in ("locked", "confirmed"):
            cfg.stock[a.sku] = cfg.stock.get(a.sku, 0) + a.qty
            a.status = "cancelled"
        return 200, {"id": a.id, "status": a.status}

    async def stock(self, request: Request) -> Response:
        cfg = self._supplier(request.path_params["supplier"])
        sku = request.path_params["sku"]
        if (outage := await cfg.before(sku)) is not None:
            return outage
        return reply(
            200,
            {
                "sku": sku,
                "available": self._available(cfg, sku),
                "cost_minor": cfg.cost_minor.get(sku, 0),
            },
        )
