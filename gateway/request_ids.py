"""X-Request-Id: each request's id (the client's when sound, else a new one) on its response,
its log lines and the stream events it causes; and, with FLASHSALE_ACCESS_LOG, one log line."""

from __future__ import annotations

import itertools
import logging
import os
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flashsale.engine import logs

HEADER = b"x-request-id"
access = logging.getLogger("flashsale.gateway.access")


class _Ids:
    """`<12 hex digits drawn per process>-<counter in hex>`: unique across workers and restarts
    without the cost of a uuid4 on the hot path. Drawn again in a forked child."""

    prefix = ""
    counter: itertools.count[int] = itertools.count(1)

    @classmethod
    def reseed(cls) -> None:
        cls.prefix = os.urandom(6).hex()
        cls.counter = itertools.count(1)


_Ids.reseed()
os.register_at_fork(after_in_child=_Ids.reseed)


def new_id() -> str:
    return f"{_Ids.prefix}-{next(_Ids.counter):x}"


def client_id(scope: Scope) -> str | None:
    """The client's X-Request-Id when it is 1-64 characters of A-Z a-z 0-9 . _ : -; another
    value is replaced, never refused: an id is for tracing, not worth a failed checkout."""
    for key, value in scope["headers"]:
        if key == HEADER:
            text = value.decode("latin-1")
            return text if logs.REQUEST_ID.fullmatch(text) else None
    return None


class RequestIds:
    """Outermost of the app's middleware, so every answer carries the id, problem+json ones
    included (a crash's 500 takes it from the context var, gateway/app.py `on_crash`).

    The id is set in the request's context and not reset: uvicorn runs each request in a task of
    its own, whose context ends with it, and uvicorn logs an app's exception after the app has
    returned; that line must name the request too."""

    def __init__(self, app: ASGIApp, access_log: bool = False) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = client_id(scope) or new_id()
        logs.request_id.set(rid)
        stamp = (HEADER, rid.encode())
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # A copy: a route may send the same headers list for every request.
                message = {**message, "headers": [*message.get("headers", ()), stamp]}
            await send(message)

        if not self.access_log:
            await self.app(scope, receive, send_with_id)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _access_line(scope, status, time.perf_counter() - started)


def _access_line(scope: Scope, status: int, duration_s: float) -> None:
    params = scope.get("path_params", {})
    access.info(
        "%s %s %d",
        scope["method"],
        scope["path"],
        status,
        extra={
            "event": "http.request",
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "duration_ms": round(duration_s * 1000, 3),
            **{name: params[name] for name in ("sale", "hold", "order") if name in params},
        },
    )
