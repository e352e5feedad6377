"""A real browser on the queue page of a production gateway: Debian's headless Chromium, driven
by Playwright, comes from the shop with its pass in the link's fragment, joins a line, watches
its position fall, is let in and places a hold; shoppers who come before the opening see it in
their own time zone, and after reserving go on to the shop's checkout; names from the sale are
shown as text; without a pass a visitor is sent back to the shop. Screenshots go to artifacts/
(docs/screenshots/ with FLASHSALE_WRITE_SCREENSHOTS=1)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright

from flashsale.engine import keys
from flashsale.engine.connection import RedisClient
from flashsale.engine.settings import Settings
from flashsale.loadtests.gateway_process import Gateway
from tests.browser_helpers import (
    ARGS,
    ARTIFACTS,
    CHROMIUM,
    DESKTOP,
    PHONE,
    ShopSite,
    assert_no_sideways_scroll,
    launch,
    require_chromium,
    screenshot,
    shop_site,
)
from tests.gateway_helpers import admin_view, client, new_sale_id, sku_view
from tests.security_helpers import Shop, production_gateway
from tests.waiting_room_helpers import room_body, room_info_when

AHEAD = 15  # at 3 admissions a second: ~5 s of line, most of it left when the page joins


@pytest.fixture(scope="module")
def prod(settings: Settings, service_urls: dict[str, str]) -> Iterator[tuple[Gateway, Shop]]:
    fast = {"FLASHSALE_QUEUE_POLL_MS": "250", "FLASHSALE_QUEUE_TICK_MS": "50"}
    fast["FLASHSALE_QUEUE_GHOST_AFTER_MS"] = "600000"  # those AHEAD join and never poll
    with production_gateway(settings, service_urls, **fast) as running:
        yield running


async def positions_until_admitted(page: Page, timeout_s: float = 20) -> list[int]:
    """Every position the page showed, in order, until it says the shopper is in."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout_s
    while await page.get_attribute("#room", "data-state") != "admitted":
        text = (await page.text_content("#position") or "").strip()
        if text.isdigit() and (not seen or seen[-1] != int(text)):
            seen.append(int(text))
            if len(seen) == 2:
                await page.screenshot(path=ARTIFACTS / "waiting-room-waiting.png")
        assert time.monotonic() < deadline, f"not admitted; positions seen {seen}"
        await asyncio.sleep(0.05)
    return seen


async def _room_sale(http: httpx.AsyncClient, shop: Shop, body: dict[str, Any]) -> str:
    sale = new_sale_id("wr-browser")
    body = {**body, "name": "Midnight sneaker drop"}
    body["items"] = [{**body["items"][0], "name": "Red runner, size 42"}]
    assert (await http.put(f"/v1/admin/sales/{sale}", json=body, headers=shop.admin)).is_success
    assert (await http.post(f"/v1/admin/sales/{sale}/open", headers=shop.admin)).is_success
    return sale


async def test_a_shopper_waits_in_line_is_let_in_and_checks_out(
    prod: tuple[Gateway, Shop],
) -> None:
    require_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    gw, shop = prod
    async with client(gw) as http:
        sale = await _room_sale(http, shop, room_body(50, rate=3))
        await room_info_when(http, sale, {"tickets": 0, "prequeue_size": 0})  # open, no draw
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            page = await browser.new_page(viewport=PHONE)
            link = f"{gw.url}/sales/{sale}/waiting-room#customer_token={shop.token('shopper-1')}"
            await page.goto(link)
            await page.wait_for_selector("text=Midnight sneaker drop")
            assert "customer_token" not in page.url  # taken out of the address bar
            assert not await page.is_visible("#customer")  # no customer ID box
            # The line forms once the page is up: a browser slow to start on a loaded machine
            # (a CI run) found the whole line admitted before it joined.
            for i in range(AHEAD):
                await http.post(f"/v1/sales/{sale}/queue", headers=shop.as_customer(f"ahead-{i}"))
            await page.get_by_role("button", name="Join the queue").click()
            draw = page.get_by_role("link", name="How the draw works")
            await draw.wait_for(timeout=10_000)
            receipt = (await http.get(await draw.get_attribute("href") or "")).json()
            assert (receipt["prequeue_size"], receipt["ticket"]["prequeue"]) == (0, False)
            seen = await positions_until_admitted(page)
            assert len(seen) >= 2 and seen == sorted(seen, reverse=True), seen
            assert seen[0] >= 4, seen  # joined behind a real line
            assert await page.is_visible("text=You're in! Check out now")
            await page.screenshot(path=ARTIFACTS / "waiting-room-admitted.png")
            await page.get_by_label("Item").select_option("A")
            assert "Red runner, size 42" in (await page.text_content("#sku") or "")
            await page.get_by_role("button", name="Reserve now").click()
            await page.wait_for_selector("#held:not([hidden])", timeout=10_000)
            hold_id = (await page.text_content("#hold-id") or "").strip()
            assert not await page.is_visible("#pay")  # the sale has no return_url
            await page.screenshot(path=ARTIFACTS / "waiting-room-held.png")
            await browser.close()
        assert hold_id
        mine = await http.get(
            f"/v1/sales/{sale}/holds/{hold_id}", headers=shop.as_customer("shopper-1")
        )
        assert mine.status_code == 200 and mine.json()["customer_id"] == "shopper-1"
        assert sku_view(await admin_view(http, sale, shop.admin))["reserved"] == 1


