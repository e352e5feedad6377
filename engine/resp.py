"""The RESP the batcher writes and reads by hand: script calls and WAIT packed, one reply read."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError


@dataclass(slots=True)
class Call:
    """One caller's script call and the future its answer goes to; `writes` False for a
    script that only reads (its answer needs no WAIT)."""

    script: AsyncScript
    keys: Sequence[str]
    args: Sequence[str | int]
    future: asyncio.Future[Any]
    writes: bool = True

    def packed(self) -> bytes:
        return pack_evalsha(self.script.sha, self.keys, self.args)


def pack_evalsha(sha: str, keys: Sequence[str], args: Sequence[str | int]) -> bytes:
    """RESP encoding of EVALSHA sha numkeys keys... args... (strings are UTF-8)."""
    parts = [b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n" % (3 + len(keys) + len(args), sha.encode())]
    numkeys = str(len(keys)).encode()
    parts.append(b"$%d\r\n%s\r\n" % (len(numkeys), numkeys))
    for item in (*keys, *args):
        data = item.encode() if isinstance(item, str) else str(item).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def pack_wait(replicas: int, timeout_ms: int) -> bytes:
    """RESP encoding of WAIT replicas timeout_ms; b"" when no replica is waited for."""
    if replicas <= 0:
        return b""
    fields = [b"WAIT", str(replicas).encode(), str(timeout_ms).encode()]
    return b"*3\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(f), f) for f in fields)


async def read_reply(conn: AbstractConnection) -> Any:
    """The next reply; an error reply is returned, not raised: it is one call's answer, not the
    batch's."""
    try:
        return await conn.read_response(timeout=math.inf, disconnect_on_error=False)
    except ResponseError as exc:
        return exc
