"""Runs a real `flashsale serve` process on a free loopback port, for tests, benches, the demo."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Gateway:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as reply:
                if reply.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


@contextmanager
def gateway(
    env: dict[str, str], *, workers: int = 2, log_path: Path | None = None, timeout_s: float = 30
) -> Iterator[Gateway]:
    """Starts the gateway with `env` added to this process's environment, stops it with SIGTERM
    (uvicorn's graceful shutdown) on exit. Its output goes to `log_path`, or to a temporary file
    that is kept only when the gateway failed."""
    port = free_port()
    keep_log = log_path is not None
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix=f"flashsale-gateway-{port}-", suffix=".log")
        os.close(fd)
        log_path = Path(name)
    cmd = [
        sys.executable,
        "-m",
        "flashsale.cli",
        "serve",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=log, stderr=log)
    gw = Gateway(f"http://127.0.0.1:{port}", process, log_path)
    try:
        if not _wait_ready(gw.url, process, timeout_s):
            keep_log = True
            raise RuntimeError(f"gateway did not become ready (log {log_path}):\n{gw.log_tail()}")
        yield gw
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.returncode not in (0, -signal.SIGTERM):
            keep_log = True
        if not keep_log:
            log_path.unlink(missing_ok=True)
