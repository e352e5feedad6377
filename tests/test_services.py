"""The private-services launcher: idempotent `up`, status, env lines, and a full up/down cycle."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from flashsale import services
from flashsale.engine.settings import Settings
from flashsale.services import redis_nodes
from flashsale.services.common import _wait


def _pids(settings: Settings) -> list[str]:
    run = settings.run_path
    pidfiles = [run / "redis" / "redis.pid", run / "pg" / "data" / "postmaster.pid"]
    cluster = [settings.cluster_base_port + i for i in range(6)]
    pidfiles += [run / "cluster" / str(port) / "redis.pid" for port in cluster]
    return [path.read_text().split()[0] for path in pidfiles]


def _cli(*args: str) -> str:
    redis_cli = shutil.which("redis-cli")
    assert redis_cli is not None
    return subprocess.run([redis_cli, *args], capture_output=True, text=True, check=True).stdout


def _psql(port: int, database: str, query: str) -> str:
    psql = shutil.which("psql")
    assert psql is not None
    cmd = [psql, "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", database, "-tAc"]
    return subprocess.run([*cmd, query], capture_output=True, text=True, check=True).stdout.strip()


def test_default_services_are_up_and_idempotent(settings: Settings) -> None:
    if settings.redis_url or settings.redis_cluster_url or settings.database_url:
        pytest.skip("external services configured; the launcher starts nothing")
    first = services.up(settings, log=lambda _line: None)
    assert first == {
        "FLASHSALE_REDIS_URL": f"redis://127.0.0.1:{settings.redis_port}/0",
        "FLASHSALE_REDIS_CLUSTER_URL": f"redis://127.0.0.1:{settings.cluster_base_port}/0",
        "FLASHSALE_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{settings.postgres_port}/flashsale",
        # The saga's simulated parties (`flashsale sim up`), listed so one `eval` sets all.
        "FLASHSALE_PAYMENT_URL": f"http://127.0.0.1:{settings.sim_base_port}",
        "FLASHSALE_SUPPLIER_URL": f"http://127.0.0.1:{settings.sim_base_port + 1}"
        "/suppliers/{supplier}",
        "FLASHSALE_WEBHOOK_CUSTOMER_URL": f"http://127.0.0.1:{settings.sim_base_port + 2}"
        "/hooks/customer",
        "FLASHSALE_WEBHOOK_RETAILER_URL": f"http://127.0.0.1:{settings.sim_base_port + 2}"
        "/hooks/retailer",
    }
    pids = _pids(settings)
    lines: list[str] = []
    assert services.up(settings, log=lines.append) == first
    assert len(lines) == 8
    assert all(line.endswith("already running") for line in lines), lines
    assert _pids(settings) == pids
    assert services.status(settings) == {"redis": True, "cluster": True, "postgres": True}
    exports = services.env_lines(settings)
    assert [line.split("=", 1)[0] for line in exports] == [f"export {name}" for name in first]


def test_default_cluster_and_database_answer(settings: Settings) -> None:
    if settings.redis_cluster_url or settings.database_url:
        pytest.skip("external services configured")
    services.up(settings, log=lambda _line: None)
    port = str(settings.cluster_base_port)
    assert "cluster_state:ok" in _cli("-p", port, "cluster", "info")
    nodes = [line.split() for line in _cli("-p", port, "cluster", "nodes").splitlines()]
    masters = [node[0] for node in nodes if "master" in node[2]]
    replicas = [node[3] for node in nodes if "slave" in node[2]]
    assert all("connected" in node for node in nodes)
    assert len(masters) == 3 and sorted(replicas) == sorted(masters)  # one replica each
    assert _psql(settings.postgres_port, "flashsale_test", "SELECT 1") == "1"


@pytest.fixture
def scratch_settings() -> Iterator[Settings]:
    """Other ports and a throwaway run dir; not pytest's tmp_path, whose 0700 parent the
    postgres user (used when we run as root) could not traverse."""
    run_dir = Path(tempfile.mkdtemp(prefix="flashsale-services-"))
    run_dir.chmod(0o755)
    settings = dataclasses.replace(Settings(), run_dir=str(run_dir), redis_port=6490)
    settings = dataclasses.replace(settings, cluster_base_port=7211, postgres_port=5541)
    try:
        yield settings
    finally:
        services.down(settings, log=lambda _line: None)
        shutil.rmtree(run_dir, ignore_errors=True)


def test_full_cycle_on_scratch_ports(scratch_settings: Settings) -> None:
    lines: list[str] = []
    services.up(scratch_settings, log=lines.append)
    assert "cluster created on 127.0.0.1:7211..7216 (3 masters, 1 replica each)" in lines
    assert services.status(scratch_settings) == {"redis": True, "cluster": True, "postgres": True}
    assert _psql(5541, "flashsale", "SELECT 1") == "1"
    services.down(scratch_settings, log=lines.append)
    assert not any(services.status(scratch_settings).values())
    # A restart keeps nodes.conf and the data dir: nothing is re-created or re-initialized.
    lines.clear()
    services.up(scratch_settings, log=lines.append)
    assert not [line for line in lines if "created" in line or "initialized" in line], lines
    assert services.status(scratch_settings) == {"redis": True, "cluster": True, "postgres": True}
    services.down(scratch_settings, log=lambda _line: None)
    assert not any(services.status(scratch_settings).values())


def test_a_cluster_of_the_older_3_master_layout_gets_its_replicas(
    scratch_settings: Settings,
) -> None:
    """Run dirs made before the replicas: `up` keeps the 3 masters and their data, and adds the
    3 new nodes as one replica each."""
    ports = redis_nodes._cluster_ports(scratch_settings)
    for port in ports[:3]:
        workdir = redis_nodes._cluster_dir(scratch_settings, port)
        redis_nodes._start_redis("node", port, workdir, redis_nodes._CLUSTER_ARGS, print)
    nodes = [f"127.0.0.1:{port}" for port in ports[:3]]
    _cli("--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes")

    # `create` returns before every node has seen the others' slots: a write made at once can
    # meet CLUSTERDOWN, and the key would then be missing for a reason not under test.
    def formed() -> bool:
        return all(redis_nodes._cluster_info(p).get("cluster_state") == "ok" for p in ports[:3])

    assert _wait(formed, 30, interval=0.1)
    assert _cli("-c", "-p", str(ports[0]), "SET", "{old}k", "kept").strip() == "OK"
    lines: list[str] = []
    services.up(scratch_settings, log=lines.append)
    assert len([line for line in lines if "added as a replica" in line]) == 3, lines
    assert services.status(scratch_settings)["cluster"]
    assert _cli("-c", "-p", str(ports[0]), "GET", "{old}k").strip() == "kept"
