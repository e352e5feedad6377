"""The simulated payment provider: authorise, capture, void and refund, each idempotent;
declines a share of authorisations, lets a share of captures find the authorisation expired."""

from __future__ import annotations

import itertools
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
    chance,
    control_routes,
    refuse,
    reply,
    update_numbers,
)


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
    # Each refund that paid money back, once per idempotency key: [{key, amount_minor}]
    refunds: list[dict[str, Any]] = field(default_factory=list)


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
                Route("/_sim" + base + "/expire", self.expire, methods=["POST"]),
                *control_routes(self.records, self.configure, self.reset),
            ]
        )

    async def expire(self, request: Request) -> Response:
        """A test's hand: the authorisation lapses (nothing captured yet), as a provider's do
        after some days; capture and void then refuse it."""
        auth = self.auths.get(request.path_params["auth"])
        if auth is None:
            return refuse(404, "NOT_FOUND", "no such authorization")
        if auth.status == "authorized":
            auth.status = "expired"
        return reply(200, asdict(auth))

    async def records(self, _: Request) -> Response:
        return reply(200, {"authorizations": [asdict(a) for a in self.auths.values()]})

    async def configure(self, request: Request) -> Response:
        update_numbers(self.config, await body_of(request))
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
            chance(self.config.seed, key) < self.config.decline_share
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
        if auth.status == "authorized" and chance(self.config.seed, key) < self.config.expire_share:
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
        auth.refunds.append({"key": key, "amount_minor": amount})
        auth.status = "refunded"
        return self.keys.keep(key, 200, {"id": auth.id, "status": "refunded"})