async def test_a_visitor_without_the_shops_pass_is_sent_back_to_the_shop(
    prod: tuple[Gateway, Shop],
) -> None:
    """Before: the page asked anyone to type "Your customer ID", and believed it."""
    require_chromium()
    gw, shop = prod
    async with client(gw) as http:
        sale = await _room_sale(http, shop, room_body(10, rate=3))
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            page = await browser.new_page(viewport=PHONE)
            await page.goto(f"{gw.url}/sales/{sale}/waiting-room?customer=alice")
            await page.wait_for_selector("text=Come in from the shop")
            assert not await page.is_visible("#customer")
            assert not await page.is_visible("text=Join the queue")
            assert await page.title() == "Midnight sneaker drop"
            assert sale not in (await page.text_content("main") or "")
            await page.screenshot(path=ARTIFACTS / "waiting-room-no-pass.png")
            await browser.close()
        assert (await room_info_when(http, sale, {}))["tickets"] == 0


# --- from before the opening to the shop's checkout --------------------------------------------

OPENS_IN_S = 20  # time for the browser to load the page and join before the opening
ITEM = "Red runner, size 42"
SHOPPERS = {  # label: (customer, time zone, viewport)
    "phone": ("tokyo-shopper", "Asia/Tokyo", PHONE),
    "desktop": ("new-york-shopper", "America/New_York", DESKTOP),
}


@dataclass(frozen=True)
class Opening:
    """A sale that opens by itself at `starts`, and the shop whose checkout follows it."""

    gw: Gateway
    shop: Shop
    sale: str
    starts: datetime
    checkout: str  # the shop site's checkout address, without the query

    def body(self) -> dict[str, Any]:
        body = room_body(50, rate=3, starts_at=self.starts.isoformat().replace("+00:00", "Z"))
        body["waiting_room"]["token_ttl_s"] = 300
        body["items"] = [
            {**body["items"][0], "name": ITEM},
            {**body["items"][0], "sku": "B", "name": "Blue runner, size 40"},
        ]
        return_url = f"{self.checkout}?hold={{hold_id}}"
        return {**body, "name": "Midnight sneaker drop", "return_url": return_url}


async def _before_the_opening(page: Page, label: str, zone: str, starts: datetime) -> None:
    """The start in the visitor's own zone, how long until then, what the front of the line
    brings; then the visitor joins the pre-queue."""
    await page.wait_for_selector("#opens:not([hidden])")
    local = starts.astimezone(ZoneInfo(zone))
    shown = await page.text_content("#opens-at") or ""
    assert f"{local:%H:%M}" in shown and f"{starts:%H:%M}" not in shown, (shown, local)
    assert await page.get_attribute("#opens-at", "datetime") == f"{starts:%Y-%m-%dT%H:%M:%S}.000Z"
    assert re.fullmatch(r"\(in \d+ seconds?\)", await page.text_content("#opens-in") or "")
    front = await page.text_content("#front") or ""
    assert "5 minutes to choose" in front and "held for 10 minutes: a button" in front, front
    await page.get_by_role("button", name="Join the queue").click()
    await page.wait_for_selector("#position:text('draw')")
    assert await page.is_visible("#opens") and await page.is_visible("#front")
    await assert_no_sideways_scroll(page)
    await screenshot(page, f"waiting-before-opening-{label}")


async def _journey(browser: Browser, opening: Opening, label: str) -> tuple[str, str]:
    """One shopper from the shop's link to the shop's checkout: (customer, hold id)."""
    customer, zone, viewport = SHOPPERS[label]
    context = await browser.new_context(viewport=viewport, timezone_id=zone, locale="en-GB")
    page = await context.new_page()
    token = opening.shop.token(customer)
    await page.goto(f"{opening.gw.url}/sales/{opening.sale}/waiting-room#customer_token={token}")
    await _before_the_opening(page, label, zone, opening.starts)
    await page.wait_for_selector("#admitted:not([hidden])", timeout=(OPENS_IN_S + 30) * 1000)
    assert not await page.is_visible("#opens") and not await page.is_visible("#front")
    options = await page.locator("#sku option").all_text_contents()
    assert options == [f"{ITEM} (in stock)", "Blue runner, size 40 (in stock)"], options
    await assert_no_sideways_scroll(page)
    await screenshot(page, f"admitted-{label}")
    await page.get_by_label("Item").select_option(label=f"{ITEM} (in stock)")
    await page.get_by_role("button", name="Reserve now").click()
    pay = page.get_by_role("link", name="Continue to payment")
    await pay.wait_for(timeout=10_000)
    hold_id = (await page.text_content("#hold-id") or "").strip()
    assert await page.text_content("#held-what") == f"1 \u00d7 {ITEM}"  # 1 times the item
    link = await pay.get_attribute("href") or ""
    assert link == f"{opening.checkout}?hold={hold_id}" and token not in link
    await assert_no_sideways_scroll(page)
    await screenshot(page, f"reserved-{label}")
    await page.reload()  # the way on is still offered after a reload
    await pay.wait_for(timeout=10_000)
    assert await pay.get_attribute("href") == link
    await pay.click()
    await page.wait_for_selector("text=Shop checkout")
    assert page.url == link
    await context.close()
    return customer, hold_id


