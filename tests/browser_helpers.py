"""Helpers of the queue page's browser tests: Debian's Chromium under Playwright, a small shop
site the page hands shoppers on to, screenshots and the phone-width check."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, Playwright, ViewportSize

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
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
SCREENSHOTS = ROOT / "docs" / "screenshots"
PHONE: ViewportSize = {"width": 390, "height": 844}
DESKTOP: ViewportSize = {"width": 1280, "height": 800}


def require_chromium() -> None:
    """Fails, not skips: the browser is part of the project's set-up (`make browser`)."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run `make browser` as root (it apt-get installs Debian's "
            "chromium package), or install that package yourself"
        )


async def launch(pw: Playwright) -> Browser:
    require_chromium()
    return await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)


async def screenshot(page: Page, name: str) -> Path:
    """To artifacts/, or to docs/screenshots/ (the pictures docs/waiting-room.md shows) when
    FLASHSALE_WRITE_SCREENSHOTS=1, so an ordinary test run leaves the tree as it was."""
    folder = SCREENSHOTS if os.environ.get("FLASHSALE_WRITE_SCREENSHOTS") == "1" else ARTIFACTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    await page.screenshot(path=path, full_page=True)
    return path


async def assert_no_sideways_scroll(page: Page) -> None:
    """Everything fits the viewport's width: nothing to scroll to on the side."""
    widths = await page.evaluate("() => [document.scrollingElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"scrollWidth {widths[0]} > innerWidth {widths[1]}"


@dataclass
class Visit:
    path: str
    headers: dict[str, str]


@dataclass
class ShopSite:
    """The shop's own checkout, on a loopback port: it records every visit."""

    url: str
    visits: list[Visit] = field(default_factory=list)


@contextmanager
def shop_site() -> Iterator[ShopSite]:
    """A real HTTP server in a thread answering every GET with a small checkout page."""
    site = ShopSite("")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with lock:
                site.visits.append(Visit(self.path, dict(self.headers.items())))
            page = "<!doctype html><title>Shop checkout</title><h1>Shop checkout</h1>"
            page += f"<p id='asked'>{escape(self.path)}</p>"
            body = page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    site.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
