"""Outside parties for the order saga, as real HTTP servers: a payment provider, a set of
suppliers, and a webhook receiver. They speak the protocol of reconciler/adapters.py and misbehave
on request (declines, stalls, 5xx, stock that runs out), and they keep records the tests compare
with PostgreSQL. Run one with
`python -m flashsale.loadtests.simulators.servers payment|suppliers|webhooks --port N`;
`flashsale sim up` runs all three.

Control routes (tests and the demo): GET /_sim/records, POST /_sim/config, POST /_sim/reset, and
on the suppliers PUT /_sim/suppliers/{id}.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from flashsale.reconciler.outbox import verify

Handler = Callable[[Request], Awaitable[Response]]


def reply(status: int, body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def refuse(status: int, code: str, detail: str) -> Response:
    return reply(status, {"code": code, "detail": detail})


async def body_of(request: Request) -> dict[str, Any]:
    try:
        doc = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        doc = None
    return doc if isinstance(doc, dict) else {}


def _chance(seed: int, *parts: object) -> float:
    """A repeatable draw in [0, 1) per seed and key: the same request gets the same fate."""
    digest = hashlib.sha256(":".join(map(str, (seed, *parts))).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class Idempotent:
    """Answers kept per idempotency key: a repeated key gets the first answer, not a new effect,
    also while the first request is still being worked on (it waits for that answer). The
    answer is stored before a stall, as a provider that did the work but whose reply was lost
    on the way would have it."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, dict[str, Any]]] = {}
        self.working: dict[str, asyncio.Event] = {}

    async def replay(self, key: str) -> Response | None:
        """The stored answer, or None after taking the key for this request."""
        while key in self.working:
            await self.working[key].wait()
        found = self.answers.get(key)
        if found:
            return reply(*found)
        self.working[key] = asyncio.Event()
        return None

    def release(self, key: str) -> None:
        """The request that took the key is done (answered, or failed without an effect)."""
        done = self.working.pop(key, None)
        if done is not None:
            done.set()

    def keep(self, key: str, status: int, body: dict[str, Any]) -> Response:
        if key:
            self.answers[key] = (status, body)
        self.release(key)
        return reply(status, body)


@dataclass(slots=True)
class Misbehaviour:
    fail_share: float = 0.0  # answer 503 without doing anything
    stall_share: float = 0.0  # do the work, then answer only after stall_s (a client times out)
    stall_s: float = 5.0
    delay_ms: int = 0  # every answer this late
    seed: int = 1

    async def before(self, key: str) -> Response | None:
        if self.delay_ms:
            await asyncio.sleep(self.delay_ms / 1000)
        if self.fail_share and random.random() < self.fail_share:
            return refuse(503, "UNAVAILABLE", "simulated outage")
        return None

    async def after(self) -> None:
        if self.stall_share and random.random() < self.stall_share:
            await asyncio.sleep(self.stall_s)


def _update(target: Any, doc: dict[str, Any]) -> None:
    for name, value in doc.items():
        if hasattr(target, name) and isinstance(value, int | float) and not isinstance(value, bool):
            setattr(target, name, value)


# --- payment provider ----------------------------------------------------------------------------


@dataclass(slots=True)
class PaymentConfig(Misbehaviour):
    decline_share: float = 0.0  # of authorisations; a payment_ref containing "decline" always is
    expire_share: float = 0.0  # of captures: the authorisation has expired, 409 and nothing taken


@dataclass(slots=True)
class Authorization:
    id: str
    order_id: str
    customer_id: str
    amount_minor: int
    status: str  # authorized | declined | captured | voided | refunded | expired
    reason: str = ""
    captured_minor: int = 0
    refunded_minor: int = 0
    captures: int = 0  # capture operations that took money (a second one is a bug)
    capture_refusals: int = 0


