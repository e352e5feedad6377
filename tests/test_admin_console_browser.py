"""The operator console in a real browser (Debian's Chromium under Playwright) against a real
gateway, the saga and the simulators: the key is asked for and a wrong one refused; a live sale's
sold count moves while holds are confirmed in the background; a backorder is decided by a click
and the saga ships it from the secondary supplier; a step dead-lettered while the payment
provider was down is retried by a click once the provider is back; an order's timeline is looked
up; the settlement shows (or says it is not available). Screenshots at desktop and phone width go
to artifacts/ (docs/screenshots/ with FLASHSALE_WRITE_SCREENSHOTS=1)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import re
import time
from collections.abc import Awaitable, Callable

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx
from playwright.async_api import Browser, Locator, Page, Request, async_playwright

from flashsale.engine import Code, Engine, Settings
from flashsale.engine.invariants import check_sale
from flashsale.engine.sale import WaitingRoomConfig
from flashsale.loadtests.gateway_process import Gateway
from flashsale.reconciler.audit import audit
from tests.admin_console_helpers import (
    ADMIN,
    cengine,
    cgw,
    console_url,
    cpg,
    csettings,
    csims,
    dead_at,
)
from tests.browser_helpers import (
    DESKTOP,
    PHONE,
    assert_no_sideways_scroll,
    launch,
    require_chromium,
    screenshot,
)
from tests.reconciler_support import create_sale, record
from tests.saga_support import Sims, reconciler, wait_final

__all__ = ["cengine", "cgw", "console_url", "cpg", "csettings", "csims"]  # the fixtures

KEY = ADMIN["Authorization"].removeprefix("Bearer ")
IN_LINE = 60  # shoppers who join the sale's waiting room (admitted 1 a second)
BOUGHT_LIVE = 5  # orders confirmed while the console watches
SETTLEMENT_SHOWN = """() => !document.getElementById("settlement-view").hidden
    || document.getElementById("settlement-note").textContent.includes("not available")"""


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 45) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def order_status(pg: asyncpg.Connection, order_id: str) -> str:
    return str(await pg.fetchval("SELECT status FROM orders WHERE order_id = $1", order_id))


async def status_is(pg: asyncpg.Connection, order_id: str, status: str) -> bool:
    row = await pg.fetchrow("SELECT status, next_step FROM orders WHERE order_id = $1", order_id)
    return row is not None and row["status"] == status and row["next_step"] is None


async def buy(engine: Engine, sale_id: str, customer: str, lines: list[tuple[str, int]]) -> str:
    """An admitted shopper's confirmed hold (the sale has a waiting room): the order's id."""
    held = await engine.reserve(sale_id, customer, lines, admitted=True)
    assert held.ok, held
    done = await engine.confirm(sale_id, held.hold_id, f"card:tok_{customer}")
    assert done.code is Code.OK, done
    return held.hold_id


async def buy_in_background(engine: Engine, sale_id: str, count: int) -> list[str]:
    """Shoppers confirm a hold each, one every 300 ms: the sale's sold count moves."""
    confirmed = []
    for i in range(count):
        confirmed.append(await buy(engine, sale_id, f"live-{i}", [("A", 1)]))
        await asyncio.sleep(0.3)
    return confirmed


async def sold_shown(page: Page, sku: str) -> int:
    text = await page.text_content(
        f'#stock tr[data-sku="{sku}"][data-supplier="all"] td:last-child'
    )
    return int(text or "-1")


async def enter_key(page: Page, key: str) -> None:
    await page.get_by_label("Admin key", exact=True).fill(key)
    await page.get_by_role("button", name="Use key").click()


async def open_sale(page: Page, sale_id: str) -> None:
    await page.get_by_label("Sale", exact=True).fill(sale_id)
    await page.get_by_role("button", name="Show").click()
    await page.wait_for_selector('#stock tr[data-sku="A"][data-supplier="all"]')


