"""Private Redis: one standalone server and a Redis Cluster of 3 masters, each with one replica,
under the run dir."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from flashsale.engine.settings import Settings
from flashsale.services.common import (
    _HOST,
    Log,
    ServiceError,
    _output,
    _run,
    _tail,
    _wait,
    require_binary,
)

_REDIS_TIMEOUT_S = 10.0
_CLUSTER_TIMEOUT_S = 30.0
# AOF is the only persistence; `--save ''` turns RDB snapshots off.
_STANDALONE_ARGS = ("--appendonly", "yes", "--appendfsync", "always", "--save", "")
_CLUSTER_MASTERS = 3
# A master silent this long is failed over to its replica (about 1 s more for the election), so
# a dead master's shard is back within ~6 s (docs/operations.md#redis-failover). Redis's 15 s
# default would make every failover drill slow; much less than 5 s risks failing over a node
# that a loaded 2-core test machine merely stalled.
_CLUSTER_NODE_TIMEOUT_MS = 5000
_CLUSTER_ARGS = (
    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
    "--cluster-node-timeout", str(_CLUSTER_NODE_TIMEOUT_MS),
    "--appendonly", "yes", "--save", "",
)  # fmt: skip


# --- Redis -------------------------------------------------------------------------------------


def _read_reply(stream: BinaryIO) -> str:
    """One RESP reply: bulk strings unwrapped, simple replies kept with their +/-/: prefix."""
    line = stream.readline().decode(errors="replace").rstrip("\r\n")
    if line.startswith("$"):
        size = int(line[1:])
        return "" if size < 0 else stream.read(size + 2)[:size].decode(errors="replace")
    return line


def _redis_call(port: int, *args: str) -> str | None:
    """Send one command to 127.0.0.1:port; None when nothing Redis-like answers."""
    request = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    try:
        with socket.create_connection((_HOST, port), timeout=2) as sock:
            sock.sendall(request.encode())
            with sock.makefile("rb") as stream:
                return _read_reply(stream)
    except (OSError, ValueError):
        return None


def _ping(port: int) -> bool:
    return _redis_call(port, "PING") == "+PONG"


def _redis_args(port: int, workdir: Path) -> list[str]:
    return [
        "--port", str(port), "--bind", _HOST, "--daemonize", "yes", "--dir", str(workdir),
        "--pidfile", str(workdir / "redis.pid"), "--logfile", str(workdir / "redis.log"),
    ]  # fmt: skip


def _aborted(logfile: Path, offset: int) -> bool:
    """Redis logs fatal startup errors (e.g. port taken) with "aborting" and exits."""
    try:
        with logfile.open("rb") as stream:
            stream.seek(offset)
            return b"aborting" in stream.read()
    except OSError:
        return False


def _start_redis(name: str, port: int, workdir: Path, extra: Sequence[str], log: Log) -> None:
    if _ping(port):
        log(f"{name} {_HOST}:{port} already running")
        return
    workdir.mkdir(parents=True, exist_ok=True)
    logfile = workdir / "redis.log"
    offset = logfile.stat().st_size if logfile.exists() else 0
    server = require_binary("redis-server", "redis-server")
    done = _run([server, *_redis_args(port, workdir), *extra], timeout=30)
    # Stop waiting early when this start's log already says the daemon gave up.
    _wait(lambda: _ping(port) or _aborted(logfile, offset), _REDIS_TIMEOUT_S)
    if done.returncode != 0 or not _ping(port):
        raise ServiceError(
            f"{name} {_HOST}:{port} did not come up (waited up to {_REDIS_TIMEOUT_S:.0f}s):\n"
            + "\n".join(filter(None, [_output(done), _tail(logfile)]))
        )
    log(f"{name} {_HOST}:{port} started")


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    """True while the process runs; a zombie left unreaped by a container init counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: fall back to signal 0
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def _is_our_redis(pid: int, port: int) -> bool:
    """Guard against a recycled pid: the process title must be redis-server on our port."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return _alive(pid)
    return _alive(pid) and "redis" in title and f":{port}" in title


def _stop_redis(name: str, port: int, workdir: Path, log: Log) -> None:
    pidfile = workdir / "redis.pid"
    pid = _read_pid(pidfile)
    if pid is None or not _is_our_redis(pid, port):
        log(f"{name} {_HOST}:{port} not running")
        return
    # SIGTERM is Redis's graceful shutdown: the AOF is flushed and nodes.conf kept.
    os.kill(pid, signal.SIGTERM)
    if not _wait(lambda: not _alive(pid), _REDIS_TIMEOUT_S):
        raise ServiceError(f"{name} {_HOST}:{port} (pid {pid}) ignored SIGTERM")
    pidfile.unlink(missing_ok=True)
    log(f"{name} {_HOST}:{port} stopped")


# --- Redis Cluster -----------------------------------------------------------------------------


def _cluster_ports(settings: Settings) -> list[int]:
    """The masters first, then their replicas: cluster_base_port .. +5."""
    return [settings.cluster_base_port + i for i in range(2 * _CLUSTER_MASTERS)]


def _cluster_dir(settings: Settings, port: int) -> Path:
    return settings.run_path / "cluster" / str(port)


def _info(port: int, *command: str) -> dict[str, str]:
    """A `key:value` per line reply (CLUSTER INFO, INFO replication) as a dict."""
    reply = _redis_call(port, *command) or ""
    pairs = (line.partition(":") for line in reply.splitlines())
    return {key: value.strip() for key, _, value in pairs}


def _cluster_info(port: int) -> dict[str, str]:
    return _info(port, "CLUSTER", "INFO")


def _in_sync(port: int) -> bool:
    """A master with at least one replica attached, or a replica whose link to its master is up
    and not in the middle of a full sync."""
    info = _info(port, "INFO", "replication")
    if info.get("role") == "master":
        return info.get("connected_slaves", "0") != "0"
    return info.get("master_link_status") == "up" and info.get("master_sync_in_progress") == "0"


def _node_ok(port: int, shards: int) -> bool:
    info = _cluster_info(port)
    ok = info.get("cluster_state") == "ok" and info.get("cluster_size") == str(shards)
    return ok and _in_sync(port)


def _cluster_ok(ports: Sequence[int]) -> bool:
    """Every node sees the cluster ok with its 3 shards, and every replica is in sync."""
    return all(_node_ok(port, len(ports) // 2) for port in ports)


def _cluster_blank(port: int) -> bool:
    """A node that knows only itself and owns no slots: it never joined a cluster."""
    info = _cluster_info(port)
    return info.get("cluster_known_nodes") == "1" and info.get("cluster_slots_assigned") == "0"


def _create_cluster(ports: Sequence[int], log: Log) -> None:
    cli = require_binary("redis-cli", "redis-server")
    nodes = [f"{_HOST}:{port}" for port in ports]
    cmd = [cli, "--cluster", "create", *nodes, "--cluster-replicas", "1", "--cluster-yes"]
    done = _run(cmd, timeout=120)
    if done.returncode != 0:
        raise ServiceError(f"redis-cli --cluster create failed:\n{_output(done)}")
    log(f"cluster created on {nodes[0]}..{ports[-1]} ({len(ports) // 2} masters, 1 replica each)")


def _lone_masters(port: int) -> list[str]:
    """Ids of the healthy masters that own slots and have no replica, from CLUSTER NODES."""
    rows = [line.split() for line in (_redis_call(port, "CLUSTER", "NODES") or "").splitlines()]
    masters = [r[0] for r in rows if len(r) > 8 and "master" in r[2] and "fail" not in r[2]]
    followed = {r[3] for r in rows if len(r) > 3 and "slave" in r[2]}
    return [node_id for node_id in masters if node_id not in followed]


def _add_replicas(formed: Sequence[int], blank: Sequence[int], log: Log) -> None:
    """Blank nodes next to a formed cluster (one made by the older 3-master launcher, or a
    replica whose dir was wiped) join it as replicas of the masters that have none."""
    if not _wait(lambda: all(_cluster_info(p).get("cluster_state") == "ok" for p in formed), 30):
        raise ServiceError(f"the formed cluster nodes {list(formed)} are not cluster_state:ok")
    lone = _lone_masters(formed[0])
    if len(lone) < len(blank):
        raise ServiceError(
            f"nodes {list(blank)} are blank but only {len(lone)} masters lack a replica"
        )
    cli = require_binary("redis-cli", "redis-server")
    for port, master_id in zip(blank, lone, strict=False):
        new, known = f"{_HOST}:{port}", f"{_HOST}:{formed[0]}"
        cmd = [cli, "--cluster", "add-node", new, known, "--cluster-slave"]
        done = _run([*cmd, "--cluster-master-id", master_id], timeout=60)
        if done.returncode != 0:
            raise ServiceError(f"redis-cli --cluster add-node {new} failed:\n{_output(done)}")
        log(f"cluster node {new} added as a replica of {master_id[:8]}")


def _up_cluster(settings: Settings, log: Log) -> None:
    ports = _cluster_ports(settings)
    for port in ports:
        _start_redis("cluster node", port, _cluster_dir(settings, port), _CLUSTER_ARGS, log)
    # Nodes restarted with their nodes.conf rejoin by themselves (a killed master comes back as
    # its successor's replica); only blank nodes need `create`, or `add-node` next to the rest.
    blank = [port for port in ports if _cluster_blank(port)]
    if len(blank) == len(ports):
        _create_cluster(ports, log)
    elif blank:
        _add_replicas([p for p in ports if p not in blank], blank, log)
    if not _wait(lambda: _cluster_ok(ports), _CLUSTER_TIMEOUT_S, interval=0.25):
        logs = "\n".join(_tail(_cluster_dir(settings, p) / "redis.log", 5) for p in ports)
        raise ServiceError(
            f"cluster on ports {ports} not cluster_state:ok with every replica in sync within "
            f"{_CLUSTER_TIMEOUT_S:.0f}s (if some node dirs were wiped, run `down` and delete "
            f"{settings.run_path}/cluster):\n{logs}"
        )


def _down_cluster(settings: Settings, log: Log) -> None:
    for port in _cluster_ports(settings):
        _stop_redis("cluster node", port, _cluster_dir(settings, port), log)
