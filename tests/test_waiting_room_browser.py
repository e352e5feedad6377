"""A real browser on the queue page: Debian's headless Chromium, driven by Playwright, joins a
line, watches its position fall, is let in and places a hold. Screenshots go to artifacts/."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Page, ViewportSize, async_playwright

from flashsale.loadtests.gateway_process import Gateway, gateway
from tests.gateway_helpers import admin_view, client, sku_view
from tests.waiting_room_helpers import (
    close_created,
    create_room_sale,
    join,
    room_body,
    room_info_when,
)

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
def gw(service_urls: dict[str, str]) -> Iterator[Gateway]:
    env = {**service_urls, "FLASHSALE_QUEUE_POLL_MS": "250", "FLASHSALE_QUEUE_TICK_MS": "50"}
    with gateway(env, workers=2) as running:
        yield running
        close_created(running.url)


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


async def test_a_shopper_waits_in_line_is_let_in_and_checks_out(gw: Gateway) -> None:
    require_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    async with client(gw) as http:
        sale = await create_room_sale(http, "wr-browser", room_body(50, rate=3))
        await room_info_when(http, sale, {"tickets": 0, "prequeue_size": 0})  # open, no draw
        for i in range(AHEAD):
            await join(http, sale, f"ahead-{i}")
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            page = await browser.new_page(viewport=PHONE)
            await page.goto(f"{gw.url}/sales/{sale}/waiting-room?customer=shopper-1")
            await page.get_by_label("Your customer ID").fill("shopper-1")
            await page.get_by_role("button", name="Join the queue").click()
            seen = await positions_until_admitted(page)
            assert len(seen) >= 2 and seen == sorted(seen, reverse=True), seen
            assert seen[0] >= 4, seen  # joined behind a real line
            assert await page.is_visible("text=You're in! Check out now")
            await page.screenshot(path=ARTIFACTS / "waiting-room-admitted.png")
            await page.get_by_label("Item").select_option("A")
            await page.get_by_role("button", name="Reserve now").click()
            await page.wait_for_selector("#held:not([hidden])", timeout=10_000)
            hold_id = (await page.text_content("#hold-id") or "").strip()
            await page.screenshot(path=ARTIFACTS / "waiting-room-held.png")
            await browser.close()
        assert hold_id
        reply = await http.get(f"/v1/sales/{sale}/holds/{hold_id}")
        assert reply.status_code == 200 and reply.json()["customer_id"] == "shopper-1"
        assert sku_view(await admin_view(http, sale))["reserved"] == 1
