"""Raw ASGI plumbing for the hot routes: bounded body reads and one-shot JSON responses."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from flashsale.gateway.problems import PROBLEM_TYPE, Problem

JSON_TYPE = "application/json"
ADMIN_MAX_BYTES = 1_048_576  # a sale with many items and suppliers


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def read_body(scope: Scope, receive: Receive, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as the bytes received pass max_bytes (a
    declared Content-Length over it was already refused by the app's BodyLimitMiddleware)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Problem(400, "INVALID_REQUEST", "the client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise Problem(413, "PAYLOAD_TOO_LARGE", f"bodies are limited to {max_bytes} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def require_json(scope: Scope) -> None:
    """A body sent to a JSON route must be `application/json` (a charset parameter is fine): a
    body a browser form can send without a preflight (text/plain, form encodings) is refused.
    (No body at all is the body's problem, not its type's: it reads as malformed or empty.)"""
    declared = header(scope, b"content-type") or ""
    if declared.split(";", 1)[0].strip().lower() != JSON_TYPE:
        raise Problem(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            f"send the body as Content-Type: {JSON_TYPE}, not {declared or 'no type'}",
        )


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "MALFORMED_JSON", str(exc)) from None
    if not isinstance(doc, dict):
        raise Problem(422, "INVALID_REQUEST", "the body must be a JSON object")
    return doc


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    content_type: str = JSON_TYPE,
    headers: dict[str, str] | None = None,
) -> None:
    raw = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def send_json(
    send: Send, status: int, doc: Any, headers: dict[str, str] | None = None
) -> None:
    await send_bytes(send, status, orjson.dumps(doc), JSON_TYPE, headers)


async def send_problem(send: Send, problem: Problem, instance: str = "") -> None:
    await send_bytes(send, problem.status, problem.body(instance), PROBLEM_TYPE, problem.headers)
