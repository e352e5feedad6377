"""Private PostgreSQL: find or install the server tools, initdb, start, stop, create databases."""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
from pathlib import Path

from flashsale.engine.settings import Settings
from flashsale.services.common import (
    _HOST,
    _PG_USER,
    Log,
    ServiceError,
    _install,
    _is_root,
    _missing,
    _output,
    _run,
    _tail,
    _tcp_open,
)

_DATABASES = ("flashsale", "flashsale_test")
_PG_TOOLS = ("initdb", "pg_ctl", "postgres", "psql", "createdb", "pg_isready")
_PG_TIMEOUT_S = 30


# --- binaries ----------------------------------------------------------------------------------


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


def _postgres_answers(settings: Settings) -> bool:
    if settings.database_url:
        return _tcp_open(settings.database_url, 5432)
    bindir = _pg_bindir()
    return bindir is not None and _pg_ready(bindir, settings.postgres_port)