async def phone_view(browser: Browser, gw: Gateway, sale_id: str, order_id: str) -> None:
    """The same console at phone width: one column, nothing to scroll sideways."""
    context = await browser.new_context(viewport=PHONE)
    page = await context.new_page()
    await page.goto(f"{gw.url}/admin/")
    await enter_key(page, KEY)
    await open_sale(page, sale_id)
    await page.get_by_label("Order id", exact=True).fill(order_id)
    await page.locator("#order-form").get_by_role("button", name="Look up").click()
    await page.wait_for_selector("#timeline li")
    columns = await page.evaluate(
        "getComputedStyle(document.getElementById('console')).gridTemplateColumns.split(' ').length"
    )
    assert columns == 1
    await assert_no_sideways_scroll(page)
    await screenshot(page, "admin-console-phone")
    await context.close()


async def offer_wait(pg: asyncpg.Connection, order_id: str, day: dt.date) -> None:
    """The backorder's wait option offers `day` (as if it had opened long ago, or again)."""
    await pg.execute(
        "UPDATE backorders SET options = (SELECT jsonb_agg(CASE WHEN o->>'decision' = 'wait' "
        "THEN jsonb_set(o, '{promised_date}', to_jsonb($2::text)) ELSE o END ORDER BY i) "
        "FROM jsonb_array_elements(options) WITH ORDINALITY AS t(o, i)) WHERE order_id = $1",
        order_id,
        day.isoformat(),
    )


async def wait_date_shown(
    page: Page, card: Locator, pg: asyncpg.Connection, order_id: str, wait_days: int
) -> None:
    """The wait option's date field: its default, a new card when the options change, and a
    day the decision route refuses (the backorder stays open)."""
    today = dt.datetime.now(dt.UTC).date()
    field = card.get_by_label(re.compile("Promised date for backorder"))
    wait = card.locator("button[data-decision=wait]")
    default = today + dt.timedelta(days=wait_days)
    assert await field.input_value() == default.isoformat()
    assert await field.get_attribute("min") == today.isoformat()
    assert await wait.text_content() == f"Wait until {default.isoformat()}"
    offered = today + dt.timedelta(days=wait_days + 10)
    await offer_wait(pg, order_id, offered)  # options changed: the card is made again
    await page.wait_for_function(
        "([sel, day]) => document.querySelector(sel)?.value === day",
        arg=[f'#backorders li[data-order="{order_id}"] input[type=date]', offered.isoformat()],
    )
    await offer_wait(pg, order_id, today - dt.timedelta(days=3))  # an old backorder
    await page.wait_for_function(
        "([sel, day]) => document.querySelector(sel)?.value === day",
        arg=[f'#backorders li[data-order="{order_id}"] input[type=date]', default.isoformat()],
    )
    yesterday = (today - dt.timedelta(days=1)).isoformat()
    await field.fill(yesterday)
    assert await wait.text_content() == f"Wait until {yesterday}"
    await wait.click()
    await page.wait_for_selector("#backorders-note:has-text('promised_date is in the past')")
    assert (
        await pg.fetchval("SELECT status FROM backorders WHERE order_id = $1", order_id) == "open"
    )


