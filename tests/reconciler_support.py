"""Helpers of the reconciler tests: sales in PostgreSQL + Redis, shoppers, real processes."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flashsale.engine import Code, Engine, Settings, keys
from flashsale.engine.sale import ItemConfig, SaleRecord, SupplierStockConfig
from flashsale.store.db import Connection
from flashsale.store.sales import save_sale, set_status

Stock = dict[str, list[tuple[str, int]]]  # sku -> [(supplier, units)] in priority order
Key = tuple[str, str]


def record(sale_id: str, stock: Stock, *, limit: int = 0, hold_ttl_s: int = 300) -> SaleRecord:
    """A sale open since the epoch; prices 1000 + 100 * n, costs 400 + 10 * j."""
    items = tuple(
        ItemConfig(
            sku,
            1000 + 100 * n,
            tuple(
                SupplierStockConfig(s, units, 400 + 10 * j, j) for j, (s, units) in enumerate(sups)
            ),
        )
        for n, (sku, sups) in enumerate(stock.items())
    )
    return SaleRecord(sale_id, f"Sale {sale_id}", 0, 0, hold_ttl_s, limit, items)


async def create_sale(engine: Engine, conn: Connection, sale: SaleRecord) -> None:
    """What gateway/admin.put_sale then /open do: PostgreSQL first, then Redis."""
    version = await save_sale(conn, sale)
    loaded = await engine.load_sale(sale.to_config(version))
    assert loaded.code is Code.OK, loaded
    assert await set_status(conn, sale.sale_id, "open")
    code, _ = await engine.set_status(sale.sale_id, "open")
    assert code is Code.OK


@dataclass
class Shopped:
    """What the shoppers did, by hold id, for exact expectations."""

    confirmed: dict[str, dict[Key, int]]
    released: int = 0

    def sold(self) -> Counter[Key]:
        total: Counter[Key] = Counter()
        for lines in self.confirmed.values():
            total.update(lines)
        return total


async def shop(
    engine: Engine,
    sale_id: str,
    skus: list[str],
    confirmations: int,
    *,
    concurrency: int = 200,
    release_every: int = 0,
    customers: int = 0,
    seed: int = 1,
) -> Shopped:
    """`confirmations` holds of 1-2 units of a random sku, each confirmed; with release_every
    = n, every n-th shopper also places a hold and releases it. `customers` > 0 makes shoppers
    come back (their per-sku counters add up)."""
    rng = random.Random(seed)
    who = customers or confirmations
    plan = [
        (f"c{seed}-{i % who}", rng.choice(skus), rng.randint(1, 2)) for i in range(confirmations)
    ]
    done = Shopped({})
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int, customer: str, sku: str, qty: int) -> None:
        async with gate:
            held = await engine.reserve(sale_id, customer, [(sku, qty)])
            assert held.ok, held
            outcome = await engine.confirm(sale_id, held.hold_id, f"pay-{customer}")
            assert outcome.code is Code.OK, outcome
            done.confirmed[held.hold_id] = {(a.sku, a.supplier): a.qty for a in held.allocations}
            if release_every and i % release_every == 0:
                extra = await engine.reserve(sale_id, customer, [(sku, 1)])
                assert extra.ok, extra
                assert (await engine.release(sale_id, extra.hold_id)).code is Code.OK
                done.released += 1

    await asyncio.gather(*(one(i, *p) for i, p in enumerate(plan)))
    return done


async def wait_flushed(
    engine: Engine, conn: Connection, sale_ids: list[str], orders: int, timeout_s: float = 40
) -> None:
    """Until every stream is empty (flushed entries are deleted) and PostgreSQL has `orders`."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = sum([int(await engine.client.xlen(keys.events(s))) for s in sale_ids])
        found = await conn.fetchval(
            "SELECT count(*) FROM orders WHERE sale_id = ANY($1::text[])", sale_ids
        )
        if left == 0 and found >= orders:
            return
        assert time.monotonic() < deadline, f"not flushed: {left} entries left, {found} orders"
        await asyncio.sleep(0.1)


def log_dir() -> Path:
    path = Path(tempfile.gettempdir()) / "flashsale-reconciler-tests"
    path.mkdir(exist_ok=True)
    return path


