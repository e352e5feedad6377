"""Start, stop and probe private Redis, Redis Cluster and PostgreSQL instances under the run dir."""

from __future__ import annotations

import functools
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from engine.errors import FlashsaleError
from engine.settings import Settings, load_settings

Log = Callable[[str], None]

_HOST = "127.0.0.1"
_PG_USER = "postgres"
_DATABASES = ("flashsale", "flashsale_test")
_PG_TOOLS = ("initdb", "pg_ctl", "postgres", "psql", "createdb", "pg_isready")
_REDIS_TIMEOUT_S = 10.0
_CLUSTER_TIMEOUT_S = 30.0
_PG_TIMEOUT_S = 30
# AOF is the only persistence; `--save ''` turns RDB snapshots off.
_STANDALONE_ARGS = ("--appendonly", "yes", "--appendfsync", "always", "--save", "")
_CLUSTER_ARGS = (
    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
    "--appendonly", "yes", "--save", "",
)  # fmt: skip


class ServiceError(FlashsaleError):
    """A local service could not be installed, started, reached or stopped."""


# --- small utilities -------------------------------------------------------------------------


def _is_root() -> bool:
    return os.geteuid() == 0


def _wait(check: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll `check` until it is true or `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:]) or f"(empty log {path})"


def _run(
    cmd: Sequence[str], *, as_postgres: bool = False, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run to completion with captured output; PostgreSQL refuses root, so drop to postgres."""
    argv = list(cmd)
    if as_postgres and _is_root():
        if shutil.which("runuser"):
            argv = ["runuser", "-u", _PG_USER, "--", *argv]
        else:
            argv = ["su", "-s", "/bin/sh", _PG_USER, "-c", shlex.join(argv)]
    try:
        return subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(f"{shlex.join(argv)} failed: {exc}") from exc


def _output(done: subprocess.CompletedProcess[str]) -> str:
    return "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])


def _tcp_open(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or _HOST, parts.port or default_port), 2):
            return True
    except OSError:
        return False


# --- binaries ----------------------------------------------------------------------------------


@functools.cache
def _apt_update() -> None:
    # Once per process: the package lists are the slow part of an install.
    _run(["apt-get", "update"], timeout=600)


def _install(package: str) -> bool:
    """Install a Debian package when we are root and have apt; False when we cannot."""
    if not _is_root() or shutil.which("apt-get") is None:
        return False
    _apt_update()
    cmd = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", package]
    return _run(cmd, timeout=900).returncode == 0


def _missing(what: str, package: str) -> ServiceError:
    return ServiceError(
        f"{what} not found; install the Debian package {package!r} (apt-get install -y {package})"
    )


def require_binary(name: str, package: str) -> str:
    """The path of a tool, installed from Debian's packages when missing and we are root."""
    found = shutil.which(name)
    if found is None and _install(package):
        found = shutil.which(name)
    if found is None:
        raise _missing(name, package)
    return found


def _pg_candidates() -> list[Path]:
    """Directories that may hold the PostgreSQL server tools, most trusted first."""
    dirs: list[Path] = []
    ctl = shutil.which("pg_ctl")
    if ctl:  # /usr/local/bin/pg_ctl may be a symlink into the real bindir
        dirs.append(Path(ctl).resolve().parent)
    config = shutil.which("pg_config")
    if config:
        bindir = _run([config, "--bindir"]).stdout.strip()
        if bindir:
            dirs.append(Path(bindir))
    versioned = Path("/usr/lib/postgresql").glob("*/bin")
    dirs += sorted(versioned, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)[
        ::-1
    ]
    return dirs


def _pg_bindir() -> Path | None:
    for candidate in _pg_candidates():
        if all((candidate / tool).is_file() for tool in _PG_TOOLS):
            return candidate
    return None


def _pg_bindir_or_install() -> Path:
    bindir = _pg_bindir()
    if bindir is None and _install("postgresql"):
        bindir = _pg_bindir()
    if bindir is None:
        raise _missing("PostgreSQL server tools (initdb, pg_ctl)", "postgresql")
    return bindir


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
    return [settings.cluster_base_port + i for i in range(3)]


def _cluster_dir(settings: Settings, port: int) -> Path:
    return settings.run_path / "cluster" / str(port)


def _cluster_info(port: int) -> dict[str, str]:
    reply = _redis_call(port, "CLUSTER", "INFO") or ""
    pairs = (line.partition(":") for line in reply.splitlines())
    return {key: value.strip() for key, _, value in pairs}


def _cluster_ok(ports: Sequence[int]) -> bool:
    infos = [_cluster_info(port) for port in ports]
    return all(
        info.get("cluster_state") == "ok" and info.get("cluster_size") == str(len(ports))
        for info in infos
    )


def _cluster_blank(port: int) -> bool:
    """A node that knows only itself and owns no slots: the cluster was never formed."""
    info = _cluster_info(port)
    return info.get("cluster_known_nodes") == "1" and info.get("cluster_slots_assigned") == "0"


def _create_cluster(ports: Sequence[int], log: Log) -> None:
    cli = require_binary("redis-cli", "redis-server")
    nodes = [f"{_HOST}:{port}" for port in ports]
    cmd = [cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"]
    done = _run(cmd, timeout=120)
    if done.returncode != 0:
        raise ServiceError(f"redis-cli --cluster create failed:\n{_output(done)}")
    log(f"cluster created on {nodes[0]}..{ports[-1]}")


def _up_cluster(settings: Settings, log: Log) -> None:
    ports = _cluster_ports(settings)
    for port in ports:
        _start_redis("cluster node", port, _cluster_dir(settings, port), _CLUSTER_ARGS, log)
    # Nodes restarted with their nodes.conf rejoin by themselves; only blank nodes need create.
    if all(_cluster_blank(port) for port in ports):
        _create_cluster(ports, log)
    if not _wait(lambda: _cluster_ok(ports), _CLUSTER_TIMEOUT_S, interval=0.25):
        logs = "\n".join(_tail(_cluster_dir(settings, p) / "redis.log", 5) for p in ports)
        raise ServiceError(
            f"cluster on ports {ports} not cluster_state:ok within {_CLUSTER_TIMEOUT_S:.0f}s "
            f"(if some node dirs were wiped, run `down` and delete {settings.run_path}/cluster):"
            f"\n{logs}"
        )


# --- PostgreSQL --------------------------------------------------------------------------------


def _pg_ready(bindir: Path, port: int) -> bool:
    cmd = [str(bindir / "pg_isready"), "-h", _HOST, "-p", str(port), "-t", "3"]
    return _run(cmd, timeout=10).returncode == 0


def _prepare_pg_dir(pg_dir: Path) -> None:
    """Root cannot run PostgreSQL, so the postgres user must own (and reach) the pg dir."""
    pg_dir.mkdir(parents=True, exist_ok=True)
    if not _is_root():
        return
    try:
        owner = pwd.getpwnam(_PG_USER)
    except KeyError:
        raise _missing(f"system user {_PG_USER!r}", "postgresql") from None
    for path in (pg_dir, pg_dir / "log"):
        if path.exists():
            os.chown(path, owner.pw_uid, owner.pw_gid)
    if _run(["test", "-w", str(pg_dir)], as_postgres=True).returncode != 0:
        raise ServiceError(
            f"user {_PG_USER!r} cannot write {pg_dir}: make its parent directories "
            "traversable (chmod o+x) or set FLASHSALE_RUN_DIR elsewhere"
        )


def _initdb(bindir: Path, pg_dir: Path, log: Log) -> None:
    data = pg_dir / "data"
    cmd = [str(bindir / "initdb"), "-D", str(data), "-U", _PG_USER, "--auth=trust"]
    # C locale: the machine's LANG may name a locale that is not installed.
    done = _run([*cmd, "-E", "UTF8", "--locale=C"], as_postgres=True, cwd=pg_dir, timeout=120)
    if done.returncode != 0:
        raise ServiceError(f"initdb {data} failed:\n{_output(done)}")
    log(f"postgres cluster initialized in {data}")


def _pg_start(settings: Settings, bindir: Path, log: Log) -> None:
    pg_dir, port = settings.run_path / "pg", settings.postgres_port
    _prepare_pg_dir(pg_dir)
    if not (pg_dir / "data" / "PG_VERSION").exists():
        _initdb(bindir, pg_dir, log)
    # pg_ctl hands -o to a shell, hence the quoting of the socket dir.
    options = f"-c listen_addresses={_HOST} -c port={port} "
    options += f"-c unix_socket_directories={shlex.quote(str(pg_dir))}"
    cmd = [str(bindir / "pg_ctl"), "-D", str(pg_dir / "data"), "-l", str(pg_dir / "log")]
    cmd += ["-w", "-t", str(_PG_TIMEOUT_S), "-o", options, "start"]
    done = _run(cmd, as_postgres=True, cwd=pg_dir, timeout=_PG_TIMEOUT_S + 30)
    if done.returncode != 0 or not _pg_ready(bindir, port):
        raise ServiceError(
            f"postgres {_HOST}:{port} did not come up within {_PG_TIMEOUT_S}s:\n"
            + "\n".join(filter(None, [_output(done), _tail(pg_dir / "log")]))
        )
    log(f"postgres {_HOST}:{port} started")


def _ensure_database(bindir: Path, port: int, name: str, log: Log) -> None:
    where = ["-h", _HOST, "-p", str(port), "-U", _PG_USER]
    query = f"SELECT 1 FROM pg_database WHERE datname='{name}'"
    found = _run([str(bindir / "psql"), *where, "-d", "postgres", "-tAc", query])
    if found.returncode != 0:
        raise ServiceError(f"psql on {_HOST}:{port} failed:\n{_output(found)}")
    if found.stdout.strip() == "1":
        return
    created = _run([str(bindir / "createdb"), *where, name])
    if created.returncode != 0:
        raise ServiceError(f"createdb {name} failed:\n{_output(created)}")
    log(f"database {name} created")


def _up_postgres(settings: Settings, log: Log) -> None:
    bindir, port = _pg_bindir_or_install(), settings.postgres_port
    if _pg_ready(bindir, port):
        log(f"postgres {_HOST}:{port} already running")
    else:
        _pg_start(settings, bindir, log)
    for name in _DATABASES:
        _ensure_database(bindir, port, name, log)


def _down_postgres(settings: Settings, log: Log) -> None:
    pg_dir, port = settings.run_path / "pg", settings.postgres_port
    data, bindir = pg_dir / "data", _pg_bindir()
    # Only a data dir of ours with a live postmaster.pid is ours to stop.
    running = (data / "postmaster.pid").exists() and bindir is not None
    ctl = str(bindir / "pg_ctl") if bindir else "pg_ctl"
    if not running or _run([ctl, "-D", str(data), "status"], as_postgres=True).returncode != 0:
        log(f"postgres {_HOST}:{port} not running")
        return
    cmd = [ctl, "-D", str(data), "-m", "fast", "-w", "-t", str(_PG_TIMEOUT_S), "stop"]
    done = _run(cmd, as_postgres=True, cwd=pg_dir, timeout=_PG_TIMEOUT_S + 30)
    if done.returncode != 0:
        raise ServiceError(f"pg_ctl stop failed:\n{_output(done)}\n{_tail(pg_dir / 'log')}")
    log(f"postgres {_HOST}:{port} stopped")


# --- public API --------------------------------------------------------------------------------


def urls(settings: Settings) -> dict[str, str]:
    """The three connection URLs, given ones winning over the launcher's own."""
    return {
        "FLASHSALE_REDIS_URL": settings.local_redis_url,
        "FLASHSALE_REDIS_CLUSTER_URL": settings.local_cluster_url,
        "FLASHSALE_DATABASE_URL": settings.local_database_url,
    }


def up(settings: Settings, *, log: Log = print) -> dict[str, str]:
    """Start whatever is not already answering, wait until all answer, return the URLs."""
    if settings.redis_url:
        log("redis: using FLASHSALE_REDIS_URL")
    else:
        port = settings.redis_port
        _start_redis("redis", port, settings.run_path / "redis", _STANDALONE_ARGS, log)
    if settings.redis_cluster_url:
        log("cluster: using FLASHSALE_REDIS_CLUSTER_URL")
    else:
        _up_cluster(settings, log)
    if settings.database_url:
        log("postgres: using FLASHSALE_DATABASE_URL")
    else:
        _up_postgres(settings, log)
    return urls(settings)


def down(settings: Settings, *, log: Log = print) -> None:
    """Stop only the processes this launcher started, found through the run dir."""
    _down_postgres(settings, log)
    for port in _cluster_ports(settings):
        _stop_redis("cluster node", port, _cluster_dir(settings, port), log)
    _stop_redis("redis", settings.redis_port, settings.run_path / "redis", log)


def _postgres_answers(settings: Settings) -> bool:
    if settings.database_url:
        return _tcp_open(settings.database_url, 5432)
    bindir = _pg_bindir()
    return bindir is not None and _pg_ready(bindir, settings.postgres_port)


def status(settings: Settings) -> dict[str, bool]:
    """Which services answer right now (given URLs are only checked for an open port)."""
    redis, cluster = settings.redis_url, settings.redis_cluster_url
    return {
        "redis": _tcp_open(redis, 6379) if redis else _ping(settings.redis_port),
        "cluster": _tcp_open(cluster, 6379) if cluster else _cluster_ok(_cluster_ports(settings)),
        "postgres": _postgres_answers(settings),
    }


def env_lines(settings: Settings) -> list[str]:
    """Shell `export` lines for the three URLs, ready for `eval`."""
    return [f"export {name}={shlex.quote(url)}" for name, url in urls(settings).items()]


def _print_err(line: str) -> None:
    print(line, file=sys.stderr)


def _command(action: str, settings: Settings) -> int:
    if action == "up":
        # Progress to stderr, exports to stdout: `eval "$(flashsale services up)"` works.
        up(settings, log=_print_err)
        print("\n".join(env_lines(settings)))
    elif action == "down":
        down(settings)
    elif action == "env":
        print("\n".join(env_lines(settings)))
    else:
        states = status(settings)
        for name, answering in states.items():
            print(f"{name:<8} {'up' if answering else 'down'}")
        return 0 if all(states.values()) else 1
    return 0


def main(argv: list[str]) -> int:
    """`up|down|status|env`; 0 on success, 1 on error or when `status` finds a service down."""
    if len(argv) != 1 or argv[0] not in {"up", "down", "status", "env"}:
        _print_err("usage: services up|down|status|env")
        return 1
    try:
        return _command(argv[0], load_settings())
    except (FlashsaleError, ValueError) as exc:
        _print_err(f"services {argv[0]}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
