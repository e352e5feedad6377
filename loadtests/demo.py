"""`flashsale demo`: a one-minute flash sale over HTTP. It starts a gateway, the reconciler (with
the order saga) and the simulated payment provider, suppliers and webhook receiver, creates a
sale with a waiting room and two suppliers per sku, sends a Locust crowd of shoppers, bots and
an admin at it, and mid-sale has supplier acme's stock feed cut its red sneakers
(loadtests/demo_feed.py); prints the load-test report, what the saga made of the orders and of
the cut, and stops everything it started."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from flashsale import services
from flashsale.engine import Settings
from flashsale.loadtests import demo_after_sale, demo_feed, loadtest, saga_report
from flashsale.loadtests.crowd.passes import customer_token
from flashsale.loadtests.gateway_process import gateway
from flashsale.loadtests.options import LoadOptions
from flashsale.loadtests.run_secrets import production_secrets
from flashsale.loadtests.sale_api import Doc, GatewayError, SaleApi, flash_sale
from flashsale.loadtests.simulators import processes as sim

STOCK = {
    "sneaker-red": [("acme", 150), ("globex", 100)],
    "sneaker-blue": [("acme", 80), ("globex", 40)],
}
NAMES = {"sneaker-red": "Red runner sneaker", "sneaker-blue": "Blue runner sneaker"}
USERS, SPAWN_RATE, DURATION_S = 250, 50.0, 60
# The gateway believes X-Forwarded-For from loopback (Locust's simulated client addresses), so
# the sale's per-address rate limit catches the bots' few addresses and not the crowd.
GATEWAY_ENV = {"FLASHSALE_TRUSTED_PROXIES": "127.0.0.1", "FLASHSALE_QUEUE_POLL_MS": "1000"}


@dataclass
class Child:
    """A `flashsale <command>` process of the demo, output in its own log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, timeout_s: float = 20) -> None:
        """SIGTERM (the reconciler commits its batch in flight), then SIGKILL if it hangs."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class Children:
    """What the demo started beside the gateway, stopped in reverse order."""

    log_dir: Path
    env: dict[str, str]
    running: list[Child] = field(default_factory=list)

    def start(self, name: str, *args: str, ready: str = "", timeout_s: float = 30) -> Child:
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", "flashsale.cli", *args],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C reaches the demo, which stops it in order
            )
        child = Child(name, popen, log_path)
        self.running.append(child)
        deadline = time.monotonic() + timeout_s
        while ready and ready not in log_path.read_text(errors="replace"):
            if popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start (log {log_path}):\n{_tail(log_path)}")
            time.sleep(0.05)
        return child

    def stop_all(self) -> None:
        while self.running:
            self.running.pop().stop()


async def run(settings: Settings) -> int:
    urls = services.up(settings)
    settings, secret_env = production_secrets(settings)
    sale = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    out = Path("artifacts/demo") / sale
    out.mkdir(parents=True, exist_ok=True)
    env = {**urls, **GATEWAY_ENV, **saga_report.SAGA_ENV, **secret_env, **demo_feed.feed_env()}
    code = 2
    with contextlib.ExitStack() as stack:
        for party in sim.PARTIES:  # the saga's outside parties, with this run's credentials
            sim.stop(settings, party)  # one an earlier run left behind knows other secrets
            if sim.start(settings, party) is not None:
                stack.callback(sim.stop, settings, party)
        saga_report.set_scenario(settings, decline_share=0.05)
        print(f"\nstarting the gateway (2 workers); logs in {out}/", flush=True)
        gw = stack.enter_context(gateway(env, workers=2, log_path=out / "gateway.log"))
        api = SaleApi(gw.url, sale, settings.admin_key)
        api.create(_sale_body())
        stack.callback(_close, api)
        children = Children(out, env)
        stack.callback(children.stop_all)
        after = demo_after_sale.after_sale_id(sale)
        children.start(
            "reconciler", "reconcile", "--sale", sale, "--sale", after,
            ready="connected to PostgreSQL",
        )  # fmt: skip
        units = sum(n for suppliers in STOCK.values() for _, n in suppliers)
        visitor = customer_token(settings.customer_secret, settings.customer_audience, "visitor")
        print(
            f"sale {sale}: {units} units of {len(STOCK)} skus, 2 suppliers each, waiting room "
            f"admitting 25/s; production mode with this run's own secrets\n"
            f"watch the line (as customer 'visitor'): {api.page_url}#customer_token={visitor}\n",
            flush=True,
        )
        options = LoadOptions(
            gw.url, sale, out, users=USERS, spawn_rate=SPAWN_RATE, duration_s=DURATION_S
        )
        act = demo_feed.FeedAct(api, demo_feed.sim_url(settings))
        await act.configure()
        cut = asyncio.create_task(act.cut_later())  # mid-sale, acme's feed cuts its stock
        code = await loadtest.run(settings, options)
        cut.cancel()
        await asyncio.gather(cut, return_exceptions=True)
        await saga_report.settle(settings, sale)
        print("\n" + await saga_report.summary(settings, sale), flush=True)
        print(await act.summary(settings), flush=True)
        after_sale = demo_after_sale.AfterSaleAct(gw.url, after, settings, act)
        print("\n" + await after_sale.run(), flush=True)
        print("\n" + await saga_report.summary(settings, after), flush=True)
        print(f"\nthe queue page was {api.page_url} (stopped with the demo)", flush=True)
    return code


def _sale_body() -> Doc:
    """Holds last 15 s and unused admissions 20 s, so abandoned ones come back on sale within
    the minute; at most 2 of a sku per customer; 2 requests/s per customer and per client
    address (burst 4). The items have names, which the queue page shows instead of skus."""
    body = flash_sale(
        STOCK,
        hold_ttl_s=15,
        per_user_limit=2,
        admit_rate_per_s=25,
        max_active=150,
        token_ttl_s=20,
        per_address_per_s=2,
    )
    body["name"] = "Runner sneaker drop (demo)"
    body["items"] = [{**item, "name": NAMES[item["sku"]]} for item in body["items"]]
    return body


def _close(api: SaleApi) -> None:
    """A closed sale leaves the admission loops of every gateway that later serves this data."""
    with contextlib.suppress(GatewayError):
        api.close()


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
