"""Runs a real `flashsale serve` process on a free loopback port, for tests, benches, the demo."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
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
    (uvicorn's graceful shutdown) on exit."""
    port = free_port()
    log_path = log_path or Path(os.environ.get("TMPDIR", "/tmp")) / f"flashsale-gateway-{port}.log"
    cmd = [
        sys.executable,
        "-m",
        "engine.cli",
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
            raise RuntimeError(f"gateway did not become ready:\n{gw.log_tail()}")
        yield gw
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
