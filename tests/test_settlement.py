"""The settlement of a small sale, figured by hand: orders, captures, a declined payment, a
reroute's credit and a return's refund, from the admin route and from `flashsale settlement`,
through a real gateway, the simulators, the saga, Redis and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx

from flashsale.engine import Engine, Settings
from flashsale.loadtests.gateway_process import Gateway
from tests.after_sale_support import (
    audit_ok,
    confirm,
    open_sale,
    sale_body,
    until_changes_done,
    until_status,
)
from tests.saga_support import Sims, reconciler

pytest_plugins = ("tests.order_change_fixtures",)  # the simulators, a gateway, their database


def cli(
    service_urls: dict[str, str], saga_url: str, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **service_urls, "FLASHSALE_DATABASE_URL": saga_url}
    return subprocess.run(
        [sys.executable, "-m", "flashsale.cli", "settlement", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_settlement_matches_the_figures_by_hand(
    sims: Sims,
    sengine: Engine,
    pgc: asyncpg.Connection,
    ssettings: Settings,
    admin_api: httpx.AsyncClient,
    saga_gw: Gateway,
    service_urls: dict[str, str],
    saga_url: str,
    sale_id: str,
) -> None:
    sims.reset()
    sims.supplier("P1", stock={"X": 100, "Y": 0})  # Y goes to P2, 50 dearer a unit
    sims.supplier("P2", stock={"Y": 100})
    items = {"X": (1000, [("P1", 20, 400)]), "Y": (1100, [("P1", 20, 400), ("P2", 20, 450)])}
    await open_sale(admin_api, sale_id, sale_body(items, "full"))
    o1 = await confirm(sengine, sale_id, "c1", [("X", 2)])
    o2 = await confirm(sengine, sale_id, "c2", [("X", 1), ("Y", 1)])
    o3 = await confirm(sengine, sale_id, "c3", [("X", 1)], token="decline")
    async with reconciler(ssettings, sengine):
        await until_status(pgc, [o1, o2], {"FULFILLED"})
        await until_status(pgc, [o3], {"PAYMENT_FAILED"})
        back = await admin_api.post(
            f"/v1/admin/orders/{o1}/returns",
            json={"lines": [{"sku": "X", "qty": 1, "condition": "restockable"}], "reason": "x"},
            headers={"Idempotency-Key": "ret-1"},
        )
        assert back.status_code == 201, back.text
        await until_changes_done(pgc, [o1, o2, o3], 1)
        await until_status(pgc, [o1], {"FULFILLED"})
        await audit_ok(sengine, pgc, sale_id)

    auths = sims.authorizations()
    assert (auths[o1]["captured_minor"], auths[o1]["refunded_minor"]) == (2000, 1000)
    assert [r["amount_minor"] for r in auths[o1]["refunds"]] == [1000]
    assert (auths[o2]["captured_minor"], auths[o2]["refunded_minor"]) == (2100, 0)
    assert (auths[o3]["status"], auths[o3]["captured_minor"]) == ("declined", 0)

    reply = await admin_api.get(f"/v1/admin/sales/{sale_id}/settlement")
    assert reply.status_code == 200, reply.text
    doc = reply.json()
    # The credit's time as PostgreSQL recorded it, in the document's form (UTC, milliseconds).
    credit_at = await pgc.fetchval(
        "SELECT at FROM retailer_ledger WHERE order_id = $1 AND kind = 'credit'", o2
    )
    credit_at = credit_at.astimezone(dt.UTC).isoformat(timespec="milliseconds")
    credit_at = credit_at.replace("+00:00", "Z")
    captured = 2000 + 2100
    refunded = 1000
    cost = 2 * 400 + 400 + 450  # o1's two X and o2's X at P1, o2's Y at P2
    credits = (1100 - 400) - (1100 - 450)  # the full policy: all of Y's lost margin
    assert doc == {
        "sale_id": sale_id,
        "orders": {"total": 3, "by_status": {"FULFILLED": 2, "PAYMENT_FAILED": 1}},
        "units": {"sold": 4, "cancelled": 1, "returned": 1, "restocked": 1},
        "captured_minor": captured,
        "refunded_minor": refunded,
        "supplier_cost_minor": cost,
        "planned_margin_minor": 2 * 600 + 600 + 700,
        "margin_minor": 2 * 600 + 600 + 650,
        "credits_minor": credits,
        "net_minor": captured - refunded - cost - credits,
        "by_supplier": [
            {"supplier_id": "P1", "lines": 2, "units": 3, "cost_minor": 1200},
            {"supplier_id": "P2", "lines": 1, "units": 1, "cost_minor": 450},
        ],
        "credits": [
            {
                "order_id": o2,
                "sku": "Y",
                "supplier_id": "P2",
                "kind": "credit",
                "amount_minor": 50,
                "margin_drop_minor": 50,
                "cause": "reroute",
                "at": credit_at,
            }
        ],
    }
    assert doc["net_minor"] == 1400

    # The command line: the same document, and the table.
    as_json = cli(service_urls, saga_url, "--sale", sale_id, "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == doc
    table = cli(service_urls, saga_url, "--sale", sale_id)
    assert table.returncode == 0, table.stderr
    rows = {line[:16].strip(): line[16:].split() for line in table.stdout.splitlines()}
    assert rows["net"] == ["1400"] and rows["credits"] == ["50"] and rows["captured"] == ["4100"]
    assert rows["P2"] == ["1", "1", "450"]
    assert cli(service_urls, saga_url, "--sale", "no-such-sale").returncode == 1

    # Unknown sale, bad id, no admin key: clear problems.
    missing = await admin_api.get("/v1/admin/sales/no-such-sale/settlement")
    assert (missing.status_code, missing.json()["code"]) == (404, "NOT_FOUND")
    bad = await admin_api.get("/v1/admin/sales/bad%20id/settlement")
    assert (bad.status_code, bad.json()["code"]) == (422, "INVALID_REQUEST")
    async with httpx.AsyncClient(base_url=saga_gw.url) as anonymous:
        denied = await anonymous.get(f"/v1/admin/sales/{sale_id}/settlement")
        assert (denied.status_code, denied.json()["code"]) == (401, "UNAUTHORIZED")
