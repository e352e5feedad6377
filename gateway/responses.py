"""JSON in and out for the Starlette-convenience routes, with the hot path's body limits."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from flashsale.gateway.http import JSON_TYPE, parse_json_object, require_json
from flashsale.gateway.problems import Problem


def json_response(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc), status, headers, media_type=JSON_TYPE)


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The JSON object of the body; a declared Content-Length over the limit never gets here
    (BodyLimitMiddleware), a streamed one is counted as it arrives. Only application/json."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise Problem(413, "PAYLOAD_TOO_LARGE", f"bodies are limited to {max_bytes} bytes")
    if body:
        require_json(request.scope)
    return parse_json_object(bytes(body))
