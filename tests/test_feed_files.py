"""Stock files through the feed core, against a real PostgreSQL and Redis: chunks named by the
content hash (a second run applies nothing), and the drop folder's done/ and failed/."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from flashsale.engine import Engine
from flashsale.loadtests.simulators.feed_docs import Item, write_file
from flashsale.reconciler.intake.drop import DONE, FAILED, DropConfig, DropWatcher
from flashsale.reconciler.intake.files import FileRun, load
from flashsale.store import feeds
from flashsale.store.db import Connection
from tests.feed_helpers import T0, at, configure, stored_sale, supplier_id
from tests.helpers import assert_sound, sku_stock

SKUS = ("A", "B", "C", "D", "E")


async def offers(engine: Engine, sale_id: str, sup: str) -> dict[str, int]:
    out = {}
    for sku in SKUS:
        stock = await sku_stock(engine, sale_id, sku)
        out[sku] = next(s.available for s in stock.suppliers if s.supplier == sup)
    return out


async def fed_sale(conn: Connection, engine: Engine, sale_id: str, kind: str = "file") -> str:
    """A sale of SKUS, 100 units each from a fresh supplier whose feed maps P-<sku> to <sku>."""
    p = supplier_id("p")
    await stored_sale(conn, engine, sale_id, {sku: [(p, 100)] for sku in SKUS})
    await configure(conn, p, {f"P-{sku}": sku for sku in SKUS}, kind=kind)
    return p


def stock_items(values: dict[str, object]) -> list[Item]:
    return [{"supplier_sku": f"P-{sku}", "on_hand": n} for sku, n in values.items()]


async def deliveries(conn: Connection, supplier: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT delivery_id FROM feed_deliveries WHERE supplier_id = $1 ORDER BY delivery_id",
        supplier,
    )
    return [r["delivery_id"] for r in rows]


async def test_a_file_goes_in_chunks_and_a_second_run_applies_nothing(
    conn: Connection, live_engine: Engine, sale_id: str, tmp_path: Path
) -> None:
    p = await fed_sale(conn, live_engine, sale_id)
    items = stock_items({"A": 7, "B": 0, "C": 55, "D": 12, "E": 99})
    items.append({"supplier_sku": "P-UNKNOWN", "on_hand": 4})
    items.append({"supplier_sku": "P-E", "on_hand": "lots"})  # quarantined by the core
    items.append({"on_hand": 3})  # no supplier_sku: malformed here, never handed in
    path = write_file(tmp_path / "stock.json", "json", items, T0)
    run = await load(conn, live_engine, path, FileRun(p, "json"), chunk_records=3)
    assert (run.records, run.malformed, run.deliveries, run.duplicate_deliveries) == (7, 1, 3, 0)
    assert [m.line for m in run.malformed_rows] == [9]
    assert dict(run.counts) == {
        "applied": 5, "stale": 0, "quarantined": 1, "unknown": 1, "duplicates": 0
    }  # fmt: skip
    assert await offers(live_engine, sale_id, p) == {"A": 7, "B": 0, "C": 55, "D": 12, "E": 99}
    ids = await deliveries(conn, p)
    assert ids == [f"file-{run.sha256[:40]}-{n}" for n in range(3)]
    events = await live_engine.client.xlen(f"fs:{{{sale_id}}}:events")

    again = await load(conn, live_engine, path, FileRun(p, "json"), chunk_records=3)
    assert (again.deliveries, again.duplicate_deliveries) == (3, 3)
    assert sum(again.counts.values()) == 0
    assert await deliveries(conn, p) == ids
    assert await live_engine.client.xlen(f"fs:{{{sale_id}}}:events") == events
    await assert_sound(live_engine, sale_id)


async def test_rows_without_as_of_take_the_file_time_and_newest_wins(
    conn: Connection, live_engine: Engine, sale_id: str, tmp_path: Path
) -> None:
    p = await fed_sale(conn, live_engine, sale_id)
    newer = write_file(tmp_path / "newer.csv", "csv", stock_items({"A": 10, "B": 20}))
    older = write_file(
        tmp_path / "older.csv",
        "csv",
        [
            {"supplier_sku": "P-A", "on_hand": 90},  # the file's time: older than `newer`
            {"supplier_sku": "P-B", "on_hand": 30, "as_of": at(7200)},  # its own: newer
        ],
    )
    await load(conn, live_engine, newer, FileRun(p, "csv", as_of=at(3600)), chunk_records=10)
    run = await load(conn, live_engine, older, FileRun(p, "csv", as_of=at(0)), chunk_records=10)
    assert (run.counts["applied"], run.counts["stale"]) == (1, 1)
    got = await offers(live_engine, sale_id, p)
    assert (got["A"], got["B"]) == (10, 30)


async def test_the_drop_folder_applies_settled_files_and_moves_them(
    conn: Connection, live_engine: Engine, sale_id: str, tmp_path: Path, test_url: str
) -> None:
    p = await fed_sale(conn, live_engine, sale_id)
    folder = tmp_path / p
    folder.mkdir()
    good = write_file(folder / "stock.xml", "xml", stock_items({"A": 1, "B": 2, "C": 3}), T0)
    broken = folder / "broken.xml"
    broken.write_bytes(
        b'<!DOCTYPE s [<!ENTITY x "y">]><stock><item supplier_sku="P-D" on_hand="1"/>'
    )
    hidden = write_file(folder / ".copying.csv", "csv", stock_items({"D": 1}))
    partial = write_file(folder / "big.csv.part", "csv", stock_items({"D": 1}))
    (tmp_path / "not a supplier").mkdir()
    watcher = DropWatcher(DropConfig(tmp_path, test_url, 0.1, 0.0, 2), live_engine)
    try:
        outcomes = await watcher.scan()
    finally:
        await watcher._close()
    by_name = {o.path.name: o for o in outcomes}
    assert set(by_name) == {"stock.xml", "broken.xml"}
    assert by_name["stock.xml"].status == DONE
    assert by_name["broken.xml"].status == FAILED
    assert "DOCTYPE is not allowed" in by_name["broken.xml"].detail
    assert not good.exists() and not broken.exists()
    assert hidden.exists() and partial.exists()  # still being written: left alone
    (done,) = [f for f in (folder / DONE).iterdir() if f.suffix == ".xml"]
    report = json.loads(done.with_name(done.name + ".json").read_text())
    assert (report["records"], report["applied"], report["deliveries"]) == (3, 3, 2)
    (reason,) = (folder / FAILED).glob("*.reason")
    assert "nothing of the file was applied" in reason.read_text()
    got = await offers(live_engine, sale_id, p)
    assert (got["A"], got["B"], got["C"], got["D"]) == (1, 2, 3, 100)
    health = await feeds.health(conn, p)
    assert health is not None and health.deliveries["accepted"] == 2


async def test_unsettled_files_wait_and_a_supplier_without_feed_fails(
    conn: Connection, live_engine: Engine, tmp_path: Path, test_url: str
) -> None:
    fresh = write_file(tmp_path / supplier_id("q") / "stock.csv", "csv", [], None)
    nobody = supplier_id("nobody")
    (tmp_path / nobody).mkdir()
    orphan = write_file(tmp_path / nobody / "stock.csv", "csv", stock_items({"A": 1}))
    old = time.time() - 120
    os.utime(orphan, (old, old))
    watcher = DropWatcher(DropConfig(tmp_path, test_url, 0.1, 60.0, 2), live_engine)
    try:
        outcomes = await watcher.scan()
    finally:
        await watcher._close()
    assert [(o.path.name, o.status) for o in outcomes] == [("stock.csv", FAILED)]
    assert "has no feed configured" in outcomes[0].detail
    assert fresh.exists()  # written less than settle_s ago
    assert list((tmp_path / nobody / FAILED).glob("*-stock.csv"))
