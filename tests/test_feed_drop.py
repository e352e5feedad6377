"""The file drop end to end: the upload route writes into the drop folder (bad uploads change
nothing), and a real reconciler applies a dropped file; killed -9 mid-file and started again,
it applies each record once (deliveries, counters and ledger rows exact)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from flashsale.engine import Engine, keys
from flashsale.loadtests.gateway_process import Gateway, gateway
from flashsale.loadtests.simulators.feed_docs import Item, document, write_file
from flashsale.reconciler.intake.drop import DONE
from flashsale.store import feeds
from flashsale.store.db import Connection
from tests.feed_helpers import T0_MS, configure, stored_sale, supplier_id
from tests.gateway_helpers import ADMIN
from tests.helpers import assert_sound, eventually, sku_stock
from tests.reconciler_support import Process, wait_flushed

FILE_CAP = 4096


@pytest.fixture
def feed_dir(tmp_path: Path) -> Path:
    return tmp_path / "feeds"


@pytest.fixture
def upload_gw(service_urls: dict[str, str], feed_dir: Path) -> Iterator[Gateway]:
    env = {
        **service_urls,
        "FLASHSALE_FEED_DIR": str(feed_dir),
        "FLASHSALE_FEED_FILE_MAX_BYTES": str(FILE_CAP),
    }
    with gateway(env, workers=1) as running:
        yield running


@pytest.fixture
async def admin(upload_gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=upload_gw.url, headers=ADMIN, timeout=30) as c:
        yield c


def folder_state(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


async def test_an_upload_lands_in_the_drop_folder_and_bad_ones_change_nothing(
    admin: httpx.AsyncClient, gateway_db: Connection, feed_dir: Path
) -> None:
    p = supplier_id("up")
    await configure(gateway_db, p, {"P-A": "A"}, kind="file")
    url = f"/v1/admin/suppliers/{p}/feed/file"
    csv = document("csv", [{"supplier_sku": "P-A", "on_hand": 5}])
    text_csv = {"Content-Type": "text/csv"}
    other = f"/v1/admin/suppliers/{supplier_id('x')}/feed/file"
    refused = [
        (await admin.put(url, content=csv, headers={"Authorization": "Bearer nope"}), 401),
        (await admin.put(other, content=csv, headers=text_csv), 404),
        (await admin.put("/v1/admin/suppliers/bad%20id/feed/file", headers=text_csv), 422),
        (await admin.put(url, content=csv, headers={"Content-Type": "text/plain"}), 415),
        (await admin.put(url, content=b"", headers=text_csv), 422),
        (await admin.put(url, content=b"x" * (FILE_CAP + 1), headers=text_csv), 413),
        # No Content-Length: the cap is counted as the body streams in.
        (await admin.put(url, content=_chunks(b"y" * 1000, 6), headers=text_csv), 413),
    ]
    for answer, status in refused:
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["code"]
    assert folder_state(feed_dir) in ([], [p])  # nothing kept of the refused bodies

    ok = await admin.put(url, content=csv, headers={"Content-Type": "text/csv; charset=utf-8"})
    assert ok.status_code == 202, ok.text
    doc = ok.json()
    assert (doc["supplier"], doc["format"], doc["bytes"]) == (p, "csv", len(csv))
    assert doc["status"] == "queued"
    assert folder_state(feed_dir) == [p, f"{p}/{doc['file']}"]
    assert (feed_dir / p / doc["file"]).read_bytes() == csv
    assert doc["file"].endswith(".csv")


async def _chunks(data: bytes, times: int) -> AsyncIterator[bytes]:
    for _ in range(times):
        yield data


SKUS = [f"S{k:02d}" for k in range(50)]
CHUNKS = 200


def crash_file(path: Path) -> Path:
    """CHUNKS chunks of one record per sku, every chunk newer than the one before and moving
    every offer (500 <-> 600): each record applied changes exactly one offer once."""

    def items() -> Iterator[Item]:
        for c in range(CHUNKS):
            as_of = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(T0_MS // 1000 + c)) + "Z"
            for sku in SKUS:
                yield {"supplier_sku": f"P-{sku}", "on_hand": 500 + 100 * (c % 2), "as_of": as_of}

    return write_file(path, "csv", items())


async def _count(conn: Connection, sql: str, *args: object) -> int:
    return int(await conn.fetchval(sql, *args))


async def test_a_reconciler_killed_mid_file_applies_each_record_once(
    conn: Connection,
    live_engine: Engine,
    sale_id: str,
    service_urls: dict[str, str],
    test_url: str,
    feed_dir: Path,
) -> None:
    p = supplier_id("crash")
    await stored_sale(conn, live_engine, sale_id, {sku: [(p, 1000)] for sku in SKUS})
    await configure(conn, p, {f"P-{sku}": sku for sku in SKUS}, kind="file")
    path = crash_file(feed_dir / p / "stock.csv")
    env = {
        **service_urls,
        "FLASHSALE_DATABASE_URL": test_url,
        "FLASHSALE_FEED_DIR": str(feed_dir),
        "FLASHSALE_FEED_CHUNK_RECORDS": str(len(SKUS)),
        "FLASHSALE_FEED_SETTLE_MS": "0",
        "FLASHSALE_FEED_SCAN_MS": "100",
    }
    delivered = "SELECT count(*) FROM feed_deliveries WHERE supplier_id = $1"
    first = Process(env, "reconcile", "--progress-s", "0", "--sale", sale_id)
    try:
        await eventually(lambda: _count(conn, delivered, p), timeout_s=60, interval_s=0.01)
        while await _count(conn, delivered, p) < 10:
            assert first.popen.poll() is None, first.log()[-3000:]
            await asyncio.sleep(0.01)
        first.kill9()
    finally:
        if first.popen.poll() is None:
            first.popen.kill()
    before = await _count(conn, delivered, p)
    assert 10 <= before < CHUNKS, f"the kill did not land mid-file ({before} of {CHUNKS})"
    assert path.exists()  # not done: the file stays for the next reconciler

    second = Process(env, "reconcile", "--progress-s", "0", "--sale", sale_id)
    try:
        done = feed_dir / p / DONE
        await eventually(lambda: _count_files(done, "*-stock.csv"), timeout_s=120)
        await wait_flushed(live_engine, conn, [sale_id], 0)
    finally:
        second.stop()

    assert await _count(conn, delivered, p) == CHUNKS
    applied = "SELECT sum(applied) FROM feed_deliveries WHERE supplier_id = $1"
    assert await _count(conn, applied, p) == CHUNKS * len(SKUS)
    health = await feeds.health(conn, p)
    assert health is not None
    assert health.records["applied"] == CHUNKS * len(SKUS)
    assert health.deliveries == {"accepted": CHUNKS, "duplicate": before}
    (report_path,) = (feed_dir / p / DONE).glob("*.json")
    report = json.loads(report_path.read_text())
    assert (report["deliveries"], report["duplicate_deliveries"]) == (CHUNKS, before)
    # The ledger: one adjust row per record, each delivery's 50 and each sku's 200, once.
    rows = await conn.fetch(
        "SELECT split_part(reason, ' ', 4) AS delivery, sku, count(*) AS n FROM stock_movements "
        "WHERE sale_id = $1 AND kind = 'adjust' GROUP BY 1, 2",
        sale_id,
    )
    assert len(rows) == CHUNKS * len(SKUS)
    assert {int(r["n"]) for r in rows} == {1}
    assert len({r["delivery"] for r in rows}) == CHUNKS
    for sku in SKUS[:3]:
        stock = await sku_stock(live_engine, sale_id, sku)
        assert stock.available == 600  # the last chunk's level
    await assert_sound(live_engine, sale_id)
    assert await live_engine.client.xlen(keys.events(sale_id)) == 0


async def _count_files(folder: Path, pattern: str) -> int:
    return await asyncio.to_thread(lambda: len(list(folder.glob(pattern))))
