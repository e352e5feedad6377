"""Builds the redis-py asyncio client for a single Redis or a Redis Cluster from a URL, and turns
its failures into EngineUnavailable."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from flashsale.engine.errors import EngineUnavailable

RedisClient = Redis | RedisCluster


def connect(url: str, *, cluster: bool = False, max_connections: int = 64) -> RedisClient:
    """A client with str replies; `cluster` picks RedisCluster (the URL names any one node).
    The single-node pool blocks (up to 5 s) when all connections are busy instead of failing,
    so a burst of callers queues rather than erroring."""
    if cluster:
        return RedisCluster.from_url(url, decode_responses=True, max_connections=max_connections)
    pool = BlockingConnectionPool.from_url(
        url,
        decode_responses=True,
        max_connections=max_connections,
        timeout=5,
        health_check_interval=30,
    )
    return Redis(connection_pool=pool)


# Typed reads: the clients above always decode replies to str, which redis-py's stubs can't know.
async def hgetall(client: RedisClient, key: str) -> dict[str, str]:
    return cast(dict[str, str], await client.hgetall(key))


async def smembers(client: RedisClient, key: str) -> set[str]:
    return cast(set[str], await client.smembers(key))


async def zrange_scores(client: RedisClient, key: str) -> list[tuple[str, float]]:
    return cast(list[tuple[str, float]], await client.zrange(key, 0, -1, withscores=True))


@contextmanager
def redis_errors() -> Iterator[None]:
    """Redis calls made inside raise EngineUnavailable (from the RedisError) instead."""
    try:
        yield
    except (RedisError, RedisClusterException) as exc:  # the latter: no node knows a slot
        raise EngineUnavailable(f"redis call failed: {exc}") from exc


@dataclass(frozen=True, slots=True)
class MemoryInfo:
    used_bytes: int
    max_bytes: int  # 0: no maxmemory set


async def memory_info(client: RedisClient) -> dict[str, MemoryInfo]:
    """INFO memory of the Redis, or of every master of the cluster, by host:port."""
    with redis_errors():
        if isinstance(client, RedisCluster):
            replies: dict[str, Any] = await client.info(
                "memory", target_nodes=RedisCluster.PRIMARIES
            )
        else:
            found = client.connection_pool.connection_kwargs
            replies = {f"{found.get('host')}:{found.get('port')}": await client.info("memory")}
    return {
        node: MemoryInfo(int(info.get("used_memory", 0)), int(info.get("maxmemory", 0)))
        for node, info in replies.items()
    }
