"""The feed simulator's modes against a real gateway and files: signed webhooks pushed as a
supplier would (duplicates, out of order, bad values, spikes, bad and stale signatures), and
stock files written to a drop folder."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path
from typing import Any

import httpx

from flashsale.engine.feeds import FeedRecord
from flashsale.loadtests.gateway_process import Gateway
from flashsale.reconciler.intake.parse import read_records
from flashsale.reconciler.intake.records import Malformed, Parsed
from tests import feed_sim_helpers as sims
from tests.feed_helpers import supplier_id
from tests.feed_sim_helpers import push, sim_feed, sim_records
from tests.gateway_helpers import (
    ADMIN,
    admin_view,
    create_sale,
    new_sale_id,
    sale_body,
    supplier_counts,
)

feed_sim, sim_http = sims.feed_sim, sims.sim_http  # the simulator's fixtures, for this module
SECRET = "sim-feed-secret-0123456789abcdef-0123456789"


def soon(seconds: int) -> str:
    """A time after anything pushed before in the test (pushes without one carry now)."""
    moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
    return moment.isoformat(timespec="seconds")


async def webhook_sale(http: httpx.AsyncClient, gw: Gateway, sim_http: Any) -> tuple[str, str]:
    """A sale of sku A from p (60) then q (40); p's feed is a webhook the simulator pushes."""
    p, q = supplier_id("p"), supplier_id("q")
    sale = new_sale_id("sim")
    await create_sale(http, sale, sale_body([(p, 60), (q, 40)]))
    feed = {
        "kind": "webhook",
        "secret": SECRET,
        "sku_map": [{"supplier_sku": "P-A", "sku": "A"}],
        "thresholds": {"max_spike_pct": 100},
    }
    put = await http.put(
        f"/v1/admin/suppliers/{p}", json={"name": "P", "feed": feed}, headers=ADMIN
    )
    assert put.status_code == 201, put.text
    await sim_feed(sim_http, p, secret=SECRET, target=f"{gw.url}/v1/feeds/{p}", stock={"P-A": 30})
    return sale, p


async def offer(http: httpx.AsyncClient, sale: str, supplier: str) -> int:
    return int(supplier_counts(await admin_view(http, sale))[supplier]["available"])


def answers(sent: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    return [(s["status"], s["body"]) for s in sent]


async def test_pushes_as_a_supplier_would_with_every_fault_on_demand(
    http: httpx.AsyncClient, gw: Gateway, sim_http: Any
) -> None:
    sale, p = await webhook_sale(http, gw, sim_http)
    (first,) = await push(sim_http, p)  # the simulator's stock, signed, now
    assert first["status"] == 202 and first["body"]["applied"] == 1, first
    assert await offer(http, sale, p) == 30

    twice = await push(
        sim_http, p, duplicate=True, deliveries=[{"items": _a(25), "as_of": soon(1)}]
    )
    assert [s["delivery_id"] for s in twice] == [twice[0]["delivery_id"]] * 2
    assert [s["status"] for s in twice] == [202, 200]
    assert twice[1]["body"]["duplicate"] is True
    assert await offer(http, sale, p) == 25

    late = await push(
        sim_http,
        p,
        out_of_order=True,
        deliveries=[{"items": _a(10), "as_of": soon(2)}, {"items": _a(20), "as_of": soon(3)}],
    )
    assert [(s, b["applied"], b["stale"]) for s, b in answers(late)] == [(202, 1, 0), (202, 0, 1)]
    assert await offer(http, sale, p) == 20  # the newer level stands

    bad = await push(sim_http, p, malformed=3, deliveries=[{"items": _a(15), "as_of": soon(4)}])
    assert (bad[0]["status"], bad[0]["body"]["applied"], bad[0]["body"]["quarantined"]) == (
        202,
        1,
        3,
    )
    spiked = await push(
        sim_http, p, spike={"P-A": 10}, deliveries=[{"items": _a(15), "as_of": soon(5)}]
    )
    assert spiked[0]["body"]["quarantined"] == 1  # 150 after 15: a spike held for review
    assert await offer(http, sale, p) == 15

    for signature in ("bad", "stale"):
        (refused,) = await push(sim_http, p, signature=signature)
        assert refused["status"] == 401, refused
    assert await offer(http, sale, p) == 15
    pushes = (await sim_records(sim_http, p))["pushes"]
    assert len(pushes) == 9  # 1 + 2 duplicates + 2 out of order + 1 + 1 + 2 refused
    assert all(r["answered_at"] >= r["sent_at"] for r in pushes)


def _a(units: int) -> list[dict[str, Any]]:
    return [{"supplier_sku": "P-A", "on_hand": units}]


async def test_writes_stock_files_with_malformed_rows_on_demand(
    sim_http: Any, tmp_path: Path
) -> None:
    p = supplier_id("file")
    await sim_feed(sim_http, p, stock={"P-A": 4, "P-B": 5}, format="xml")
    for fmt in ("csv", "json", "xml"):
        answer = await sim_http.post(
            f"/_sim/feeds/{p}/file", json={"dir": str(tmp_path), "format": fmt, "malformed": 5}
        )
        assert answer.status_code == 200, answer.text
        path = Path(answer.json()["path"])
        assert path.suffix == f".{fmt}" and path.parent == tmp_path
        rows = await asyncio.to_thread(_read, path, fmt)
        records = [r for r in rows if isinstance(r, FeedRecord)]
        assert [r.supplier_sku for r in records[:2]] == ["P-A", "P-B"]
        assert len(records) == 5  # the stock, then the three bad values the core quarantines
        assert len([r for r in rows if isinstance(r, Malformed)]) == 2  # the rows missing a field
    hidden = await asyncio.to_thread(lambda: list(tmp_path.glob(".*")))
    assert hidden == []  # written under a hidden name, then renamed


def _read(path: Path, fmt: str) -> list[Parsed]:
    with path.open("rb") as f:
        return list(read_records(f, fmt))
