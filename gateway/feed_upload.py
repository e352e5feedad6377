"""PUT /v1/admin/suppliers/{supplier}/feed/file: a stock file streamed to the supplier's drop
folder (FLASHSALE_FEED_DIR/<supplier>/), where the reconciler applies it (reconciler/intake/).
The body is written as it arrives under a hidden `.part` name, counted against the cap, and
renamed only once complete, so the reconciler never sees half a file."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import os
import secrets
from pathlib import Path
from typing import BinaryIO

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from flashsale.gateway.admin import require_admin
from flashsale.gateway.feeds import PG_ERRORS
from flashsale.gateway.http import header
from flashsale.gateway.problems import Problem, invalid, unavailable
from flashsale.gateway.responses import json_response
from flashsale.gateway.schemas import parse_path_id
from flashsale.store import feeds

# The body's media type -> the file's format (a charset parameter is fine).
FORMAT_OF_MEDIA = {
    "text/csv": "csv",
    "application/csv": "csv",
    "application/json": "json",
    "application/xml": "xml",
    "text/xml": "xml",
}


def format_of(request: Request) -> str:
    declared = header(request.scope, b"content-type") or ""
    fmt = FORMAT_OF_MEDIA.get(declared.split(";", 1)[0].strip().lower())
    if fmt is None:
        media = ", ".join(FORMAT_OF_MEDIA)
        raise Problem(415, "UNSUPPORTED_MEDIA_TYPE", f"send the file as one of {media}")
    return fmt


async def put_feed_file(request: Request) -> Response:
    state = require_admin(request)
    supplier_id = parse_path_id(request.path_params["supplier"], "supplier")
    fmt = format_of(request)
    try:
        async with state.pool.acquire() as conn:
            feed = await feeds.load_feed(conn, supplier_id)
    except PG_ERRORS as exc:
        raise unavailable() from exc
    if feed is None:
        raise Problem(404, "NOT_FOUND", f"supplier {supplier_id} has no feed")
    folder = state.settings.feed_path / supplier_id
    partial = folder / f".upload-{secrets.token_hex(8)}.part"
    try:
        size, digest = await _receive(request, partial, state.settings.feed_file_max_bytes)
        if size == 0:
            raise invalid("the file is empty")
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        final = folder / f"{stamp}-{digest[:12]}.{fmt}"
        await asyncio.to_thread(partial.replace, final)
    finally:
        await asyncio.to_thread(partial.unlink, missing_ok=True)
    body = {
        "supplier": supplier_id,
        "file": final.name,
        "bytes": size,
        "format": fmt,
        "sha256": digest,
        "deliveries": f"file-{digest[:40]}-<chunk>",
        "status": "queued",
    }
    return json_response(body, 202)


async def _receive(request: Request, partial: Path, max_bytes: int) -> tuple[int, str]:
    """The body into `partial`, never more than max_bytes of it; (size, sha256)."""
    await asyncio.to_thread(partial.parent.mkdir, parents=True, exist_ok=True)
    out: BinaryIO = await asyncio.to_thread(partial.open, "wb")
    digest, size = hashlib.sha256(), 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise Problem(413, "PAYLOAD_TOO_LARGE", f"files are limited to {max_bytes} bytes")
            digest.update(chunk)
            await asyncio.to_thread(out.write, chunk)
        await asyncio.to_thread(_sync, out)
    except ClientDisconnect:
        raise Problem(400, "INVALID_REQUEST", "the client went away") from None
    finally:
        out.close()
    return size, digest.hexdigest()


def _sync(out: BinaryIO) -> None:
    out.flush()
    os.fsync(out.fileno())
