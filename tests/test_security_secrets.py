"""Hostile tests of the secrets: outside dev mode the processes refuse to start without sound
ones, and the credentials the parties want travel in headers, never in URLs, next to ids the
parties gave us that could otherwise steer a request elsewhere."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import httpx
import pytest

from flashsale.loadtests.gateway_process import free_port
from flashsale.reconciler.adapters import HttpPaymentProvider, PartyUnavailable

GOOD = {
    "FLASHSALE_ENV": "production",
    "FLASHSALE_ADMIN_KEY": "a" * 40,
    "FLASHSALE_TOKEN_SECRET": "t" * 40,
    "FLASHSALE_WEBHOOK_SECRET": "w" * 40,
    "FLASHSALE_CUSTOMER_SECRET": "c" * 40,
}
BAD = {
    "admin key missing": ({"FLASHSALE_ADMIN_KEY": ""}, "FLASHSALE_ADMIN_KEY is not set"),
    "admin key a default": ({"FLASHSALE_ADMIN_KEY": "dev-admin-key"}, "known default"),
    "token secret short": ({"FLASHSALE_TOKEN_SECRET": "short"}, "FLASHSALE_TOKEN_SECRET has"),
    "token secret default": ({"FLASHSALE_TOKEN_SECRET": "dev-token-secret"}, "known default"),
    "webhook secret missing": ({"FLASHSALE_WEBHOOK_SECRET": ""}, "FLASHSALE_WEBHOOK_SECRET"),
    "customer keys missing": (
        {"FLASHSALE_CUSTOMER_SECRET": ""},
        "neither FLASHSALE_CUSTOMER_SECRET nor FLASHSALE_CUSTOMER_JWKS",
    ),
    "a customer key short": (
        {"FLASHSALE_CUSTOMER_SECRET": f"k1:{'c' * 40},k0:short"},
        "FLASHSALE_CUSTOMER_SECRET has a secret shorter than 32 bytes",
    ),
    "a previous token secret short": (
        {"FLASHSALE_TOKEN_PREVIOUS_SECRETS": "k0=tiny"},
        "FLASHSALE_TOKEN_PREVIOUS_SECRETS",
    ),
}


def _run(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # Without the test suite's FLASHSALE_ENV=dev: what an operator's shell would have.
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLASHSALE_")}
    args = ["--port", str(free_port())] if command == "serve" else ["--once"]
    return subprocess.run(
        [sys.executable, "-m", "flashsale.cli", command, *args],
        env={**base, **GOOD, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", ["serve", "reconcile"])
@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_processes_refuse_to_start_on_unfit_secrets(command: str, case: str) -> None:
    """Before: the gateway started with dev-admin-key and dev-token-secret when they were
    unset, and anyone could mint admission tokens with the well-known secret."""
    env, named = BAD[case]
    done = _run(command, env)
    assert done.returncode == 2, done
    assert named in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_unset_env_means_production_and_no_secret_means_no_start() -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLASHSALE_")}
    done = subprocess.run(
        [sys.executable, "-m", "flashsale.cli", "serve", "--port", str(free_port())],
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "FLASHSALE_ADMIN_KEY is not set" in done.stderr, done


@pytest.fixture(scope="module")
def payments() -> Iterator[str]:
    """A real simulated payment provider that wants `Authorization: Bearer s3cret...`."""
    port = free_port()
    env = {**os.environ, "SIM_AUTH": "Bearer s3cret-of-the-payment-provider"}
    cmd = [sys.executable, "-m", "flashsale.loadtests.simulators", "payment", "--port", str(port)]
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url + "/_sim/health", timeout=1):
                break
        except OSError:
            assert time.monotonic() < deadline, "the payment simulator did not start"
            time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(10)


async def test_party_credentials_go_in_a_header_and_ids_stay_one_path_segment(
    payments: str,
) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        without = HttpPaymentProvider(http, payments)
        with pytest.raises(PartyUnavailable, match="401"):
            await without.authorize("k0", "o1", "c1", 500, "card:t")
        provider = HttpPaymentProvider(http, payments, "Bearer s3cret-of-the-payment-provider")
        authorized = await provider.authorize("k1", "o1", "c1", 500, "card:t")
        assert authorized.ok
        # An id a party hands back is data: '../' and '?' in it must not reach another route
        # (here the simulator's /_sim/reset, which would wipe its records).
        hostile = "../../_sim/reset?x=1"
        segment = re.escape("..%2F..%2F_sim%2Freset%3Fx%3D1/void: HTTP 404")
        with pytest.raises(PartyUnavailable, match=segment):
            await provider.void("k2", hostile)  # one odd segment: no route of the party
        for climbing in ("..", ".", ""):
            with pytest.raises(PartyUnavailable, match="not a usable id"):
                await provider.capture("k3", climbing, 500)
        records = (await http.get(payments + "/_sim/records")).json()["authorizations"]
        assert [a["id"] for a in records] == [authorized.ref]
