"""Redis failover: WAIT's answers, and a drill on the test's own 6-node cluster where a master is
killed -9 mid-sale while its replica lags, then its replica is promoted. What the callers were
told (holds and confirmations acknowledged) is compared with what the new master has, without
WAIT and with WAIT 1 (docs/operations.md#redis-failover)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import RedisCluster

from flashsale.engine import Code, Engine, EngineUnavailable, keys
from flashsale.engine.connection import RedisClient, connect
from flashsale.engine.invariants import check_sale, read_holds
from flashsale.engine.settings import Settings
from flashsale.services import redis_nodes
from tests.helpers import assert_sound, eventually, open_sale, sale_config, sku_stock

DRILL_PORT_OFFSET = 700  # the drill's cluster: cluster_base_port + 700 .. + 705
SHOPPERS = 64  # concurrent reserve + confirm loops
STALL_S = 1.0  # the replica is stopped this long before its master dies: it falls behind
FIGURES = Path(__file__).resolve().parents[1] / "artifacts" / "failover.json"


async def test_a_short_wait_fails_the_calls_the_master_ran(
    redis_client: RedisClient, settings: Settings, sale_id: str
) -> None:
    """The private Redis has no replica: WAIT 1 hears from 0, so no reserve is answered OK,
    though every one ran on the master (its units are reserved)."""
    waiting = dataclasses.replace(settings, redis_wait_replicas=1, redis_wait_timeout_ms=10)
    engine, plain = Engine(redis_client, waiting), Engine(redis_client, settings)
    await open_sale(plain, sale_config(sale_id))
    results = await asyncio.gather(
        *(engine.reserve(sale_id, f"c{i}", [("A", 1)]) for i in range(40)),
        return_exceptions=True,
    )
    assert all(isinstance(r, EngineUnavailable) for r in results), results
    assert all("WAIT heard from 0 of 1 replicas" in str(r) for r in results)
    # Every pipeline was short; one whose scripts Redis had not cached yet ran twice (NOSCRIPT).
    assert engine.batcher is not None and engine.batcher.wait_short >= engine.batcher.batches >= 1
    # The stock read answers whatever WAIT says: it wrote nothing.
    assert (await sku_stock(engine, sale_id, "A")).reserved == 40
    await assert_sound(engine, sale_id)


@pytest.mark.cluster
async def test_a_short_wait_on_the_cluster_names_the_replicas_heard(
    cluster_client: RedisClient, settings: Settings, sale_id: str
) -> None:
    """Each master of the shared cluster has one replica: WAIT 2 hears from exactly 1, on the
    connection of the master that ran the calls."""
    waiting = dataclasses.replace(settings, redis_wait_replicas=2, redis_wait_timeout_ms=10)
    engine, plain = Engine(cluster_client, waiting), Engine(cluster_client, settings)
    await open_sale(plain, sale_config(sale_id))
    results = await asyncio.gather(
        *(engine.reserve(sale_id, f"c{i}", [("A", 1)]) for i in range(40)),
        return_exceptions=True,
    )
    assert all("WAIT heard from 1 of 2 replicas" in str(r) for r in results), results
    assert (await sku_stock(engine, sale_id, "A")).reserved == 40
    await assert_sound(engine, sale_id)


@pytest.mark.cluster
async def test_wait_1_on_the_cluster_answers_every_call(
    cluster_client: RedisClient, settings: Settings, sale_id: str
) -> None:
    waiting = dataclasses.replace(settings, redis_wait_replicas=1, redis_wait_timeout_ms=2000)
    engine = Engine(cluster_client, waiting)
    await open_sale(engine, sale_config(sale_id))
    results = await asyncio.gather(
        *(engine.reserve(sale_id, f"c{i}", [("A", 1)]) for i in range(100))
    )
    assert [r.code for r in results] == [Code.OK] * 100
    assert engine.batcher is not None and engine.batcher.wait_short == 0
    await assert_sound(engine, sale_id)


# --- the drill ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Tally:
    """What the shoppers were told, and when the failover happened."""

    holds: set[str] = dataclasses.field(default_factory=set)  # reserve answered OK
    confirmed: set[str] = dataclasses.field(default_factory=set)  # confirm answered OK
    vanished: int = 0  # confirm of an acknowledged hold answered UNKNOWN_HOLD
    failed: int = 0  # calls answered EngineUnavailable
    holds_at_promotion: int = 0
    failover_s: float = 0.0  # from the kill to the replica serving as master


async def _shopper(engine: Engine, sale_id: str, n: int, tally: Tally, stop: asyncio.Event) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        try:
            held = await engine.reserve(sale_id, f"c{n}-{i}", [("A", 1)])
            assert held.ok, held
            tally.holds.add(held.hold_id)
            done = await engine.confirm(sale_id, held.hold_id)
            if done.code is Code.OK:
                tally.confirmed.add(held.hold_id)
            else:
                assert done.code is Code.UNKNOWN_HOLD, done
                tally.vanished += 1
        except EngineUnavailable:
            tally.failed += 1
            await asyncio.sleep(0.01)


def _signal(settings: Settings, port: int, signum: signal.Signals) -> None:
    pid = redis_nodes._read_pid(redis_nodes._cluster_dir(settings, port) / "redis.pid")
    assert pid is not None and redis_nodes._is_our_redis(pid, port), f"no node of ours on {port}"
    os.kill(pid, signum)


def _master_of(client: RedisClient, sale_id: str) -> int:
    assert isinstance(client, RedisCluster)
    node = client.get_node_from_key(keys.sale(sale_id))
    assert node is not None
    return int(node.port)


def _replica_of(master_port: int) -> int:
    nodes = redis_nodes._redis_call(master_port, "CLUSTER", "NODES") or ""
    rows = [line.split() for line in nodes.splitlines()]
    me = next(r[0] for r in rows if "myself" in r[2])
    (replica,) = [r[1] for r in rows if r[3] == me]
    return int(replica.split("@")[0].rsplit(":", 1)[1])


def _serves(port: int) -> bool:
    role = redis_nodes._info(port, "INFO", "replication").get("role")
    return role == "master" and redis_nodes._cluster_info(port).get("cluster_state") == "ok"


async def _kill_mid_sale(settings: Settings, master: int, tally: Tally) -> int:
    """Once 300 holds are acknowledged: the replica loses its link and hears nothing for
    STALL_S while the master sells on, then the master is killed -9 and the replica woken.
    Returns the replica's port once it serves as master."""
    replica = _replica_of(master)
    await eventually(lambda: _at_least(tally, 300), timeout_s=60)
    _signal(settings, replica, signal.SIGSTOP)
    try:
        cut = redis_nodes._redis_call(master, "CLIENT", "KILL", "TYPE", "replica")
        assert cut == ":1", cut
        await asyncio.sleep(STALL_S)
        _signal(settings, master, signal.SIGKILL)
        killed_at = time.monotonic()
    finally:
        _signal(settings, replica, signal.SIGCONT)

    async def promoted() -> bool:
        return await asyncio.to_thread(_serves, replica)

    await eventually(promoted, timeout_s=30, interval_s=0.1)
    tally.failover_s = round(time.monotonic() - killed_at, 2)
    tally.holds_at_promotion = len(tally.holds)
    return replica


