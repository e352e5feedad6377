"""Applies the packaged store/migrations/V<n>__<slug>.sql files once each, in order."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files

import asyncpg

from flashsale.engine.errors import FlashsaleError
from flashsale.store.db import (
    Connection as Connection,  # TEMP re-export until tests import store.db
)

# One fixed key for every process of every version: "flashsal" in ASCII, fits a signed bigint.
LOCK_KEY = 0x666C61736873616C

_FILE_NAME = re.compile(r"V(?P<version>[0-9]+)__(?P<slug>[A-Za-z0-9_]+)\.sql")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(FlashsaleError):
    """The packaged migration files are inconsistent (e.g. two files share a version)."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """Every packaged migration, by version; other files in the folder are ignored."""
    found: dict[int, Migration] = {}
    for entry in (files("flashsale.store") / "migrations").iterdir():
        match = _FILE_NAME.fullmatch(entry.name)
        if match is None:
            continue
        version = int(match["version"])
        if version in found:
            raise MigrationError(f"{entry.name} and {found[version].name} share version {version}")
        found[version] = Migration(version, entry.name, entry.read_text(encoding="utf-8"))
    return [found[version] for version in sorted(found)]


async def _applied(conn: Connection) -> set[int]:
    rows = await conn.fetch("SELECT version FROM schema_migrations")
    return {int(row["version"]) for row in rows}


async def migrate(conn: Connection) -> list[int]:
    """Apply the pending migrations in one transaction; the versions applied, [] if none."""
    applied: list[int] = []
    # A savepoint when the caller already has a transaction, so one failing file undoes all.
    async with conn.transaction():
        # Taken before anything is read: a second caller waits here, then sees the first's rows
        # (read committed gives each later statement a fresh snapshot) and has nothing to do.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        await conn.execute(_CREATE_TABLE)
        done = await _applied(conn)
        for migration in migrations():
            if migration.version in done:
                continue
            # No arguments: asyncpg uses the simple protocol, which runs a multi-statement file.
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            applied.append(migration.version)
    return applied


async def migrate_url(url: str) -> list[int]:
    """Connect to `url`, migrate, close; the versions applied."""
    conn = await asyncpg.connect(url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()
