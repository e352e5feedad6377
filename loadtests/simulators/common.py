"""What the simulated parties share: JSON replies, idempotency keys, misbehaviour on request,
the control routes (/_sim/health, /_sim/records, /_sim/config, /_sim/reset), and the check of
the caller's Authorization header."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

Handler = Callable[[Request], Awaitable[Response]]
AUTH_ENV = "SIM_AUTH"  # the Authorization header a payment or supplier simulator wants
SECRET_ENV = "SIM_WEBHOOK_SECRET"  # the key the webhook receiver checks signatures with


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


def chance(seed: int, *parts: object) -> float:
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
    """What a party does wrong on request (POST /_sim/config), per request at random."""

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


def update_numbers(target: Any, doc: dict[str, Any]) -> None:
    """Sets each number in doc that names an attribute of target; anything else is ignored."""
    for name, value in doc.items():
        if hasattr(target, name) and isinstance(value, int | float) and not isinstance(value, bool):
            setattr(target, name, value)


def control_routes(records: Handler, configure: Handler, reset: Handler) -> list[Route]:
    async def health(_: Request) -> Response:
        return reply(200, {"ok": True})

    return [
        Route("/_sim/health", health, methods=["GET"]),
        Route("/_sim/records", records, methods=["GET"]),
        Route("/_sim/config", configure, methods=["POST"]),
        Route("/_sim/reset", reset, methods=["POST"]),
    ]


class RequireAuth:
    """The party's own check of its caller: every route but /_sim/ wants this exact
    Authorization header (the adapters send FLASHSALE_PAYMENT_AUTH / _SUPPLIER_AUTH)."""

    def __init__(self, app: ASGIApp, auth: str) -> None:
        self.app = app
        self.auth = auth.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith("/_sim/"):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.auth):
                answer = refuse(401, "UNAUTHORIZED", "missing or wrong Authorization")
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)