async def _at_least(tally: Tally, holds: int) -> bool:
    return len(tally.holds) >= holds


@dataclasses.dataclass(frozen=True)
class Figures:
    wait_replicas: int
    holds_acknowledged: int
    holds_lost: int  # acknowledged, not on the new master
    confirmations_acknowledged: int
    confirmations_lost: int  # acknowledged, the hold not confirmed on the new master
    unacknowledged_survivors: int  # holds on the new master that no caller was told of
    holds_acknowledged_after_promotion: int  # in the second the new master served alone
    vanished_on_confirm: int
    failed_calls: int
    wait_short: int
    failover_s: float
    violations: list[str]


async def _figures(
    settings: Settings, port: int, sale_id: str, tally: Tally, wait_short: int
) -> Figures:
    """What the callers were told against what the promoted replica on `port` holds."""
    client = connect(f"redis://127.0.0.1:{port}/0", cluster=True)
    try:
        reader = Engine(client, settings)
        holds = await read_holds(reader, sale_id)
        violations = await check_sale(reader, sale_id)
    finally:
        await client.aclose()
    present = {h.hold_id for h in holds}
    confirmed = {h.hold_id for h in holds if h.status == "confirmed"}
    return Figures(
        settings.redis_wait_replicas,
        len(tally.holds),
        len(tally.holds - present),
        len(tally.confirmed),
        len(tally.confirmed - confirmed),
        len(present - tally.holds),
        len(tally.holds) - tally.holds_at_promotion,
        tally.vanished,
        tally.failed,
        wait_short,
        tally.failover_s,
        violations,
    )


