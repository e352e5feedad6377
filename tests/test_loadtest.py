"""`flashsale loadtest` as a real process: Locust's shoppers, bots and admin against a real
2-worker gateway, the real reconciler, Redis and PostgreSQL; then what every client was told is
compared with what Redis and PostgreSQL hold."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import pytest

from flashsale.engine import Engine, Settings, keys
from flashsale.engine.waiting_room import WaitingRoom
from flashsale.loadtests.gateway_process import free_port, gateway
from flashsale.loadtests.outcomes import Outcomes
from flashsale.loadtests.report import read_stats
from flashsale.loadtests.sale_api import Doc, SaleApi, flash_sale
from tests.helpers import eventually
from tests.reconciler_support import Process, assert_audit_ok, cli

# 120 units for a crowd that wants several times that: the sale sells out within seconds, holds
# left alone expire after 4 s and their units sell again.
STOCK = {"A": [("p", 50), ("q", 30)], "B": [("p", 40)]}
GATEWAY_ENV = {
    "FLASHSALE_TRUSTED_PROXIES": "127.0.0.1",  # believe Locust's simulated client addresses
    "FLASHSALE_QUEUE_POLL_MS": "300",  # a waiter is a ghost after 2 s (the floor) of silence
    "FLASHSALE_QUEUE_TICK_MS": "50",
    "FLASHSALE_QUEUE_CACHE_MS": "100",
    "FLASHSALE_QUEUE_BEAT_FLUSH_MS": "200",
}
BOT_REFUSALS = {
    "401 CUSTOMER_UNAUTHENTICATED",  # forged or expired customer tokens
    "403 CUSTOMER_MISMATCH",  # another customer's token, with a body customer_id of its own
    "401 TOKEN_INVALID",  # a forged admission token
    "403 NOT_ADMITTED",
    "429 RATE_LIMITED",
}


@pytest.fixture
def env(service_urls: dict[str, str], test_url: str) -> dict[str, str]:
    return {**service_urls, "FLASHSALE_DATABASE_URL": test_url, **GATEWAY_ENV}


async def run_flash_sale(
    env: dict[str, str], settings: Settings, sale: str, out: Path
) -> tuple[subprocess.CompletedProcess[str], Doc | None]:
    """Gateway, sale, reconciler, then `flashsale loadtest` for 20 s; its result and the room's
    figures after it."""
    with gateway(env, workers=2) as gw:
        api = SaleApi(gw.url, sale, settings.admin_key)
        body = flash_sale(
            STOCK,
            hold_ttl_s=4,
            per_user_limit=2,
            admit_rate_per_s=25,
            max_active=40,
            token_ttl_s=10,
            per_address_per_s=2,
        )
        api.create(body)
        reconciler = Process(env, "reconcile", "--sale", sale, "--progress-s", "0")
        try:
            await reconciler.wait_for("connected to PostgreSQL")
            args = ["--url", gw.url, "--sale", sale, "--out", str(out), "--users", "60"]
            args += ["--spawn-rate", "30", "--duration-s", "20", "--patience-s", "30"]
            run = await asyncio.to_thread(cli, env, "loadtest", *args, timeout_s=180)
            room = api.room()
            assert reconciler.stop() == 0
        finally:
            if reconciler.popen.poll() is None:
                reconciler.popen.kill()
            api.close()
    return run, room


async def test_a_locust_flash_sale_sells_each_unit_once_and_turns_every_bot_away(
    env: dict[str, str], settings: Settings, live_engine: Engine, tmp_path: Path
) -> None:
    sale = f"lt-{uuid.uuid4().hex[:10]}"
    run, room = await run_flash_sale(env, settings, sale, tmp_path)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    assert "result: OK" in report and "audit: OK" in report, report
    assert "oversold 0 (Redis 0, PostgreSQL 0, confirmations told to clients 0)" in report
    assert "[   5 s / 20 s]" in report  # the progress lines
    told = Outcomes.read(tmp_path / "outcomes.json")
    c = told.counts
    # Nothing broke and no journey was cut off, so every hold's fate is known to the clients.
    assert c["errors"] == c["cut"] == 0, dict(c)
    assert c["confirmed"] > 0 and c["refused_sold_out"] > 0, dict(c)
    holds = len(told.confirmed) + len(told.released) + len(told.left)
    assert holds == c["holds"] - c["replays"] > 0

    # Bots: many tries, no hold, each refused for who it claimed to be, for being unadmitted or
    # forged, or for going too fast.
    assert c["bot_checkouts"] > 100 and told.bot_holds == []
    assert set(told.bot_refusals) <= BOT_REFUSALS and "429 RATE_LIMITED" in told.bot_refusals
    assert sum(told.bot_refusals.values()) == c["bot_checkouts"]

    # Redis: what clients were told was confirmed is exactly what is sold, within the stock.
    state = await live_engine.stock(sale)
    assert state is not None and state.open_holds == 0
    assert {k.sku: k.sold for k in state.skus} == {
        sku: told.units_confirmed().get(sku, 0) for sku in STOCK
    }
    for sku in state.skus:
        for s in sku.suppliers:
            assert s.reserved == 0 and s.available + s.sold == s.loaded, s
    assert 0 < sum(k.sold for k in state.skus) <= sum(n for sups in STOCK.values() for _, n in sups)

    # PostgreSQL: one order per confirmed hold; every hold left alone expired; releases recorded.
    conn = await asyncpg.connect(env["FLASHSALE_DATABASE_URL"])
    try:
        orders = {
            r[0] for r in await conn.fetch("SELECT order_id FROM orders WHERE sale_id = $1", sale)
        }
        refs = "SELECT DISTINCT ref FROM stock_movements WHERE sale_id = $1 AND kind = $2"
        expired = {r[0] for r in await conn.fetch(refs, sale, "expire")}
        released = {r[0] for r in await conn.fetch(refs, sale, "release")}
    finally:
        await conn.close()
    assert orders == set(told.confirmed)
    assert expired == set(told.left) and released == set(told.released)

    # The waiting room issued one ticket per shopper who joined, and admitted at least those
    # who saw their admission.
    assert room is not None and room["tickets"] == c["joined"] and room["admitted"] >= c["admitted"]

    routes = {r.name: r for r in read_stats(tmp_path / "locust_stats.csv")}
    assert routes["Aggregated"].failures == 0
    for name in ("/v1/sales/{sale}/queue/{ticket}", "/v1/sales/{sale}/holds (bot)"):
        assert routes[name].requests > 0 and routes[name].p99_ms > 0
    assert (tmp_path / "report.html").stat().st_size > 10_000
    assert_audit_ok(env, sale)


def test_bad_options_and_an_unreachable_gateway_are_clear_errors(env: dict[str, str]) -> None:
    bad_url = cli(env, "loadtest", "--url", "ftp://x", "--sale", "s")
    assert bad_url.returncode == 2 and "--url must be an http(s) URL" in bad_url.stderr
    bad_sale = cli(env, "loadtest", "--url", "http://127.0.0.1:1", "--sale", "no sale!")
    assert bad_sale.returncode == 2 and "--sale must be a sale id" in bad_sale.stderr
    shares = ["--confirm-share", "0.9", "--release-share", "0.2"]
    over = cli(env, "loadtest", "--url", "http://127.0.0.1:1", "--sale", "s", *shares)
    assert over.returncode == 2 and "sum <= 1" in over.stderr
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens
    down = cli(env, "loadtest", "--url", url, "--sale", "s")
    assert down.returncode == 2 and f"cannot reach {url}" in down.stdout, down.stdout


def test_the_locustfile_refuses_a_run_without_a_sale() -> None:
    locustfile = Path(__file__).parent.parent / "loadtests" / "locustfile.py"
    run = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "-t", "1s"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode != 0 and "--sale (LOCUST_SALE) must be a sale id" in run.stderr


Made = tuple[int, int | None]  # (admitted at ms, taken back at ms or None)


def figure(pattern: str, report: str) -> list[float]:
    found = re.search(pattern, report)
    assert found, (pattern, report)
    return [float(g) for g in found.groups()]


async def test_the_report_measures_wait_estimates_and_the_slots_ghosts_took(
    env: dict[str, str], settings: Settings, live_engine: Engine, tmp_path: Path
) -> None:
    """A line that builds (5 admissions/s, stock to spare), 30 % of waiters leaving at a random
    moment: the report's ghost slots are exactly the leavers' places Redis recorded admitted
    (standing or taken back), each taken back unused once nobody picked it up (3 s at least,
    FLASHSALE_QUEUE_CLAIM_MS, and no later than the 2 s of silence a waiter is allowed)."""
    sale = f"lw-{uuid.uuid4().hex[:10]}"
    with gateway(env, workers=2) as gw:
        api = SaleApi(gw.url, sale, settings.admin_key)
        body = flash_sale(
            {"A": [("p", 5000)]}, hold_ttl_s=4, per_user_limit=3, admit_rate_per_s=5,
            max_active=40, token_ttl_s=10,
        )  # fmt: skip
        api.create(body)
        reconciler = Process(env, "reconcile", "--sale", sale, "--progress-s", "0")
        try:
            await reconciler.wait_for("connected to PostgreSQL")
            args = ["--url", gw.url, "--sale", sale, "--out", str(tmp_path), "--users", "60"]
            args += ["--spawn-rate", "30", "--duration-s", "20", "--leave-share", "0.3"]
            args += ["--bot-weight", "0", "--admin-weight", "0"]
            run = await asyncio.to_thread(cli, env, "loadtest", *args, timeout_s=180)
            assert reconciler.stop() == 0
            report = run.stdout + run.stderr
            assert run.returncode == 0 and "result: OK" in report, report
            # While the gateway's loop still runs: every slot a leaver got is taken back.
            held = await eventually(lambda: taken_back(live_engine, sale, report, tmp_path))
        finally:
            if reconciler.popen.poll() is None:
                reconciler.popen.kill()
            api.close()
    assert all(3000 <= ms <= 5500 for ms in held), sorted(held)

    measured, med, p90, by_p50, by_p90 = figure(
        r"wait estimates: (\d+) waiters measured .* median ([\d.]+)%, p90 ([\d.]+)%; "
        r"admitted by eta_p50 ([\d.]+)%, by eta_p90 ([\d.]+)%",
        report,
    )
    assert measured > 0 and 0 <= med <= p90 and 0 <= by_p50 <= by_p90 <= 100

    left, slots, share, admissions, skipped = figure(
        r"ghosts: (\d+) shoppers left while waiting; (\d+) admission slots went to them "
        r"\(([\d.]+)% of (\d+) admissions\), (\d+) were skipped",
        report,
    )
    told = Outcomes.read(tmp_path / "outcomes.json")
    assert left == len(told.leavers) == told.counts["left_waiting"] > 0
    # The room goes on admitting those still in line after the run: judge it as the report read it.
    read_at_ms = read_at(report)
    made = await admissions_made(live_engine, sale, read_at_ms)  # place -> admitted at, taken back
    assert admissions == sum(len(a) for a in made.values()) > 0
    places = await leaver_places(live_engine, sale, tmp_path)
    assert slots == sum(1 for p in places if p in made) == len(held)
    assert slots + skipped <= left and 0 <= share < 100 and "not taken back when read" in report
    assert f"({slots / admissions:.1%} of {admissions:.0f} admissions)" in report


def read_at(report: str) -> int:
    found = re.search(r"the room as read at (\S+)\)", report)
    assert found, report
    return round(datetime.fromisoformat(found[1]).timestamp() * 1000)


async def leaver_places(engine: Engine, sale: str, out: Path) -> list[int]:
    state = await WaitingRoom(engine).queue_state(sale)
    assert state is not None
    told = Outcomes.read(out / "outcomes.json")
    return [state.place_of(int(t.split("-")[0])) or 0 for t, _ in told.leavers]


async def taken_back(engine: Engine, sale: str, report: str, out: Path) -> list[int]:
    """Admission to take-back (ms) of each slot a leaver got by the report's read; fails (not
    yet) while one is still standing."""
    made = await admissions_made(engine, sale, read_at(report))
    slots = [slot for p in await leaver_places(engine, sale, out) for slot in made.get(p, [])]
    assert all(gone is not None for _, gone in slots), "not all taken back yet"
    return [gone - at for at, gone in slots if gone is not None]


async def admissions_made(engine: Engine, sale: str, until_ms: int) -> dict[int, list[Made]]:
    """Place -> its admissions made by `until_ms`: (admitted at, taken back at), the latter
    whenever it happened, as far as Redis knows now (a place taken back twice shows once)."""
    admitted = await engine.client.hgetall(keys.room_admitted(sale))  # decoded: str
    released = await engine.client.hgetall(keys.room_released(sale))
    made: dict[int, list[Made]] = {}
    for place, value in released.items():
        at, gone = map(int, str(value).split(":"))
        if at <= until_ms:
            made.setdefault(int(place), []).append((at, gone))
    for place, value in admitted.items():
        at = int(str(value).split(":")[0])
        if at <= until_ms:
            made.setdefault(int(place), []).append((at, None))
    return made
