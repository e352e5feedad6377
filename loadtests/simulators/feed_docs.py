"""Supplier stock documents as suppliers send them: the signed webhook body, and stock files in
CSV, JSON and XML, written as streams (a generated file of any size never sits in memory)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

Item = dict[str, Any]  # {supplier_sku, on_hand, as_of?} as a supplier sends it


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`v1=<hex HMAC-SHA256 of "{timestamp}.{body}">` with the feed secret."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def signed_headers(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "Content-Type": "application/json",
        "X-Flashsale-Timestamp": str(ts),
        "X-Flashsale-Signature": signature(secret, ts, body),
    }


def webhook_body(delivery_id: str, as_of: str, items: list[Item]) -> bytes:
    return json.dumps({"delivery_id": delivery_id, "as_of": as_of, "items": items}).encode()


def _csv_field(value: object) -> str:
    text = "" if value is None else str(value)
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def csv_chunks(items: Iterable[Item]) -> Iterator[bytes]:
    yield b"supplier_sku,on_hand,as_of\n"
    lines: list[str] = []
    for item in items:
        fields = (item.get("supplier_sku"), item.get("on_hand"), item.get("as_of"))
        lines.append(",".join(_csv_field(f) for f in fields) + "\n")
        if len(lines) == 1000:
            yield "".join(lines).encode()
            lines = []
    yield "".join(lines).encode()


def json_chunks(items: Iterable[Item], as_of: str | None) -> Iterator[bytes]:
    head = {"as_of": as_of} if as_of else {}
    yield (json.dumps(head)[:-1] + (", " if head else "") + '"items": [\n').encode()
    first = True
    for item in items:
        yield (("" if first else ",\n") + json.dumps(item)).encode()
        first = False
    yield b"\n]}\n"


def xml_chunks(items: Iterable[Item], as_of: str | None) -> Iterator[bytes]:
    root = f"<stock as_of={quoteattr(as_of)}>" if as_of else "<stock>"
    yield f'<?xml version="1.0" encoding="UTF-8"?>\n{root}\n'.encode()
    for item in items:
        attrs = " ".join(
            f"{name}={quoteattr(str(item[name]))}"
            for name in ("supplier_sku", "on_hand", "as_of")
            if item.get(name) is not None
        )
        yield f"<item {attrs}/>\n".encode()
    yield b"</stock>\n"


def chunks(fmt: str, items: Iterable[Item], as_of: str | None = None) -> Iterator[bytes]:
    """A stock document in `fmt`; a CSV's as_of is per row only (give it in the items)."""
    if fmt == "csv":
        return csv_chunks(items)
    if fmt == "json":
        return json_chunks(items, as_of)
    if fmt == "xml":
        return xml_chunks(items, as_of)
    raise ValueError(f"unknown format {fmt!r}")


def document(fmt: str, items: Iterable[Item], as_of: str | None = None) -> bytes:
    return b"".join(chunks(fmt, items, as_of))


def write_file(path: Path, fmt: str, items: Iterable[Item], as_of: str | None = None) -> Path:
    """Written under a `.part` name and renamed when complete, as a drop folder wants it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.part")
    with partial.open("wb") as out:
        for chunk in chunks(fmt, items, as_of):
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    partial.replace(path)
    return path