async def _drill(settings: Settings) -> Figures:
    """SHOPPERS reserve and confirm one unit each, over and over, through a master's death and
    its replica's promotion, and for a second after it."""
    client = connect(settings.local_cluster_url, cluster=True)
    engine = Engine(client, settings)
    sale_id = f"failover-wait{settings.redis_wait_replicas}-{uuid.uuid4().hex[:8]}"
    await open_sale(engine, sale_config(sale_id, {"A": [("p", 10**6)]}))
    tally, stop = Tally(), asyncio.Event()
    shoppers = [
        asyncio.create_task(_shopper(engine, sale_id, n, tally, stop)) for n in range(SHOPPERS)
    ]
    try:
        new_master = await _kill_mid_sale(settings, _master_of(client, sale_id), tally)
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await asyncio.gather(*shoppers)
        await client.aclose()
    assert engine.batcher is not None
    return await _figures(settings, new_master, sale_id, tally, engine.batcher.wait_short)


@pytest.fixture
async def drill_settings(settings: Settings, tmp_path: Path) -> AsyncIterator[Settings]:
    """A 6-node cluster of the drill's own on other ports and under tmp_path, stopped at the
    end whatever happened; the shared cluster is never touched."""
    base = settings.cluster_base_port + DRILL_PORT_OFFSET
    drill = dataclasses.replace(
        settings, run_dir=str(tmp_path / "run"), cluster_base_port=base, redis_cluster_url=""
    )
    ports = redis_nodes._cluster_ports(drill)
    busy = [p for p in ports if redis_nodes._redis_call(p, "PING") is not None]
    assert not busy, f"ports {busy} already answer; the drill needs its own cluster"
    try:
        await asyncio.to_thread(redis_nodes._up_cluster, drill, lambda _line: None)
        yield drill
    finally:
        for port in ports:  # a node left stopped (SIGSTOP) would ignore SIGTERM
            pid = redis_nodes._read_pid(redis_nodes._cluster_dir(drill, port) / "redis.pid")
            if pid is not None and redis_nodes._is_our_redis(pid, port):
                os.kill(pid, signal.SIGCONT)
        await asyncio.to_thread(redis_nodes._down_cluster, drill, lambda _line: None)


@pytest.mark.cluster
@pytest.mark.slow
async def test_failover_loses_no_write_acknowledged_after_wait(drill_settings: Settings) -> None:
    without = await _drill(drill_settings)
    # The killed master comes back as its successor's replica, in sync, for the second run.
    await asyncio.to_thread(redis_nodes._up_cluster, drill_settings, lambda _line: None)
    with_wait = await _drill(dataclasses.replace(drill_settings, redis_wait_replicas=1))
    FIGURES.parent.mkdir(exist_ok=True)
    figures = [dataclasses.asdict(f) for f in (without, with_wait)]
    FIGURES.write_text(json.dumps(figures, indent=2) + "\n")
    for f in figures:
        print(f"\nfailover drill, WAIT {f['wait_replicas']}: {json.dumps(f)}")
    assert without.violations == [] and with_wait.violations == []  # what survived is sound
    # Without WAIT, holds acknowledged while the replica was cut off are gone; the drill made
    # the lag it measures.
    assert without.holds_lost > 0, without
    assert without.holds_acknowledged_after_promotion > 0, without
    # With WAIT 1, every acknowledged hold and confirmation is on the new master, and nothing
    # is acknowledged while it has no replica.
    assert with_wait.holds_acknowledged >= 300, with_wait
    assert (with_wait.holds_lost, with_wait.confirmations_lost) == (0, 0), with_wait
    assert with_wait.vanished_on_confirm == 0
    assert with_wait.holds_acknowledged_after_promotion == 0, with_wait
    assert with_wait.wait_short > 0, with_wait
