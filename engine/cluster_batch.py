"""Sends one batch of script calls to a Redis Cluster: one packed write per master, with the
batch's WAIT at its end, on the connection that wrote the calls."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.exceptions import (
    AskError,
    ClusterDownError,
    RedisClusterException,
    RedisError,
    SlotNotCoveredError,
    TryAgainError,
)

from flashsale.engine.errors import EngineUnavailable
from flashsale.engine.resp import Call, read_reply

# Answers saying the node did not run the call (MOVED is an AskError): nothing was written, so
# the call may go again once the slot map is fresh.
_NOT_RUN = (AskError, TryAgainError, ClusterDownError, SlotNotCoveredError)

Judge = Callable[[Sequence[Call], list[Any], str], list[Any]]  # calls, replies, node -> answers


class ClusterBatch:
    """redis-py's cluster pipeline would send a keyless WAIT to its default node, not down the
    connection that wrote the calls, and WAIT only counts that connection's writes. So calls are
    grouped by the master of their first key (every key of a call shares one slot), each group
    written on one connection of that master, followed by `tail` (the WAIT, or nothing).

    A call answered MOVED/ASK/TRYAGAIN/CLUSTERDOWN ran nowhere: it goes once more after the
    slot map is refreshed (a failover moves slots), and fails if it is refused again. A
    connection lost mid-batch fails its calls: whether they ran is unknown, so they are never
    sent twice."""

    def __init__(
        self, client: RedisCluster, *, tail: bytes, judge: Judge, read_timeout_s: float
    ) -> None:
        self._client = client
        self._tail = tail
        self._judge = judge
        self._read_timeout_s = read_timeout_s
        self.refreshes = 0

    async def run(self, batch: Sequence[Call]) -> list[Any]:
        await self._client.initialize()  # a no-op once redis-py knows the slot map
        results = await self._round(batch)
        again = [i for i, result in enumerate(results) if isinstance(result, _NOT_RUN)]
        if again:
            await self._refresh()
            retried = await self._round([batch[i] for i in again])
            for i, result in zip(again, retried, strict=True):
                results[i] = result
        return [_refused(r) if isinstance(r, _NOT_RUN) else r for r in results]

    async def _round(self, batch: Sequence[Call]) -> list[Any]:
        results: list[Any] = [None] * len(batch)
        groups: dict[ClusterNode, list[int]] = {}
        for i, call in enumerate(batch):
            try:
                groups.setdefault(self._master(call.keys[0]), []).append(i)
            except SlotNotCoveredError as exc:
                results[i] = exc
        sent = await asyncio.gather(
            *(self._on_node(node, [batch[i] for i in group]) for node, group in groups.items()),
            return_exceptions=True,
        )
        lost = False
        for (node, group), replies in zip(groups.items(), sent, strict=True):
            if isinstance(replies, BaseException):
                lost = True
                replies = [_lost(node, replies)] * len(group)
            for i, reply in zip(group, replies, strict=True):
                results[i] = reply
        if lost:
            await self._refresh()
        return results

    def _master(self, key: str) -> ClusterNode:
        node = self._client.get_node_from_key(key)
        if node is None:  # only a replica lookup answers None; kept for the type checker
            raise SlotNotCoveredError(f"no master known for {key}")
        return node

    async def _on_node(self, node: ClusterNode, calls: list[Call]) -> list[Any]:
        conn = node.acquire_connection()
        try:
            await node.disconnect_if_needed(conn)  # marked stale by a slot-map refresh
            payload = b"".join(call.packed() for call in calls) + self._tail
            await conn.send_packed_command(payload, check_health=False)
            async with asyncio.timeout(self._read_timeout_s):
                replies = [await read_reply(conn) for _ in range(len(calls) + bool(self._tail))]
        except BaseException:
            await conn.disconnect()  # a half-read connection must not be used again
            raise
        finally:
            node.release(conn)
        return self._judge(calls, replies, node.name)

    async def _refresh(self) -> None:
        """A new slot map from the nodes that answer. redis-py skips a refresh that another one
        finished while this waited for its lock; a failed one leaves the old map for the next
        batch to try again."""
        self.refreshes += 1
        with contextlib.suppress(RedisError, RedisClusterException, OSError):
            await self._client.nodes_manager.initialize()


def _refused(exc: Exception) -> EngineUnavailable:
    error = EngineUnavailable(f"redis cluster did not run the call, twice: {exc!r}")
    error.__cause__ = exc
    return error


def _lost(node: ClusterNode, exc: BaseException) -> EngineUnavailable:
    error = EngineUnavailable(f"redis cluster node {node.name} failed mid-batch: {exc!r}")
    error.__cause__ = exc
    return error