async def test_an_operator_watches_a_sale_decides_a_backorder_and_retries_a_dead_step(
    cgw: Gateway,
    csims: Sims,
    cengine: Engine,
    cpg: asyncpg.Connection,
    csettings: Settings,
    sale_id: str,
) -> None:
    require_chromium()
    sims = csims
    sims.reset()
    sims.supplier("P2", stock={"X": 0})  # nobody of the sale can ship X: a backorder
    sims.supplier("S9", stock={"X": 10}, cost_minor={"X": 700})  # a secondary, dearer
    room = WaitingRoomConfig(enabled=True, admit_rate_per_s=1, max_active=2)
    sale = dataclasses.replace(
        record(sale_id, {"A": [("P1", 40)], "X": [("P2", 10)]}), waiting_room=room
    )
    await create_sale(cengine, cpg, sale)
    async with reconciler(csettings, cengine):
        sims.payment(fail_share=1.0)  # the provider is down: the first order's step dies
        dead = await buy(cengine, sale_id, "shopper-d", [("A", 2)])
        await dead_at(cpg, [dead], "payment.authorize")
        sims.payment(fail_share=0.0)
        backordered = await buy(cengine, sale_id, "shopper-x", [("X", 1)])
        await until(lambda: status_is(cpg, backordered, "BACKORDERED"), "the backorder")
        async with httpx.AsyncClient(base_url=cgw.url) as http:
            for i in range(IN_LINE):
                joined = await http.post(
                    f"/v1/sales/{sale_id}/queue", json={"customer_id": f"line-{i}"}
                )
                assert joined.status_code == 201, joined.text
        async with async_playwright() as pw:
            browser = await launch(pw)
            page = await browser.new_page(viewport=DESKTOP)
            admin_calls: list[str] = []

            def note(request: Request) -> None:
                if "/v1/admin/" in request.url:
                    admin_calls.append(request.url)

            page.on("request", note)
            await page.goto(f"{cgw.url}/admin/")
            await page.wait_for_timeout(2500)  # more than a refresh period
            assert admin_calls == [] and not await page.is_visible("#console")
            # A wrong key: the first call answers 401 and the key is asked for again.
            await enter_key(page, "not-the-key")
            await page.wait_for_selector("text=The admin key was refused")
            assert await page.evaluate("sessionStorage.length") == 0
            assert not await page.is_visible("#console")
            await enter_key(page, KEY)
            await page.wait_for_selector("#console:not([hidden])")

            # An unknown sale: the failed refresh is shown.
            await page.get_by_label("Sale", exact=True).fill("no-such-sale")
            await page.get_by_role("button", name="Show").click()
            await page.wait_for_selector("#sale-error:has-text('NOT_FOUND')")

            # The live sale moves while shoppers buy.
            await open_sale(page, sale_id)
            assert await page.is_hidden("#sale-error")
            assert await sold_shown(page, "A") == 2
            assert (await page.text_content("#sale-status")) == "open"
            assert re.fullmatch(
                r"Updated \d\d:\d\d:\d\d", await page.text_content("#sale-updated") or ""
            )
            assert re.fullmatch(
                r"1/s \(measured [\d.]+/s\)", await page.text_content("#admit-rate") or ""
            )
            waiting = int(await page.text_content("#queue-length") or "-1")
            assert 0 < waiting <= IN_LINE
            buying = asyncio.create_task(buy_in_background(cengine, sale_id, BOUGHT_LIVE))
            seen = {await sold_shown(page, "A")}
            while not buying.done() or 2 + BOUGHT_LIVE not in seen:
                seen.add(await sold_shown(page, "A"))
                await asyncio.sleep(0.1)
            live_orders = await buying
            assert len(seen) >= 3 and min(seen) == 2 and max(seen) == 2 + BOUGHT_LIVE, seen
            p1 = '#stock tr[data-sku="A"][data-supplier="P1"] td'
            assert (await page.locator(p1).all_text_contents())[2:] == ["40", "0", "33", "0", "7"]

            # The dead order looked up, with both cards waiting: the desktop picture.
            card = page.locator(f'#backorders li[data-order="{backordered}"]')
            dead_card = page.locator(f'#dead li[data-order="{dead}"]')
            await card.wait_for()
            await dead_card.wait_for()
            await dead_card.get_by_role("button", name="Look up").click()
            await page.wait_for_selector("#timeline li:has-text('dead after 3 tries')")
            assert await page.input_value("#order-id") == dead
            assert await page.text_content("#order-saga") == "dead at payment.authorize"
            await page.wait_for_function(SETTLEMENT_SHOWN)
            if await page.is_visible("#settlement-view"):  # the settlement route exists
                figures = await page.locator("#settlement-figures dt").all_text_contents()
                assert figures[:2] == ["Orders", "Units sold"] and "Net" in figures
                # Loaded every 30 s, or now on demand.
                shown = await page.text_content("#settlement-updated")
                await page.wait_for_timeout(1100)
                await page.get_by_role("button", name="Refresh now").click()
                await page.wait_for_function(
                    "(was) => document.getElementById('settlement-updated').textContent !== was",
                    arg=shown,
                )
            await assert_no_sideways_scroll(page)
            await screenshot(page, "admin-console-desktop")

            # The wait option's date: the offered one, or today + the wait days once that has
            # passed; a backorder's new options give a new card (not the old buttons).
            labels = await card.get_by_role("button").all_text_contents()
            assert labels[1:] == ["Cancel (void)", "Ship from S9 (cost 7.00, margin \u22123.00)"]
            await wait_date_shown(page, card, cpg, backordered, csettings.backorder_wait_days)
            await card.get_by_role("button", name="Ship from S9").click()
            said = await page.wait_for_selector(f"#backorders-note:has-text('{backordered}')")
            assert said is not None and "Ship from S9" in (await said.text_content() or "")
            decided = await cpg.fetchrow(
                "SELECT status, decision FROM backorders WHERE order_id = $1", backordered
            )
            assert decided["status"] != "open"  # decided (the saga may have applied it too)
            assert json.loads(decided["decision"]) == {
                "decision": "secondary",
                "supplier_id": "S9",
                "cost_minor": 700,
            }
            await until(lambda: status_is(cpg, backordered, "FULFILLED"), "the secondary ships")
            await page.wait_for_selector(
                f'#backorders li[data-order="{backordered}"]', state="detached"
            )

            # The dead step, retried by a click now that the provider answers.
            assert "payment.authorize" in (await dead_card.text_content() or "")
            assert "503" in (await dead_card.text_content() or "")
            await dead_card.get_by_role("button", name="Retry").click()
            await page.wait_for_selector(f"#dead-note:has-text('{dead}: step payment.authorize')")
            await until(lambda: status_is(cpg, dead, "FULFILLED"), "the retried order")
            await page.wait_for_selector(f'#dead li[data-order="{dead}"]', state="detached")

            # The order's timeline, refreshed by itself.
            await page.wait_for_selector("#order-status:text-is('FULFILLED')")
            timeline = await page.locator("#timeline li").all_text_contents()
            assert any("retried by an operator over the admin API" in t for t in timeline)
            assert any("dead after 3 tries" in t for t in timeline)
            assert any("\u2192 AUTHORIZED" in t for t in timeline)
            await phone_view(browser, cgw, sale_id, dead)

            # Forgetting the key stops every admin call.
            await page.get_by_role("button", name="Forget key").click()
            await page.wait_for_selector("#key-panel:not([hidden])")
            calls = len(admin_calls)
            await page.wait_for_timeout(2500)
            assert len(admin_calls) == calls
            assert await page.evaluate("sessionStorage.getItem('flashsale.console.key')") is None
            await browser.close()
        orders = 2 + len(live_orders)
        statuses = await wait_final(cpg, sale_id, orders)
    assert statuses == {o: "FULFILLED" for o in [dead, backordered, *live_orders]}
    auths = sims.authorizations()
    assert (auths[dead]["captured_minor"], auths[dead]["captures"]) == (2000, 1)
    assert (auths[backordered]["captured_minor"], auths[backordered]["captures"]) == (1100, 1)
    shipped = [
        (a["sku"], a["supplier_id"], a["status"])
        for a in sims.allocations()
        if a["key"].startswith(backordered)
    ]
    assert shipped == [("X", "S9", "confirmed")]
    assert await check_sale(cengine, sale_id) == []
    assert (await audit(cengine, cpg, sale_id, strict=True)).ok
