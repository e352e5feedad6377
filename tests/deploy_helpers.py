"""Helpers of the deploy tests: the files under deploy/, the metric names their queries use, and
the names a scrape exports."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "flashsale.json"
OPERATIONS = ROOT / "docs" / "operations.md"
METRIC = re.compile(r"\bflashsale_[a-z0-9_]+")
# Grafana's variables, as a query for Prometheus' own API.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "1m", "$sale": ".*"}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    groups = load_yaml(PROMETHEUS_DIR / "alerts.yml")["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def panels() -> list[dict[str, Any]]:
    """The dashboard's panels but its rows."""
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def dashboard_queries() -> dict[str, str]:
    """`panel title (refId)` -> expression, and the template variables' queries."""
    out = {f"{p['title']} ({t['refId']})": t["expr"] for p in panels() for t in p["targets"]}
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            out[f"variable ${var['name']}"] = var["definition"]
    return out


def used_names() -> dict[str, set[str]]:
    """Every flashsale_* name in the alert rules and the dashboard -> where it is used."""
    queries = {f"alert {r['alert']}": r["expr"] for r in alert_rules()}
    queries.update({f"dashboard {k}": v for k, v in dashboard_queries().items()})
    used: dict[str, set[str]] = defaultdict(set)
    for where, expr in queries.items():
        for name in METRIC.findall(expr):
            used[name].add(where)
    return dict(used)


def exported_names(page: str) -> set[str]:
    """The series names a scrape of `page` gives Prometheus, from its samples only: a family
    declared with none yet (a labelled counter no one incremented) does not count."""
    families = text_string_to_metric_families(page)
    return {sample.name for family in families for sample in family.samples}


def as_prometheus_query(expr: str) -> str:
    for variable, value in GRAFANA_VARS.items():
        expr = expr.replace(variable, value)
    return expr


def get(url: str, headers: dict[str, str] | None = None, timeout_s: float = 5) -> str:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout_s) as reply:
        return str(reply.read().decode())


def query(prometheus_url: str, expr: str) -> dict[str, Any]:
    """Prometheus' instant query API; its `data`, or an AssertionError naming the error."""
    url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        doc: dict[str, Any] = json.loads(get(url))
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{expr!r}: {exc.read().decode(errors='replace')}") from None
    assert doc["status"] == "success", (expr, doc)
    data: dict[str, Any] = doc["data"]
    return data


def wait_until_value(prometheus_url: str, expr: str, want: float, timeout_s: float) -> float | None:
    """Polls `expr` (one series) until it equals `want`; the last value seen (None: no series)."""
    deadline, seen = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        result = query(prometheus_url, expr)["result"]
        seen = float(result[0]["value"][1]) if result else None
        if seen == want:
            break
        time.sleep(0.25)
    return seen
