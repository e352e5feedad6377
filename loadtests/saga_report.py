"""The order saga's part of the demo: the simulated parties' scenario, and what became of the
sale's orders once the saga settled (statuses, reroutes, backorders, notifications)."""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx

from flashsale.engine import Settings
from flashsale.loadtests.simulators import processes as sim

SAGA_ENV = {"FLASHSALE_SAGA": "1", "FLASHSALE_SECONDARY_SUPPLIERS": "initech"}


def set_scenario(settings: Settings, decline_share: float) -> None:
    """acme (every sku's primary) really has 100 of the 150 sneaker-red it promised the sale: at
    its first refusal the saga takes the rest off the sale, and what was sold from it before
    reroutes to globex (the alternate, slow), which has only the 100 it promised itself; so the
    last orders end as backorders, with initech (no supplier of the sale, dearer) among the
    retailer's options."""
    ports = sim.ports(settings)
    suppliers = f"http://127.0.0.1:{ports['suppliers']}/_sim/suppliers"
    payment = f"http://127.0.0.1:{ports['payment']}/_sim/config"
    with httpx.Client(timeout=10) as http:
        http.post(payment, json={"decline_share": decline_share}).raise_for_status()
        for supplier, doc in {
            "acme": {"stock": {"sneaker-red": 100, "sneaker-blue": 500}},
            "globex": {"stock": {"sneaker-red": 100, "sneaker-blue": 500}, "delay_ms": 150},
            "initech": {"stock": {"sneaker-red": 500}, "cost_minor": {"sneaker-red": 8_900}},
        }.items():
            http.put(f"{suppliers}/{supplier}", json=doc).raise_for_status()


async def settle(settings: Settings, sale: str, timeout_s: float = 60) -> None:
    """Until no order of the sale has a step due and every notification is out."""
    conn = await asyncpg.connect(settings.local_database_url, timeout=10)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            busy = await conn.fetchval(
                "SELECT count(*) FROM orders WHERE sale_id = $1 AND next_step IS NOT NULL "
                "AND step_due_at < now() + interval '1 hour'",
                sale,
            )
            unsent = await conn.fetchval("SELECT count(*) FROM outbox WHERE delivered_at IS NULL")
            if busy == 0 and unsent == 0:
                return
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


async def summary(settings: Settings, sale: str) -> str:
    conn = await asyncpg.connect(settings.local_database_url, timeout=10)
    try:
        statuses = await conn.fetch(
            "SELECT status, count(*) AS n, sum(captured_minor - refunded_minor)::bigint AS kept "
            "FROM orders WHERE sale_id = $1 GROUP BY status ORDER BY status",
            sale,
        )
        reroutes = await conn.fetch(
            "SELECT a.hold_supplier, a.supplier_id, count(*) AS n, "
            "sum(a.margin_minor - a.planned_margin_minor)::bigint AS margin "
            "FROM order_allocations a JOIN orders o USING (order_id) WHERE o.sale_id = $1 "
            "AND a.supplier_id IS NOT NULL AND a.supplier_id <> a.hold_supplier "
            "GROUP BY 1, 2 ORDER BY 1, 2",
            sale,
        )
        backorder = await conn.fetchrow(
            "SELECT b.id, b.sku, b.qty, b.options FROM backorders b JOIN orders o "
            "USING (order_id) WHERE o.sale_id = $1 AND b.status = 'open' ORDER BY b.id LIMIT 1",
            sale,
        )
        open_backorders = await conn.fetchval(
            "SELECT count(*) FROM backorders b JOIN orders o USING (order_id) "
            "WHERE o.sale_id = $1 AND b.status = 'open'",
            sale,
        )
        dead = await conn.fetchval(
            "SELECT count(*) FROM orders WHERE sale_id = $1 AND dead_step IS NOT NULL", sale
        )
        sent = await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE delivered_at IS NOT NULL "
            "AND payload->>'sale_id' = $1",
            sale,
        )
    finally:
        await conn.close()
    lines = ["order saga (payment -> supplier allocation -> capture -> notify):"]
    lines += [
        f"  {r['status']:<20} {r['n']:>5} orders, {r['kept'] or 0:>10} minor units captured"
        for r in statuses
    ]
    lines += [
        f"  rerouted {r['n']} lines {r['hold_supplier']} -> {r['supplier_id']} "
        f"(margin {int(r['margin']):+d} minor units)"
        for r in reroutes
    ]
    lines.append(
        f"  {open_backorders} backorders wait for the retailer; {dead} steps dead-lettered"
    )
    if backorder is not None:
        options = ", ".join(
            o["decision"]
            + (
                f" ({o.get('supplier_id')}, margin {o['margin_change_minor']:+d})"
                if o["decision"] == "secondary"
                else ""
            )
            for o in json.loads(backorder["options"])
        )
        lines.append(
            f"  e.g. backorder {backorder['id']} ({backorder['qty']} x {backorder['sku']}): "
            f"{options} -> POST /v1/admin/backorders/{backorder['id']}/decision"
        )
    lines.append(f"  {sent} notifications delivered, signed, to the webhook receiver")
    return "\n".join(lines)
