"""`flashsale feeds load` and `flashsale feeds replay` through the real command line: the
progress line and the summary, malformed rows with their lines, a second run that applies
nothing, a replay after review, and each bad input with its message and exit code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flashsale.engine import Engine
from flashsale.engine.feeds import Thresholds
from flashsale.loadtests.simulators.feed_docs import Item, write_file
from flashsale.store.db import Connection
from tests.feed_helpers import T0, at, configure, stored_sale, supplier_id
from tests.helpers import sku_stock
from tests.reconciler_support import cli


@pytest.fixture
def env(service_urls: dict[str, str], test_url: str) -> dict[str, str]:
    return {**service_urls, "FLASHSALE_DATABASE_URL": test_url}


async def fed(conn: Connection, engine: Engine, sale_id: str, **kw: object) -> str:
    p = supplier_id("cli")
    await stored_sale(conn, engine, sale_id, {"A": [(p, 100)], "B": [(p, 100)]})
    await configure(conn, p, {"P-A": "A", "P-B": "B"}, kind="file", **kw)  # type: ignore[arg-type]
    return p


async def offer(engine: Engine, sale_id: str, sku: str) -> int:
    return (await sku_stock(engine, sale_id, sku)).available


async def test_load_shows_progress_applies_and_lists_malformed_rows(
    conn: Connection, live_engine: Engine, sale_id: str, env: dict[str, str], tmp_path: Path
) -> None:
    p = await fed(conn, live_engine, sale_id)
    rows: list[Item] = [{"supplier_sku": "P-A", "on_hand": 12}, {"on_hand": 4}]
    rows += [{"supplier_sku": "P-B"}]
    rows += [{"supplier_sku": "P-B", "on_hand": 30}, {"supplier_sku": "P-NEW", "on_hand": 1}]
    path = write_file(tmp_path / "stock.csv", "csv", rows)
    done = cli(env, "feeds", "load", str(path), "--supplier", p, "--as-of", T0, "--chunk", "2")
    assert done.returncode == 0, done.stderr
    progress = [line for line in done.stderr.splitlines() if line.startswith("feeds load ")]
    assert progress, done.stderr
    assert re.search(
        r"done 100\.0% of \d+ B, 3 records applied \(\d+/s\), 2 malformed, 2 deliveries",
        done.stderr,
    )
    assert "loaded 3 records" in done.stdout and "in 2 deliveries" in done.stdout
    assert "applied 2, stale 0, quarantined 0, unknown 1" in done.stdout
    assert "  line 3: supplier_sku missing" in done.stdout
    assert "  line 4: on_hand missing" in done.stdout
    assert (await offer(live_engine, sale_id, "A"), await offer(live_engine, sale_id, "B")) == (
        12,
        30,
    )

    again = cli(env, "feeds", "load", str(path), "--supplier", p, "--as-of", T0, "--chunk", "2")
    assert again.returncode == 0, again.stderr
    assert "in 2 deliveries (2 received before): applied 0, stale 0" in again.stdout


async def test_replay_applies_what_review_released(
    conn: Connection, live_engine: Engine, sale_id: str, env: dict[str, str], tmp_path: Path
) -> None:
    p = await fed(conn, live_engine, sale_id, thresholds=Thresholds(max_spike_pct=100))
    base = write_file(tmp_path / "base.json", "json", [{"supplier_sku": "P-A", "on_hand": 20}], T0)
    assert cli(env, "feeds", "load", str(base), "--supplier", p).returncode == 0
    spike: list[Item] = [{"supplier_sku": "P-A", "on_hand": 80, "as_of": at(60)}]  # +300 %
    spike.append({"supplier_sku": f"{p}-unknown", "on_hand": 1})  # a file of this test alone
    path = write_file(tmp_path / "spike.json", "json", spike)
    loaded = cli(env, "feeds", "load", str(path), "--supplier", p)
    assert loaded.returncode == 0, loaded.stderr
    assert "quarantined 1, unknown 1" in loaded.stdout
    assert await offer(live_engine, sale_id, "A") == 20
    delivery = await conn.fetchval(
        "SELECT delivery_id FROM feed_quarantine WHERE supplier_id = $1", p
    )
    replayed = cli(env, "feeds", "replay", "--delivery", delivery)
    assert replayed.returncode == 0, replayed.stderr
    assert f"replayed delivery {delivery}: applied 1" in replayed.stdout
    assert await offer(live_engine, sale_id, "A") == 80
    twice = cli(env, "feeds", "replay", "--delivery", delivery, "--supplier", p)
    assert twice.returncode == 0 and "applied 0" in twice.stdout  # nothing left to replay


async def test_bad_input_says_what_and_exits_non_zero(
    conn: Connection, live_engine: Engine, sale_id: str, env: dict[str, str], tmp_path: Path
) -> None:
    p = await fed(conn, live_engine, sale_id)
    good = write_file(tmp_path / "ok.csv", "csv", [{"supplier_sku": "P-A", "on_hand": 1}])
    broken = tmp_path / "broken.json"
    broken.write_text('{"items": [{"supplier_sku": "P-A", "on_hand": 1},')
    cases = [
        (("load", str(good), "--supplier", supplier_id("nobody")), 2, "has no feed"),
        (("load", str(good), "--supplier", "not an id"), 2, "supplier"),
        (("load", str(tmp_path / "missing.csv"), "--supplier", p), 2, "cannot read"),
        (("load", str(tmp_path), "--supplier", p), 2, "is a directory"),
        (("load", str(good), "--supplier", p, "--as-of", "today"), 2, "--as-of"),
        (("load", str(broken), "--supplier", p), 1, "nothing of it was applied"),
        (("replay", "--delivery", "no-such-delivery"), 2, "no delivery no-such-delivery"),
    ]
    for args, code, said in cases:
        done = cli(env, "feeds", *args)
        assert done.returncode == code, (args, done.stdout, done.stderr)
        assert said in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    assert await offer(live_engine, sale_id, "A") == 100  # nothing applied by any of them
    away = {**env, "FLASHSALE_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"}
    down = cli(away, "feeds", "load", str(good), "--supplier", p)
    assert down.returncode == 3 and "storage unavailable" in down.stderr, down.stderr
