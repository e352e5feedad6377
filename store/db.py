"""What every store module shares: the connection type, the errors that mean PostgreSQL is away,
and the row-to-column reshaping that `unnest` batch statements take."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints

# asyncpg has no stubs; the alias at least names what a parameter is.
Connection: TypeAlias = Any

# PostgreSQL could not be asked (down, restarting, the connection lost), as opposed to a refusal
# of what was sent. InternalClientError: a server that shuts down sends its FATAL to an idle
# session, and the next query then finds the protocol still busy with it.
UNAVAILABLE = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


def columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows to per-column lists, the shape `unnest($1::t[], $2::t[], ...)` takes."""
    return [[row[i] for row in rows] for i in range(width)]
