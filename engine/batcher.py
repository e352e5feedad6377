"""Coalesces concurrent script calls into pipelines, each caller keeping its own answer."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisClusterException, RedisError, ResponseError

from flashsale.engine.cluster_batch import ClusterBatch
from flashsale.engine.connection import RedisClient
from flashsale.engine.errors import EngineUnavailable
from flashsale.engine.resp import Call, pack_wait, read_reply

log = logging.getLogger(__name__)
_WARN_EVERY_S = 10.0  # a replica down for minutes must not write a warning per batch
# Whatever ends a pipeline early (RedisClusterException: no node knows a slot; not a RedisError).
_BATCH_FAILURES = (
    RedisError,
    RedisClusterException,
    OSError,
    TimeoutError,
    asyncio.CancelledError,
    RuntimeError,
)


class ScriptBatcher:
    """Calls made in one loop tick go out as one pipeline. While `max_inflight` pipelines are
    waiting on Redis, new calls queue and leave together when one returns, so batches grow with
    load instead of the number of round trips. A failed pipeline fails exactly its own calls.

    With `wait_replicas`, each pipeline ends with WAIT on the connection that wrote it: its
    callers hear back once that many replicas have its writes. Short of that within
    `wait_timeout_ms` the calls fail (EngineUnavailable), though the master did run them: an
    answer given is a write that survives a failover (docs/operations.md#redis-failover)."""

    def __init__(
        self,
        client: RedisClient,
        *,
        max_inflight: int = 4,
        read_timeout_s: float = 10.0,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 100,
    ) -> None:
        self._client = client
        self._read_timeout_s = read_timeout_s
        self._max_inflight = max_inflight
        self._wait_replicas = wait_replicas
        self._wait = pack_wait(wait_replicas, wait_timeout_ms)
        self._cluster = (
            ClusterBatch(client, tail=self._wait, judge=self._judge, read_timeout_s=read_timeout_s)
            if isinstance(client, RedisCluster)
            else None
        )
        self._warned_at = -math.inf
        self._pending: list[Call] = []
        self._inflight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.calls = 0
        self.wait_short = 0  # pipelines whose WAIT heard from fewer than wait_replicas replicas
        self.observer: Callable[[int], None] | None = None  # told each batch's size (metrics)
        self.on_wait_short: Callable[[], None] | None = None  # told each short WAIT (metrics)

    async def call(
        self,
        script: AsyncScript,
        keys: Sequence[str],
        args: Sequence[str | int],
        *,
        writes: bool = True,
    ) -> Any:
        """`writes` False: the script only reads, and its answer goes out whatever WAIT says."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append(Call(script, keys, args, future, writes))
        self._schedule(loop)
        return await future

    async def drain(self) -> None:
        """Wait until every queued call has been answered (graceful shutdown)."""
        while self._pending or self._tasks:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            else:
                await asyncio.sleep(0)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._scheduled and self._inflight < self._max_inflight:
            self._scheduled = True
            # A fresh context: the batch is no one request's, and must not log under the id of
            # the request that happened to schedule it.
            loop.call_soon(self._flush, context=contextvars.Context())

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if not batch:
            return
        self._inflight += 1
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[Call]) -> None:
        self.batches += 1
        self.calls += len(batch)
        if self.observer is not None:
            self.observer(len(batch))
        try:
            results = await self._execute(batch)
        except BaseException as exc:
            # Every caller must hear back, whatever broke (a bug included); a lost future is a
            # hung request.
            error = EngineUnavailable(f"redis pipeline of {len(batch)} calls failed: {exc!r}")
            error.__cause__ = exc
            for call in batch:
                _settle(call.future, error)
            if not isinstance(exc, _BATCH_FAILURES):
                log.error("script batch failed unexpectedly", exc_info=exc)
            if not isinstance(exc, Exception):  # cancelled, or the process is exiting
                raise
        else:
            for call, result in zip(batch, results, strict=True):
                _settle(call.future, result)
        finally:
            self._inflight -= 1
            if self._pending:
                self._schedule(asyncio.get_running_loop())

    async def _execute(self, batch: list[Call]) -> list[Any]:
        results = await self._pipeline(batch)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:  # Redis restarted or flushed its script cache: load once, run those again.
            for script in {id(batch[i].script): batch[i].script for i in missing}.values():
                script.sha = await self._client.script_load(script.script)
            again = await self._pipeline([batch[i] for i in missing])
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        return results

    async def _pipeline(self, batch: list[Call]) -> list[Any]:
        if self._cluster is not None:
            return await self._cluster.run(batch)
        # One write of the whole batch on one pooled connection, then the replies in order.
        # redis-py's generic pipeline spent ~40% of the hot path encoding arguments.
        pool = cast(Redis, self._client).connection_pool  # not a cluster: see __init__
        conn: AbstractConnection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            payload = b"".join(call.packed() for call in batch) + self._wait
            await conn.send_packed_command(payload, check_health=False)
            # One deadline for the whole batch: a per-reply timeout cost ~10% of the hot path.
            async with asyncio.timeout(self._read_timeout_s):
                replies = [await read_reply(conn) for _ in range(len(batch) + bool(self._wait))]
        except BaseException:
            await conn.disconnect()  # a half-read connection must not go back into the pool
            raise
        finally:
            await pool.release(conn)
        return self._judge(batch, replies, "redis")

    def _judge(self, calls: Sequence[Call], replies: list[Any], node: str) -> list[Any]:
        """The calls' answers from one connection's replies. With WAIT, its reply comes last,
        and a count short of wait_replicas turns the answer of every call that writes into an
        error."""
        if not self._wait:
            return replies
        *answers, acked = replies
        if isinstance(acked, int) and acked >= self._wait_replicas:
            return answers
        self._count_short(node, acked)
        error = EngineUnavailable(
            f"redis {node} ran the calls, but WAIT heard from {acked!r} of "
            f"{self._wait_replicas} replicas in time: not acknowledged"
        )
        return [
            error if call.writes and not isinstance(answer, BaseException) else answer
            for call, answer in zip(calls, answers, strict=True)
        ]

    def _count_short(self, node: str, acked: Any) -> None:
        self.wait_short += 1
        if self.on_wait_short is not None:
            self.on_wait_short()
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "WAIT heard from %r of %d replicas of %s; calls failed (%d short so far)",
                acked,
                self._wait_replicas,
                node,
                self.wait_short,
                extra={"event": "batcher.wait_short"},
            )


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if future.done():  # the caller went away; its answer has nowhere to go
        return
    if isinstance(result, ResponseError):
        error = EngineUnavailable(f"script failed: {result}")
        error.__cause__ = result
        future.set_exception(error)
    elif isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
