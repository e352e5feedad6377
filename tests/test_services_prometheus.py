"""The launcher's Prometheus (flashsale/services/prometheus.py): `flashsale services up
--monitoring`, pointed at a real gateway and a real reconciler, scrapes both (the gateway's request
counter arrives exact), loads and evaluates every alert rule, answers every dashboard query;
`services down` stops it."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from flashsale.loadtests.gateway_process import Gateway, free_port
from flashsale.services.prometheus import GATEWAY_JOB, RECONCILER_JOB, Targets, config
from tests.deploy_helpers import (
    alert_rules,
    as_prometheus_query,
    dashboard_queries,
    get,
    query,
    wait_until_value,
)
from tests.gateway_helpers import ADMIN, new_sale_id, sale_body
from tests.reconciler_support import Process, cli

HEALTHZ_REQUESTS = 37


@pytest.fixture
def run_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="flashsale-prometheus-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _rules(prometheus_url: str) -> list[dict[str, Any]]:
    doc = json.loads(get(prometheus_url + "/api/v1/rules"))
    return [rule for group in doc["data"]["groups"] for rule in group["rules"]]


def _evaluated_rules(prometheus_url: str, timeout_s: float = 20) -> list[dict[str, Any]]:
    """The loaded rules once each has been evaluated at least once."""
    deadline = time.monotonic() + timeout_s
    while True:
        rules = _rules(prometheus_url)
        if (rules and all(r["health"] != "unknown" for r in rules)) or time.monotonic() > deadline:
            return rules
        time.sleep(0.25)


def _jobs(targets: Targets, key_file: Path | None) -> dict[str, Any]:
    doc = json.loads(json.dumps(config(targets, key_file, None)))  # as Prometheus reads it
    return {job["job_name"]: job for job in doc["scrape_configs"]}


def test_the_config_scrapes_the_gateway_with_the_key_and_the_reconciler(tmp_path: Path) -> None:
    key = tmp_path / "key"
    jobs = _jobs(Targets(8123, 9123, 2), key)
    assert jobs[GATEWAY_JOB]["static_configs"] == [{"targets": ["127.0.0.1:8123"]}]
    assert jobs[GATEWAY_JOB]["authorization"] == {"type": "Bearer", "credentials_file": str(key)}
    assert jobs[RECONCILER_JOB]["static_configs"] == [{"targets": ["127.0.0.1:9123"]}]
    assert "authorization" not in jobs[RECONCILER_JOB]
    alone = _jobs(Targets(8123, 0, 2), None)
    assert list(alone) == [GATEWAY_JOB]
    assert "authorization" not in alone[GATEWAY_JOB]


@pytest.fixture
def sale(gw: Gateway) -> Iterator[str]:
    """An open sale of 7 units, closed afterwards."""
    sale_id = new_sale_id("prometheus")
    with httpx.Client(base_url=gw.url, headers=ADMIN, timeout=10) as http:
        assert http.put(f"/v1/admin/sales/{sale_id}", json=sale_body([("p", 7)])).status_code == 201
        assert http.post(f"/v1/admin/sales/{sale_id}/open").status_code == 200
        yield sale_id
        http.post(f"/v1/admin/sales/{sale_id}/close")


def test_services_up_monitoring_scrapes_the_gateway_and_the_reconciler(
    gw: Gateway, service_urls: dict[str, str], run_dir: Path, sale: str
) -> None:
    for _ in range(HEALTHZ_REQUESTS):
        assert httpx.get(gw.url + "/healthz").status_code == 200
    gateway_port, reconciler_port, port = urlsplit(gw.url).port, free_port(), free_port()
    # Given URLs: `up` starts nothing but Prometheus, `down` stops nothing but it.
    env = {
        **service_urls,
        "FLASHSALE_RUN_DIR": str(run_dir),
        "FLASHSALE_PROMETHEUS_PORT": str(port),
    }
    flags = ["--gateway-port", str(gateway_port), "--reconciler-port", str(reconciler_port)]
    reconciler = Process(env, "reconcile", "--metrics-port", str(reconciler_port), "--sale", "none")
    try:
        up = cli(env, "services", "up", "--monitoring", *flags, "--scrape-s", "1")
        assert up.returncode == 0, up.stderr
        targets = f"gateway 127.0.0.1:{gateway_port}, reconciler 127.0.0.1:{reconciler_port}"
        assert f"prometheus 127.0.0.1:{port} started, scraping {targets}" in up.stderr, up.stderr
        prometheus = f"http://127.0.0.1:{port}"
        healthz = f'sum(flashsale_http_requests_total{{job="{GATEWAY_JOB}",route="/healthz"}})'
        assert wait_until_value(prometheus, healthz, HEALTHZ_REQUESTS, 30) == HEALTHZ_REQUESTS
        assert wait_until_value(prometheus, f'up{{job="{RECONCILER_JOB}"}}', 1, 15) == 1
        # The admin key went along: the unit counts are on the page Prometheus got.
        units = f'sum(flashsale_stock_units{{sale="{sale}",state="available"}})'
        assert wait_until_value(prometheus, units, 7, 10) == 7
        rules = _evaluated_rules(prometheus)
        assert {r["name"] for r in rules} == {r["alert"] for r in alert_rules()}
        assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
        for where, expr in dashboard_queries().items():
            if not where.startswith("variable"):  # label_values() is Grafana's, not PromQL
                query(prometheus, as_prometheus_query(expr))
        again = cli(env, "services", "up", "--monitoring", *flags, "--scrape-s", "1")
        assert f"prometheus 127.0.0.1:{port} already running, reloaded" in again.stderr
        status = cli(env, "services", "status", "--monitoring")
        assert "prometheus up" in " ".join(status.stdout.split()), status.stdout
    finally:
        down = cli(env, "services", "down")
        assert reconciler.stop() == 0, reconciler.log()[-3000:]
    assert down.returncode == 0, down.stderr
    assert f"prometheus 127.0.0.1:{port} stopped" in down.stdout, down.stdout
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/-/ready")
