"""Shared plumbing for the service launcher: subprocesses, polling, log tails, Debian binaries."""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from flashsale.engine.errors import FlashsaleError

Log = Callable[[str], None]

_HOST = "127.0.0.1"
_PG_USER = "postgres"


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
