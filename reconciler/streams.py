"""The reconciler's side of a sale's event stream: consumer group, reads, claims, acks, lag."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.exceptions import ResponseError

from flashsale.engine import keys
from flashsale.engine.connection import RedisClient
from flashsale.engine.events import Entry
from flashsale.reconciler.config import GROUP


def dead_letters(sale_id: str) -> str:
    """fs:{S}:events:dead, same hash tag as the stream, so moving an entry is one transaction.
    (Belongs in engine/keys.py with the other key builders; kept here until that file opens.)"""
    return keys.events(sale_id) + ":dead"


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def entry_ms(entry_id: str) -> int:
    """The Redis server time (ms) at which an entry was added: the first half of its id."""
    return int(entry_id.split("-", 1)[0])


@dataclass(frozen=True, slots=True)
class Lag:
    entries: int  # entries not yet flushed (flushed ones are deleted, so this is XLEN)
    oldest_ms: int  # server time of the oldest of them, 0 when there is none
    last_id: str  # the stream's last generated id ("" without a stream): did anything move?


@dataclass(frozen=True, slots=True)
class Claimed:
    entries: list[Entry]
    done: bool  # the pending list has been walked to its end


def _is(exc: ResponseError, code: str) -> bool:
    return str(exc).startswith(code)


class SaleStream:
    """One sale's stream as seen by one consumer of the `reconciler` group."""

    def __init__(self, client: RedisClient, sale_id: str, consumer: str) -> None:
        self.client = client
        self.sale_id = sale_id
        self.key = keys.events(sale_id)
        self.consumer = consumer
        self._cursor = "0-0"

    async def ensure_group(self) -> bool:
        """From id 0, so a group made after events were written still reads all of them. False
        while there is no stream: no key is made for a sale that may be gone (the first XADD
        makes the stream, the next read the group)."""
        try:
            await self.client.xgroup_create(self.key, GROUP, id="0")
        except ResponseError as exc:
            if _is(exc, "BUSYGROUP"):
                return True
            if "requires the key to exist" in str(exc):
                return False
            raise
        return True

    async def read(self, count: int) -> list[Entry]:
        """Up to `count` entries never delivered to any consumer of the group, oldest first."""
        try:
            reply = await self.client.xreadgroup(GROUP, self.consumer, {self.key: ">"}, count)
        except ResponseError as exc:
            # The stream (and its group) vanish with the sale's keys: a wipe, a recovery.
            if not _is(exc, "NOGROUP"):
                raise
            if not await self.ensure_group():
                return []
            reply = await self.client.xreadgroup(GROUP, self.consumer, {self.key: ">"}, count)
        return _entries(reply)

    async def claim(self, count: int) -> Claimed:
        """Take over entries delivered to any consumer but never acknowledged, oldest first.
        Only the owner of the sale calls this (see ownership.py), so no idle time is needed:
        whoever read them before has lost the sale and can no longer commit them."""
        try:
            reply = await self.client.xautoclaim(
                self.key, GROUP, self.consumer, 0, self._cursor, count=count
            )
        except ResponseError as exc:
            if not _is(exc, "NOGROUP"):
                raise
            await self.ensure_group()
            return Claimed([], True)
        cursor, found, deleted = str(reply[0]), list(reply[1]), list(reply[2])
        if deleted:  # pending ids whose entries are gone: nothing to apply, clear them
            await self.client.xack(self.key, GROUP, *deleted)
        self._cursor = cursor
        return Claimed([(str(i), dict(f)) for i, f in found if f is not None], cursor == "0-0")

    async def others_pending(self) -> int:
        """Entries pending with consumers other than this one. The owner's walk of the pending
        list can be overtaken by a read of the previous owner that had not yet noticed it lost
        its PostgreSQL session; such entries wait here until the owner walks again."""
        try:
            summary: dict[str, Any] = await self.client.xpending(self.key, GROUP)
        except ResponseError as exc:
            if _is(exc, "NOGROUP"):
                return 0
            raise
        per_consumer = summary.get("consumers") or []
        return sum(int(c["pending"]) for c in per_consumer if c["name"] != self.consumer)

    def rewind(self) -> None:
        """The next claim walks the pending list from its start again."""
        self._cursor = "0-0"

    async def settle(self, ids: Sequence[str], dead: Sequence[tuple[Entry, str]]) -> None:
        """After the commit: copy poison entries to the dead-letter stream, acknowledge, delete.
        XDEL because the group is the stream's only reader (the saga works from PostgreSQL):
        once flushed, an entry is worth nothing in Redis memory, and a stream holding only
        unflushed entries makes XLEN the exact lag. One MULTI: all of it happens or none."""
        if not ids:
            return
        tx = self.client.pipeline(transaction=True)
        for (entry_id, fields), why in dead:
            body: dict[Any, Any] = {**fields, "dead_entry": entry_id, "dead_why": why}
            tx.xadd(dead_letters(self.sale_id), body)
        tx.xack(self.key, GROUP, *ids)
        tx.xdel(self.key, *ids)
        await tx.execute()

    async def lag(self) -> Lag:
        try:
            info: dict[str, Any] = await self.client.xinfo_stream(self.key)
        except ResponseError as exc:
            if "no such key" in str(exc).lower():
                return Lag(0, 0, "")
            raise
        first = info.get("first-entry")
        oldest = entry_ms(str(first[0])) if first else 0
        return Lag(int(info["length"]), oldest, str(info["last-generated-id"]))


def _entries(reply: Any) -> list[Entry]:
    """XREADGROUP's RESP2 reply for one stream, [[key, [(id, fields), ...]]], as entries."""
    out: list[Entry] = []
    for _key, entries in cast(list[Any], reply or []):
        out += [(str(entry_id), dict(fields or {})) for entry_id, fields in entries]
    return out


async def count_dead(client: RedisClient, sale_id: str) -> int:
    return int(await client.xlen(dead_letters(sale_id)))