class PaymentSim:
    def __init__(self, config: PaymentConfig) -> None:
        self.config = config
        self.auths: dict[str, Authorization] = {}
        self.keys = Idempotent()
        self.ids = itertools.count(1)

    def app(self) -> Starlette:
        base = "/authorizations/{auth}"
        return Starlette(
            routes=[
                Route("/authorizations", self.authorize, methods=["POST"]),
                Route(base + "/capture", self.capture, methods=["POST"]),
                Route(base + "/void", self.void, methods=["POST"]),
                Route(base + "/refund", self.refund, methods=["POST"]),
                *_control(self.records, self.configure, self.reset),
            ]
        )

    async def records(self, _: Request) -> Response:
        return reply(200, {"authorizations": [asdict(a) for a in self.auths.values()]})

    async def configure(self, request: Request) -> Response:
        _update(self.config, await body_of(request))
        return reply(200, asdict(self.config))

    async def reset(self, _: Request) -> Response:
        self.__init__(PaymentConfig())  # type: ignore[misc]
        return reply(200, {})

    async def _guarded(
        self, request: Request, work: Callable[[str, dict[str, Any]], Response]
    ) -> Response:
        key = request.headers.get("idempotency-key", "")
        if not key:
            return refuse(422, "IDEMPOTENCY_KEY_REQUIRED", "send an Idempotency-Key header")
        if (answer := await self.keys.replay(key)) is not None:
            return answer
        try:
            if (outage := await self.config.before(key)) is not None:
                return outage
            answer = work(key, {**await body_of(request), **request.path_params})
        finally:
            self.keys.release(key)  # an answer not kept (an outage, a 422) is not replayed
        await self.config.after()
        return answer

    async def authorize(self, request: Request) -> Response:
        return await self._guarded(request, self._authorize)

    def _authorize(self, key: str, doc: dict[str, Any]) -> Response:
        amount = doc.get("amount_minor")
        if not isinstance(amount, int) or amount < 0:
            return refuse(422, "INVALID_REQUEST", "amount_minor must be a non-negative integer")
        auth = Authorization(
            f"auth_{next(self.ids)}",
            str(doc.get("order_id")),
            str(doc.get("customer_id")),
            amount,
            "authorized",
        )
        if "decline" in str(doc.get("payment_ref")) or (
            _chance(self.config.seed, key) < self.config.decline_share
        ):
            auth.status, auth.reason = "declined", "insufficient_funds"
        self.auths[auth.id] = auth
        body = {"id": auth.id, "status": auth.status, "reason": auth.reason}
        return self.keys.keep(key, 201, body)

    async def capture(self, request: Request) -> Response:
        return await self._guarded(request, self._capture)

    def _capture(self, key: str, doc: dict[str, Any]) -> Response:
        auth = self.auths.get(doc["auth"])
        if auth is None:
            return refuse(404, "NOT_FOUND", "no such authorization")
        amount = doc.get("amount_minor")
        if (
            auth.status == "authorized"
            and _chance(self.config.seed, key) < self.config.expire_share
        ):
            auth.status = "expired"
        if auth.status != "authorized":
            auth.capture_refusals += 1
            return self.keys.keep(key, 409, {"code": "NOT_CAPTURABLE", "detail": auth.status})
        if not isinstance(amount, int) or not 0 < amount <= auth.amount_minor:
            return refuse(422, "INVALID_AMOUNT", "0 < amount_minor <= the authorized amount")
        auth.status, auth.captured_minor = "captured", amount
        auth.captures += 1
        return self.keys.keep(key, 200, {"id": auth.id, "status": "captured"})

    async def void(self, request: Request) -> Response:
        return await self._guarded(request, self._void)

    def _void(self, key: str, doc: dict[str, Any]) -> Response:
        auth = self.auths.get(doc["auth"])
        if auth is None:
            return refuse(404, "NOT_FOUND", "no such authorization")
        if auth.status == "voided":
            return self.keys.keep(key, 409, {"code": "ALREADY_VOIDED", "detail": "voided"})
        if auth.status != "authorized":
            return self.keys.keep(key, 409, {"code": "NOT_VOIDABLE", "detail": auth.status})
        auth.status = "voided"
        return self.keys.keep(key, 200, {"id": auth.id, "status": "voided"})

    async def refund(self, request: Request) -> Response:
        return await self._guarded(request, self._refund)

    def _refund(self, key: str, doc: dict[str, Any]) -> Response:
        auth = self.auths.get(doc["auth"])
        if auth is None:
            return refuse(404, "NOT_FOUND", "no such authorization")
        amount = doc.get("amount_minor")
        room = auth.captured_minor - auth.refunded_minor
        if auth.status not in ("captured", "refunded") or not isinstance(amount, int):
            return self.keys.keep(key, 409, {"code": "NOT_REFUNDABLE", "detail": auth.status})
        if not 0 < amount <= room:
            return self.keys.keep(key, 409, {"code": "NOT_REFUNDABLE", "detail": f"room {room}"})
        auth.refunded_minor += amount
        auth.status = "refunded"
        return self.keys.keep(key, 200, {"id": auth.id, "status": "refunded"})


# --- suppliers


