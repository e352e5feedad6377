"""`flashsale sim up|down|status|env`: the saga's simulated outside parties as local processes.

Ports sim_base_port (payment), +1 (suppliers), +2 (webhook receiver), +3 (suppliers' stock
feeds: loadtests/simulators/feeds.py); pid files, logs and the
receiver's records under <run_dir>/sim/. `up` is idempotent; `down` stops what `up` started.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from flashsale.engine.settings import Settings
from flashsale.loadtests.simulators.common import AUTH_ENV, SECRET_ENV

PARTIES = ("payment", "suppliers", "webhooks", "feeds")


def ports(settings: Settings) -> dict[str, int]:
    return {name: settings.sim_base_port + i for i, name in enumerate(PARTIES)}


def sim_dir(settings: Settings) -> Path:
    return settings.run_path / "sim"


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sim/health", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def start(
    settings: Settings, party: str, *, extra: tuple[str, ...] = (), log: bool = True
) -> subprocess.Popen[bytes] | None:
    """Starts one simulator unless something already answers on its port; waits until it does."""
    port = ports(settings)[party]
    if answers(port):
        return None
    here = sim_dir(settings)
    here.mkdir(parents=True, exist_ok=True)
    module = "flashsale.loadtests.simulators"  # its __main__ runs one party
    argv = [sys.executable, "-m", module, party, "--port", str(port)]
    if party == "webhooks":
        argv += ["--state", str(here / "webhooks.jsonl")]
    argv += list(extra)
    # The credentials the parties want, as the adapters send them, and the webhook signing key:
    # never on a command line (`ps` shows it; and a generated key may begin with "-", which
    # argparse took for an option, so the demo's receiver once failed to start).
    auth = {"payment": settings.payment_auth, "suppliers": settings.supplier_auth}.get(party, "")
    env = {**os.environ, AUTH_ENV: auth, SECRET_ENV: settings.webhook_secret}
    with open(here / f"{party}.log", "ab") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    (here / f"{party}.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 20
    while not answers(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"sim {party} did not start on port {port}; see {here}/{party}.log")
        time.sleep(0.05)
    if log:
        print(f"sim {party}: up on 127.0.0.1:{port}", file=sys.stderr)
    return proc


def stop(settings: Settings, party: str) -> bool:
    pidfile = sim_dir(settings) / f"{party}.pid"
    if not pidfile.exists():
        return False
    pid = int(pidfile.read_text())
    pidfile.unlink()
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return True


def _gone(pid: int) -> bool:
    """Exited; a child of this process (tests start them so) is reaped, not left a zombie."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    except ChildProcessError:
        pass  # not our child: its parent reaps it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def env_lines(settings: Settings) -> list[str]:
    hooks = settings.local_webhook_urls
    values = {
        "FLASHSALE_SAGA": "1",
        "FLASHSALE_PAYMENT_URL": settings.local_payment_url,
        "FLASHSALE_SUPPLIER_URL": settings.local_supplier_url,
        "FLASHSALE_WEBHOOK_CUSTOMER_URL": hooks["customer"],
        "FLASHSALE_WEBHOOK_RETAILER_URL": hooks["retailer"],
    }
    return [f"export {k}={shlex.quote(v)}" for k, v in values.items()]


def main(action: str, settings: Settings, decline_share: float) -> int:
    if action == "up":
        for party in PARTIES:
            extra = ("--decline-share", str(decline_share)) if party == "payment" else ()
            start(settings, party, extra=extra)
        print("\n".join(env_lines(settings)))
    elif action == "down":
        for party in PARTIES:
            if stop(settings, party):
                print(f"sim {party}: stopped", file=sys.stderr)
    elif action == "env":
        print("\n".join(env_lines(settings)))
    else:
        up = {party: answers(port) for party, port in ports(settings).items()}
        for party, ok in up.items():
            print(f"{party:<9} {'up' if ok else 'down'}")
        return 0 if all(up.values()) else 1
    return 0