async def test_shoppers_wait_for_the_opening_are_let_in_and_go_on_to_the_shops_checkout(
    prod: tuple[Gateway, Shop], redis_client: RedisClient
) -> None:
    """Two shoppers, a phone in Tokyo and a desktop in New York, come before the opening behind
    four others who joined too: each sees the start in their own zone, waits, is let in, picks
    an item by its name, reserves, and the "Continue to payment" button takes them to the shop
    with exactly their hold id; the shop then confirms both holds through the API."""
    gw, shop = prod
    async with client(gw) as http, async_playwright() as pw:
        browser = await launch(pw)
        with shop_site() as site:
            starts = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=OPENS_IN_S)
            sale = new_sale_id("wr-journey")
            opening = Opening(gw, shop, sale, starts, f"{site.url}/checkout")
            put = await http.put(f"/v1/admin/sales/{sale}", json=opening.body(), headers=shop.admin)
            assert put.status_code == 201, put.text
            for i in range(4):
                await http.post(f"/v1/sales/{sale}/queue", headers=shop.as_customer(f"early-{i}"))
            done = await asyncio.gather(*(_journey(browser, opening, label) for label in SHOPPERS))
            await browser.close()
        await _the_shop_got_each_hold_and_confirms_it(http, redis_client, shop, sale, site, done)


async def _the_shop_got_each_hold_and_confirms_it(
    http: httpx.AsyncClient,
    redis_client: RedisClient,
    shop: Shop,
    sale: str,
    site: ShopSite,
    done: list[tuple[str, str]],
) -> None:
    pages = [v for v in site.visits if v.path != "/favicon.ico"]  # the browser asks for it
    # One visit each, with exactly its hold: the page never went there by itself.
    assert sorted(v.path for v in pages) == sorted(f"/checkout?hold={h}" for _, h in done)
    for customer, hold_id in done:
        visit = next(v for v in pages if v.path == f"/checkout?hold={hold_id}")
        assert parse_qs(urlsplit(visit.path).query) == {"hold": [hold_id]}
        assert "Referer" not in visit.headers  # the page's address stays with the page
        held = await redis_client.hgetall(keys.hold(sale, hold_id))
        assert (held["user"], held["status"]) == (customer, "held"), held
        confirm = await http.post(
            f"/v1/sales/{sale}/holds/{hold_id}/confirm",
            json={"payment": {"method": "card", "token": "tok_visa"}},
            headers=shop.as_customer(customer),
        )
        assert confirm.status_code == 200, confirm.text
    view = sku_view(await admin_view(http, sale, shop.admin))
    assert (view["sold"], view["reserved"]) == (len(done), 0), view


HOSTILE = "<img src=x onerror=\"document.title='pwned'\">"


async def test_names_from_the_sale_are_shown_as_text(prod: tuple[Gateway, Shop]) -> None:
    """An item and a sale named with markup: the page shows the characters, makes no element."""
    gw, shop = prod
    async with client(gw) as http:
        sale = new_sale_id("wr-hostile")
        body = room_body(10, rate=50)
        body["items"] = [{**body["items"][0], "name": HOSTILE}]
        body = {**body, "name": f"<b>{HOSTILE}</b>"}
        assert (await http.put(f"/v1/admin/sales/{sale}", json=body, headers=shop.admin)).is_success
        assert (await http.post(f"/v1/admin/sales/{sale}/open", headers=shop.admin)).is_success
        async with async_playwright() as pw:
            browser = await launch(pw)
            page = await browser.new_page(viewport=PHONE)
            dialogs: list[str] = []
            page.on("dialog", lambda dialog: dialogs.append(dialog.message))
            link = f"{gw.url}/sales/{sale}/waiting-room#customer_token={shop.token('shopper-x')}"
            await page.goto(link)
            await page.wait_for_selector("#sale-items:not(:empty)")
            await page.get_by_role("button", name="Join the queue").click()
            await page.wait_for_selector("#admitted:not([hidden])", timeout=20_000)
            assert await page.text_content("#sale-name") == f"<b>{HOSTILE}</b>"
            assert await page.text_content("#sale-items") == HOSTILE
            options = await page.locator("#sku option").all_text_contents()
            assert options == [f"{HOSTILE} (in stock)"]
            assert await page.title() == f"<b>{HOSTILE}</b>"
            made = await page.evaluate("document.querySelectorAll('main img, main b').length")
            assert (made, dialogs) == (0, [])
            await browser.close()