class Process:
    """A real `flashsale <command>` process with stdout and stderr in a log file."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.log_path = log_dir() / f"{args[0]}-{time.monotonic_ns()}.log"
        with self.log_path.open("wb") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "flashsale.cli", *args],
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_for(self, text: str, timeout_s: float = 20, times: int = 1) -> None:
        """Until `text` is in the log `times` times (the process must not exit meanwhile)."""
        deadline = time.monotonic() + timeout_s
        while self.log().count(text) < times:
            assert self.popen.poll() is None, f"exited early:\n{self.log()[-3000:]}"
            assert time.monotonic() < deadline, f"no {text!r} in:\n{self.log()[-3000:]}"
            await asyncio.sleep(0.02)

    def kill9(self) -> None:
        os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait()

    def stop(self, timeout_s: float = 20) -> int:
        """SIGTERM, the graceful stop; the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            raise AssertionError(f"did not stop on SIGTERM:\n{self.log()[-3000:]}") from None

    def log_lines(self) -> list[dict[str, Any]]:
        """The process's JSON log lines (engine/logs.py), each parsed."""
        return [json.loads(line) for line in self.log().splitlines() if line.startswith("{")]

    def final_metric(self, name: str) -> int:
        """A counter from the line the reconciler logs when it stops, whose message is
        `reconcile <consumer> stopped: name=value ...`."""
        stopped = [doc for doc in self.log_lines() if doc["event"] == "reconcile.stopped"]
        assert stopped, self.log()[-3000:]
        counters = stopped[-1]["message"].split(" stopped: ")[1].split()
        return int(dict(part.split("=", 1) for part in counters)[name])


def stop_postgres(settings: Settings) -> None:
    """`pg_ctl stop -m fast` on the project's own data dir, as the postgres user when we are
    root (PostgreSQL refuses to run as root); `services.up` starts it again."""
    data = settings.run_path / "pg" / "data"
    version = (data / "PG_VERSION").read_text().strip()
    ctl = shutil.which("pg_ctl") or f"/usr/lib/postgresql/{version}/bin/pg_ctl"
    cmd = [ctl, "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop"]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    subprocess.run(cmd, check=True, capture_output=True, timeout=90)


def cli(env: dict[str, str], *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flashsale.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


async def assert_exact(
    engine: Engine, conn: Connection, sale_id: str, live: dict[str, dict[Key, int]]
) -> None:
    """PostgreSQL holds exactly the orders `live` (hold id -> lines) that no compensation
    undid, each line once; its sold equals Redis's sold equals the orders' units per sku and
    supplier; the ledger sums to the stock levels."""
    rows = await conn.fetch(
        "SELECT o.order_id, l.sku, l.supplier_id, l.qty, EXISTS (SELECT 1 FROM stock_movements m "
        "WHERE m.kind = 'compensate' AND m.ref = o.order_id) AS undone "
        "FROM orders o JOIN order_lines l USING (order_id) WHERE o.sale_id = $1",
        sale_id,
    )
    found: dict[str, dict[Key, int]] = {}
    for r in rows:
        if not r["undone"]:
            found.setdefault(r["order_id"], {})[(r["sku"], r["supplier_id"])] = r["qty"]
    assert found.keys() == live.keys(), (len(found), len(live))
    assert found == live
    sold: Counter[Key] = Counter()
    for lines in live.values():
        sold.update(lines)
    state = await engine.stock(sale_id)
    assert state is not None
    redis = {
        (k.sku, s.supplier): (s.loaded, s.adjusted, s.sold) for k in state.skus for s in k.suppliers
    }
    levels = await conn.fetch(
        "SELECT sku, supplier_id, loaded, adjusted, sold FROM stock_levels WHERE sale_id = $1",
        sale_id,
    )
    pg = {(r["sku"], r["supplier_id"]): (r["loaded"], r["adjusted"], r["sold"]) for r in levels}
    assert pg == redis
    assert {k: v[2] for k, v in pg.items() if v[2]} == dict(sold)
    sums = await conn.fetch(
        "SELECT sku, supplier_id, "
        "coalesce(sum(qty) FILTER (WHERE kind = 'load'), 0) AS loaded, "
        "coalesce(sum(qty) FILTER (WHERE kind = 'adjust'), 0) AS adjusted, "
        "coalesce(sum(qty) FILTER (WHERE kind IN ('confirm', 'compensate')), 0) AS sold "
        "FROM stock_movements WHERE sale_id = $1 GROUP BY 1, 2",
        sale_id,
    )
    assert {
        (r["sku"], r["supplier_id"]): (r["loaded"], r["adjusted"], r["sold"]) for r in sums
    } == pg
    confirm_rows = await conn.fetchval(
        "SELECT count(*) FROM stock_movements WHERE sale_id = $1 AND kind = 'confirm'", sale_id
    )
    assert confirm_rows == len(rows)


def assert_audit_ok(env: dict[str, str], *sale_ids: str) -> list[str]:
    """`flashsale audit` of each sale, all at once (the Redis side reads every hold), exit 0."""
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "flashsale.cli", "audit", "--sale", s],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for s in sale_ids
    ]
    reports = [run.communicate(timeout=120)[0] for run in runs]
    for run, report in zip(runs, reports, strict=True):
        assert run.returncode == 0 and "audit: OK" in report, report
    return reports
