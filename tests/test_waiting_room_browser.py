"""A real browser on the queue page of a production gateway: Debian's headless Chromium, driven
by Playwright, comes from the shop with its pass in the link's fragment, joins a line, watches
its position fall, is let in and places a hold; without a pass it is sent back to the shop.
Screenshots go to artifacts/."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, ViewportSize, async_playwright

from flashsale.engine.settings import Settings
from flashsale.loadtests.gateway_process import Gateway
from tests.gateway_helpers import admin_view, client, new_sale_id, sku_view
from tests.security_helpers import Shop, production_gateway
from tests.waiting_room_helpers import room_body, room_info_when

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
AHEAD = 15  # at 3 admissions a second: ~5 s of line, most of it left when the page joins
PHONE: ViewportSize = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def prod(settings: Settings, service_urls: dict[str, str]) -> Iterator[tuple[Gateway, Shop]]:
    fast = {"FLASHSALE_QUEUE_POLL_MS": "250", "FLASHSALE_QUEUE_TICK_MS": "50"}
    with production_gateway(settings, service_urls, **fast) as running:
        yield running


def require_chromium() -> None:
    """Fails, not skips: the browser is part of the project's set-up (`make browser`)."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run `make browser` as root (it apt-get installs Debian's "
            "chromium package), or install that package yourself"
        )


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
        for i in range(AHEAD):
            await http.post(f"/v1/sales/{sale}/queue", headers=shop.as_customer(f"ahead-{i}"))
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            page = await browser.new_page(viewport=PHONE)
            link = f"{gw.url}/sales/{sale}/waiting-room#customer_token={shop.token('shopper-1')}"
            await page.goto(link)
            await page.wait_for_selector("text=Midnight sneaker drop")
            assert "customer_token" not in page.url  # taken out of the address bar
            assert not await page.is_visible("#customer")  # no customer ID box
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
