"""Private Prometheus: a generated config scraping the local gateway and reconciler, under the
run dir (`flashsale services up --monitoring`)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from flashsale.engine.settings import Settings
from flashsale.services.common import _HOST, Log, ServiceError, _tail, _wait, require_binary
from flashsale.services.redis_nodes import _alive, _read_pid

# The job names the alert rules and the dashboard filter on (deploy/prometheus/).
GATEWAY_JOB = "flashsale-gateway"
RECONCILER_JOB = "flashsale-reconciler"
# The rules of the checkout; an installed wheel has no deploy/ folder, and runs without them.
RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
_TIMEOUT_S = 30.0
_RETENTION = "7d"


@dataclass(frozen=True, slots=True)
class Targets:
    """What the launcher's Prometheus scrapes, on 127.0.0.1: `flashsale serve --port` and
    `flashsale reconcile --metrics-port` (0: no reconciler job)."""

    gateway_port: int = 8000
    reconciler_port: int = 0
    scrape_interval_s: int = 5


def workdir(settings: Settings) -> Path:
    return settings.run_path / "prometheus"


def url(settings: Settings) -> str:
    return f"http://{_HOST}:{settings.prometheus_port}"


def _job(name: str, port: int, interval_s: int) -> dict[str, object]:
    return {
        "job_name": name,
        "metrics_path": "/metrics",
        "scrape_interval": f"{interval_s}s",
        "scrape_timeout": f"{interval_s}s",
        "static_configs": [{"targets": [f"{_HOST}:{port}"]}],
    }


def config(targets: Targets, key_file: Path | None, rules: Path | None) -> dict[str, object]:
    """The Prometheus config (JSON is YAML): the gateway with the admin key, for the unit
    counts, when there is one; the reconciler when it has a metrics port; the alert rules."""
    gateway = _job(GATEWAY_JOB, targets.gateway_port, targets.scrape_interval_s)
    if key_file is not None:
        gateway["authorization"] = {"type": "Bearer", "credentials_file": str(key_file)}
    jobs = [gateway]
    if targets.reconciler_port:
        jobs.append(_job(RECONCILER_JOB, targets.reconciler_port, targets.scrape_interval_s))
    interval = f"{targets.scrape_interval_s}s"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(rules)] if rules is not None else [],
        "scrape_configs": jobs,
    }


def _write_config(settings: Settings, targets: Targets) -> Path:
    here = workdir(settings)
    (here / "data").mkdir(parents=True, exist_ok=True)
    key_file = None
    if settings.admin_key:
        # A file, not the command line or the config: other users must not read the key.
        key_file = here / "admin_key"
        key_file.touch(mode=0o600)
        key_file.chmod(0o600)
        key_file.write_text(settings.admin_key)
    rules = RULES if RULES.is_file() else None
    path = here / "prometheus.yml"
    path.write_text(json.dumps(config(targets, key_file, rules), indent=2) + "\n")
    return path


def ready(settings: Settings) -> bool:
    try:
        with urllib.request.urlopen(url(settings) + "/-/ready", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def _is_ours(pid: int, port: int) -> bool:
    """Guard against a recycled pid: the command line must be a prometheus on our port."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return _alive(pid)
    listen = f"--web.listen-address={_HOST}:{port}".encode()
    return _alive(pid) and Path(argv[0].decode()).name == "prometheus" and listen in argv


def _running_pid(settings: Settings) -> int | None:
    pid = _read_pid(workdir(settings) / "prometheus.pid")
    return pid if pid is not None and _is_ours(pid, settings.prometheus_port) else None


def _spawn(argv: list[str], logfile: Path) -> int:
    """Starts `argv` in the background through sh, so that it is not our child (never our
    zombie) and keeps running after this command exits; its own session, like a daemon."""
    script = f"{shlex.join(argv)} >>{shlex.quote(str(logfile))} 2>&1 </dev/null & echo $!"
    try:
        done = subprocess.run(
            ["sh", "-c", script],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
            start_new_session=True,
        )
        return int(done.stdout.strip())
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise ServiceError(f"could not start {argv[0]}: {exc}") from exc


def _start(settings: Settings, config_path: Path) -> int:
    here, port = workdir(settings), settings.prometheus_port
    binary = require_binary("prometheus", "prometheus")
    argv = [
        binary,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={here / 'data'}",
        f"--storage.tsdb.retention.time={_RETENTION}",
        f"--web.listen-address={_HOST}:{port}",
    ]
    pid = _spawn(argv, here / "prometheus.log")
    (here / "prometheus.pid").write_text(f"{pid}\n")
    return pid


def _describe(targets: Targets) -> str:
    parts = [f"gateway {_HOST}:{targets.gateway_port}"]
    if targets.reconciler_port:
        parts.append(f"reconciler {_HOST}:{targets.reconciler_port}")
    return ", ".join(parts)


def up_prometheus(settings: Settings, targets: Targets, log: Log) -> None:
    """Writes the config and starts Prometheus, or has a running one of ours reload it (so `up`
    with other ports re-points it); fails when something else holds the port."""
    port = settings.prometheus_port
    config_path = _write_config(settings, targets)
    pid = _running_pid(settings)
    if pid is not None:
        os.kill(pid, signal.SIGHUP)  # Prometheus re-reads its config file
        log(f"prometheus {_HOST}:{port} already running, reloaded ({_describe(targets)})")
        return
    if ready(settings):
        raise ServiceError(
            f"another Prometheus answers on {_HOST}:{port}; set FLASHSALE_PROMETHEUS_PORT"
        )
    pid = _start(settings, config_path)
    _wait(lambda: ready(settings) or not _alive(pid), _TIMEOUT_S, interval=0.2)
    if not ready(settings):
        log_tail = _tail(workdir(settings) / "prometheus.log")
        raise ServiceError(f"prometheus {_HOST}:{port} did not come up:\n{log_tail}")
    if not RULES.is_file():
        log(f"prometheus: no {RULES.name} next to the code; running without the alert rules")
    log(f"prometheus {_HOST}:{port} started, scraping {_describe(targets)}")


def down_prometheus(settings: Settings, log: Log) -> None:
    port, pid = settings.prometheus_port, _running_pid(settings)
    if pid is None:
        log(f"prometheus {_HOST}:{port} not running")
        return
    os.kill(pid, signal.SIGTERM)  # Prometheus's clean shutdown: the TSDB head is written
    if not _wait(lambda: not _alive(pid), _TIMEOUT_S):
        raise ServiceError(f"prometheus {_HOST}:{port} (pid {pid}) ignored SIGTERM")
    (workdir(settings) / "prometheus.pid").unlink(missing_ok=True)
    log(f"prometheus {_HOST}:{port} stopped")
