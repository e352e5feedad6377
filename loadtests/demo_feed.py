"""The demo's feed act: mid-sale, supplier acme's stock webhook (pushed by the feed simulator,
signed) says it has only a few red sneakers left. The sale's acme offer drops at once, and the
orders already sold from acme beyond that are allocated at globex by the saga without acme being
asked first. `flashsale demo` runs it beside the crowd and prints what it did."""

from __future__ import annotations

import asyncio
import datetime
import secrets
from dataclasses import dataclass, field
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]  # asyncpg ships no type hints
import httpx

from flashsale.engine import Settings
from flashsale.loadtests.sale_api import SaleApi
from flashsale.loadtests.simulators import processes as sim

SUPPLIER, SKU, OTHER = "acme", "sneaker-red", "globex"
SKU_MAP = {"ACME-RED-1": "sneaker-red", "ACME-BLUE-1": "sneaker-blue"}
CUT_AFTER_S = 10.0  # into the crowd's minute: acme still has stock, holds and unallocated sales
CUT_TO = 5  # acme's red sneakers left, by its feed
OPENING = {"ACME-RED-1": 150, "ACME-BLUE-1": 80}  # what the demo's sale loads from acme


def feed_env() -> dict[str, str]:
    """The gateway seals the feed secret with this run's own key (production mode)."""
    return {"FLASHSALE_FEED_KEY": secrets.token_urlsafe(32)}


@dataclass
class FeedAct:
    api: SaleApi
    sim_url: str
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    before: int | None = None  # acme's red offer just before the cut
    after: int | None = None
    answer: dict[str, Any] = field(default_factory=dict)

    async def configure(self) -> None:
        """acme gets a webhook feed; the simulator pushes as acme, to this gateway."""
        feed = {
            "kind": "webhook",
            "secret": self.secret,
            "sku_map": [{"supplier_sku": k, "sku": v} for k, v in SKU_MAP.items()],
        }
        # The after-sale act (loadtests/demo_after_sale.py) has acme report its shipments; the
        # flag is kept in PostgreSQL, and the crowd's orders are not to wait for parcels.
        body = {"name": "Acme Wholesale", "reports_shipments": False, "feed": feed}
        await asyncio.to_thread(
            self.api.call, "PUT", f"/v1/admin/suppliers/{SUPPLIER}", body, admin=True
        )
        target = f"{self.api.url}/v1/feeds/{SUPPLIER}"
        async with httpx.AsyncClient(base_url=self.sim_url, timeout=10) as client:
            config = {"secret": self.secret, "target": target, "stock": OPENING}
            (await client.put(f"/_sim/feeds/{SUPPLIER}", json=config)).raise_for_status()
            # acme's feed first confirms what the sale was loaded with: a level an earlier
            # demo left in PostgreSQL is older, and this one wins.
            opening = await client.post(f"/_sim/feeds/{SUPPLIER}/push", json={})
            opening.raise_for_status()
        if opening.json()["sent"][0]["status"] != 202:
            raise RuntimeError(f"acme's opening stock was refused: {opening.json()}")

    async def cut_later(self, delay_s: float = CUT_AFTER_S) -> None:
        await asyncio.sleep(delay_s)
        self.before = await self._offer()
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        push = {"deliveries": [{"items": [{"supplier_sku": "ACME-RED-1", "on_hand": CUT_TO}],
                                "as_of": now}]}  # fmt: skip
        async with httpx.AsyncClient(base_url=self.sim_url, timeout=30) as client:
            answer = await client.post(f"/_sim/feeds/{SUPPLIER}/push", json=push)
            answer.raise_for_status()
        self.answer = answer.json()["sent"][0]
        self.after = await self._offer()
        print(
            f"\nfeed: acme says it has {CUT_TO} {SKU} left (signed webhook, answer "
            f"{self.answer['status']} {self.answer['body']}); the sale's acme offer went "
            f"{self.before} -> {self.after}",
            flush=True,
        )

    async def _offer(self) -> int | None:
        view = await asyncio.to_thread(self.api.admin_view)
        for item in view.get("skus", []):
            if item["sku"] == SKU:
                for sup in item["suppliers"]:
                    if sup["supplier"] == SUPPLIER:
                        return int(sup["available"])
        return None

    async def summary(self, settings: Settings) -> str:
        """What the cut did to the orders: acme's red lines allocated elsewhere, and whether
        acme was asked for any of them first."""
        conn = await asyncpg.connect(settings.local_database_url, timeout=10)
        try:
            row = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE a.supplier_id <> a.hold_supplier) AS moved, "
                "count(*) FILTER (WHERE a.supplier_id <> a.hold_supplier "
                "AND a.hold_supplier = ANY(a.refused_by)) AS asked, "
                "count(*) FILTER (WHERE a.supplier_id = a.hold_supplier) AS kept "
                "FROM order_allocations a JOIN orders o USING (order_id) "
                "WHERE o.sale_id = $1 AND a.sku = $2 AND a.hold_supplier = $3 "
                "AND a.status = 'allocated'",
                self.api.sale,
                SKU,
                SUPPLIER,
            )
        finally:
            await conn.close()
        if not self.answer:
            return "feed act: the cut was not sent (the crowd ended first)"
        return (
            f"feed act: of the {SKU} lines held at {SUPPLIER}, {row['kept']} shipped from it and "
            f"{row['moved']} were rerouted to {OTHER} (acme refused {row['asked']} of those: "
            f"the rest moved before acme was asked)"
        )


def sim_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{sim.ports(settings)['feeds']}"
