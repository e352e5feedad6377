"""A per-worker async cache: one load at a time per key, stale answers while a refresh runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Cached(Generic[K, V]):
    """Values younger than `fresh_s` are served as they are. Older ones, up to `stale_s`, are
    served while one background load replaces them, so a hot key never makes a request wait.
    A missing or too old value is loaded once however many callers ask for it at the same time."""

    def __init__(
        self,
        load: Callable[[K], Awaitable[V]],
        fresh_s: float,
        stale_s: float,
        max_entries: int = 10_000,
    ) -> None:
        self._load = load
        self._fresh_s = fresh_s
        self._stale_s = stale_s
        self._max_entries = max_entries
        self._values: dict[K, tuple[float, V]] = {}
        self._loading: dict[K, asyncio.Future[V]] = {}

    def keys(self) -> list[K]:
        return list(self._values)

    async def get(self, key: K) -> V:
        found, value = self.get_now(key)
        if found:
            return value  # type: ignore[return-value]  # found: value is a V
        return await asyncio.shield(self._start(key))

    def get_now(self, key: K) -> tuple[bool, V | None]:
        """(True, value) when a value can be served without waiting (a stale one starts its
        refresh); (False, None) when the caller must await get(). No coroutine on the hot path."""
        hit = self._values.get(key)
        if hit is None:
            return False, None
        age = time.monotonic() - hit[0]
        if age >= self._fresh_s:
            if age >= self._stale_s:
                return False, None
            self._start(key)
        return True, hit[1]

    async def refresh(self, key: K) -> V:
        """A value loaded after this call began (waits for a load already running, then one)."""
        running = self._loading.get(key)
        if running is not None:
            await asyncio.gather(running, return_exceptions=True)
        return await asyncio.shield(self._start(key))

    def _start(self, key: K) -> asyncio.Future[V]:
        running = self._loading.get(key)
        if running is None:
            running = asyncio.ensure_future(self._load_and_keep(key))
            self._loading[key] = running
            running.add_done_callback(lambda done: self._finished(key, done))
        return running

    async def _load_and_keep(self, key: K) -> V:
        value = await self._load(key)
        if len(self._values) >= self._max_entries and key not in self._values:
            self._values.clear()  # a flood of unknown keys must not grow memory without end
        self._values[key] = (time.monotonic(), value)
        return value

    def _finished(self, key: K, done: asyncio.Future[V]) -> None:
        self._loading.pop(key, None)
        if not done.cancelled():
            done.exception()  # a background load's error is seen by the next caller, not logged

    def peek(self, key: K) -> V | None:
        """The last value loaded for `key`, however old, without loading."""
        hit = self._values.get(key)
        return hit[1] if hit is not None else None