@dataclass(slots=True)
class SupplierConfig(Misbehaviour):
    stock: dict[str, int] = field(default_factory=dict)
    cost_minor: dict[str, int] = field(default_factory=dict)
    lapse_next: int = 0  # this many next allocations get a lock that has already run out


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

    def app(self) -> Starlette:
        base = "/suppliers/{supplier}"
        return Starlette(
            routes=[
                Route(base + "/allocations", self.allocate, methods=["POST"]),
                Route(base + "/allocations/{allocation}/confirm", self.confirm, methods=["POST"]),
                Route(base + "/allocations/{allocation}/cancel", self.cancel, methods=["POST"]),
                Route(base + "/stock/{sku}", self.stock, methods=["GET"]),
                Route("/_sim/suppliers/{supplier}", self.put_supplier, methods=["PUT"]),
                *_control(self.records, self.configure, self.reset),
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
                cfg.stock[a.sku] = cfg.stock.get(a.sku, self.default_stock) + a.qty
        return s.stock.setdefault(sku, self.default_stock)

    async def records(self, _: Request) -> Response:
        return reply(
            200,
            {
                "allocations": [asdict(a) for a in self.allocations.values()],
                "stock": {k: v.stock for k, v in self.suppliers.items()},
            },
        )

    async def configure(self, request: Request) -> Response:
        doc = await body_of(request)
        if isinstance(doc.get("default_stock"), int):
            self.default_stock = doc["default_stock"]
        return reply(200, {"default_stock": self.default_stock})

    async def reset(self, _: Request) -> Response:
        self.__init__(self.default_stock)  # type: ignore[misc]
        return reply(200, {})

    async def put_supplier(self, request: Request) -> Response:
        doc = await body_of(request)
        cfg = SupplierConfig()
        _update(cfg, doc)
        cfg.stock = {str(k): int(v) for k, v in dict(doc.get("stock", {})).items()}
        cfg.cost_minor = {str(k): int(v) for k, v in dict(doc.get("cost_minor", {})).items()}
        self.suppliers[request.path_params["supplier"]] = cfg
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
        sku, qty, lock_s = doc.get("sku"), doc.get("qty"), doc.get("lock_s", 600)
        if not isinstance(sku, str) or not isinstance(qty, int) or qty < 1:
            return 422, {"code": "INVALID_REQUEST", "detail": "sku and qty >= 1 are required"}
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


# --- webhook receiver ----------------------------------------------------------------------------


class WebhookSim:
    """Keeps what it received in a JSON-lines file, so a restart (the receiver was down) keeps
    the records; a notification id seen before is acknowledged and counted as a duplicate."""

    def __init__(self, secret: str, state: Path) -> None:
        self.secret = secret
        self.state = state
        self.received: dict[str, dict[str, Any]] = {}
        self.duplicates = 0
        self.bad_signatures = 0
        if state.exists():
            for line in state.read_text().splitlines():
                doc = json.loads(line)
                self.received[doc["id"]] = doc

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/hooks/{recipient}", self.hook, methods=["POST"]),
                *_control(self.records, self.records, self.reset),
            ]
        )

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        ok = verify(
            self.secret,
            request.headers.get("x-flashsale-timestamp", ""),
            body,
            request.headers.get("x-flashsale-signature", ""),
        )
        if not ok:
            self.bad_signatures += 1
            return refuse(401, "BAD_SIGNATURE", "signature or timestamp does not verify")
        doc = orjson.loads(body)
        if doc["id"] in self.received:
            self.duplicates += 1
            return reply(200, {"duplicate": True})
        doc["path_recipient"] = request.path_params["recipient"]
        self.received[doc["id"]] = doc
        with self.state.open("a") as out:
            out.write(json.dumps(doc) + "\n")
        return reply(200, {"duplicate": False})

    async def records(self, _: Request) -> Response:
        return reply(
            200,
            {
                "received": list(self.received.values()),
                "duplicates": self.duplicates,
                "bad_signatures": self.bad_signatures,
            },
        )

    async def reset(self, _: Request) -> Response:
        self.received.clear()
        self.duplicates = self.bad_signatures = 0
        self.state.write_text("")
        return reply(200, {})


def _control(records: Handler, configure: Handler, reset: Handler) -> list[Route]:
    async def health(_: Request) -> Response:
        return reply(200, {"ok": True})

    return [
        Route("/_sim/health", health, methods=["GET"]),
        Route("/_sim/records", records, methods=["GET"]),
        Route("/_sim/config", configure, methods=["POST"]),
        Route("/_sim/reset", reset, methods=["POST"]),
    ]


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m flashsale.loadtests.simulators.servers")
    parser.add_argument("party", choices=["payment", "suppliers", "webhooks"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--decline-share", type=float, default=0.0)
    parser.add_argument("--default-stock", type=int, default=1000)
    parser.add_argument("--secret", default="dev-webhook-secret")
    parser.add_argument("--state", default="webhooks.jsonl")
    args = parser.parse_args(argv)
    if args.party == "payment":
        app = PaymentSim(PaymentConfig(decline_share=args.decline_share)).app()
    elif args.party == "suppliers":
        app = SupplierSim(args.default_stock).app()
    else:
        app = WebhookSim(args.secret, Path(args.state)).app()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
