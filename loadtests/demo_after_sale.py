"""The demo's after-sale act, once the crowd's orders have settled: on a small sale of its own
(tote bags from acme, which now reports its shipments), one customer cancels before the capture,
and another's order ships in two parcels, gets a partial refund, and sends one bag back in a
state to sell again. Everything goes through the gateway's routes and the simulated parties; the
act prints each order's timeline, what the payment provider did, and the sale's settlement."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

from flashsale.engine import Settings
from flashsale.loadtests import saga_report
from flashsale.loadtests.crowd.passes import customer_token
from flashsale.loadtests.demo_feed import SKU_MAP, SUPPLIER, FeedAct
from flashsale.loadtests.simulators import processes as sim

SKU, UNITS, PRICE, COST = "tote-bag", 20, 2_500, 1_200
PARTIAL_REFUND = 500  # minor units, a goodwill refund on the two-bag order
# The payment provider is slow (under the adapters' 2 s timeout) while the first customer changes
# their mind: its authorisation and capture take this long each.
PAYMENT_DELAY_MS = 1_200
SUPPLIER_DELAY_MS = 1_500  # and acme's allocation: the cancel lands before the capture
Doc = dict[str, Any]


def after_sale_id(sale: str) -> str:
    return f"{sale}-after"


def _body() -> Doc:
    return {
        "name": "Tote bags (after-sale act)",
        "starts_at": "2020-01-01T00:00:00Z",
        "ends_at": None,
        "hold_ttl_s": 60,
        "per_user_limit": 2,
        "items": [
            {
                "sku": SKU,
                "name": "Canvas tote bag",
                "price_minor": PRICE,
                "suppliers": [{"id": SUPPLIER, "stock": UNITS, "cost_minor": COST}],
            }
        ],
    }


@dataclass
class AfterSaleAct:
    gateway_url: str
    sale: str  # the act's own sale
    settings: Settings
    feed: FeedAct  # acme's feed secret also signs its shipments

    def _admin(self, key: str = "") -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.settings.admin_key}"}
        return {**headers, "Idempotency-Key": key} if key else headers

    def _customer(self, who: str) -> dict[str, str]:
        s = self.settings
        return {"X-Customer-Token": customer_token(s.customer_secret, s.customer_audience, who)}

    async def run(self) -> str:
        ports = sim.ports(self.settings)
        sims = {name: f"http://127.0.0.1:{port}/_sim" for name, port in ports.items()}
        async with (
            httpx.AsyncClient(base_url=self.gateway_url, timeout=20) as gw,
            httpx.AsyncClient(timeout=20) as party,
        ):
            await self._set_up(gw, party, sims)
            slow = {"delay_ms": PAYMENT_DELAY_MS, "decline_share": 0.0, "expire_share": 0.0}
            await party.post(f"{sims['payment']}/config", json=slow)
            ann = await self._buy(gw, "ann", 1)
            # Flushed, not captured: the slow payment provider and supplier leave seconds to cancel
            # in. A cancel recorded while the capture runs is refunded after it (REFUNDED); one
            # that comes after the capture is refused to her, and the shop's operator cancels.
            await self._until(gw, ann, {"PENDING", "AUTHORIZED"})
            cancel = await gw.post(
                f"/v1/orders/{ann}/cancel", json={}, headers=self._customer("ann")
            )
            if cancel.status_code == 409 and cancel.json().get("code") == "ORDER_CAPTURED":
                cancel = await gw.post(
                    f"/v1/admin/orders/{ann}/cancel", json={}, headers=self._admin(f"{ann}-x")
                )
            _ok(cancel)
            await self._until(gw, ann, {"CANCELLED", "REFUNDED"})
            await party.post(f"{sims['payment']}/config", json={"delay_ms": 0})

            bob = await self._buy(gw, "bob", 2)
            await self._until(gw, bob, {"CONFIRMED"}, parked=True)  # captured, not shipped
            ship = {"order_id": bob, "lines": [{"sku": SKU, "qty": 2}], "split": 2}
            _ok(await party.post(f"{sims['suppliers']}/suppliers/{SUPPLIER}/ship", json=ship))
            await self._until(gw, bob, {"FULFILLED"})
            refund = {"amount_minor": PARTIAL_REFUND, "reason": "late parcel, goodwill"}
            _ok(
                await gw.post(
                    f"/v1/admin/orders/{bob}/refunds",
                    json=refund,
                    headers=self._admin(f"{bob}-goodwill"),
                )
            )
            back = {
                "lines": [{"sku": SKU, "qty": 1, "condition": "restockable"}],
                "reason": "changed mind",
            }
            _ok(
                await gw.post(
                    f"/v1/admin/orders/{bob}/returns",
                    json=back,
                    headers=self._admin(f"{bob}-return"),
                )
            )
            await saga_report.settle(self.settings, self.sale)
            return await self._report(gw, party, sims, {"ann": ann, "bob": bob})

    async def _set_up(
        self, gw: httpx.AsyncClient, party: httpx.AsyncClient, sims: dict[str, str]
    ) -> None:
        """acme reports its shipments (signed with its feed secret); the act's sale opens."""
        supplier = (await gw.get(f"/v1/admin/suppliers/{SUPPLIER}", headers=self._admin())).json()
        body = {"name": supplier.get("name", SUPPLIER), "reports_shipments": True, "feed": {
            "kind": "webhook", "secret": self.feed.secret,
            "sku_map": [{"supplier_sku": k, "sku": v} for k, v in SKU_MAP.items()],
        }}  # fmt: skip
        _ok(await gw.put(f"/v1/admin/suppliers/{SUPPLIER}", json=body, headers=self._admin()))
        _ok(await party.post(f"{sims['suppliers']}/config", json={"gateway_url": self.gateway_url}))
        stock = {
            "stock": {SKU: UNITS},
            "shipment_secret": self.feed.secret,
            "carrier": "PARCELNET",
            "delay_ms": SUPPLIER_DELAY_MS,
        }
        _ok(await party.put(f"{sims['suppliers']}/suppliers/{SUPPLIER}", json=stock))
        _ok(await gw.put(f"/v1/admin/sales/{self.sale}", json=_body(), headers=self._admin()))
        _ok(await gw.post(f"/v1/admin/sales/{self.sale}/open", headers=self._admin()))

    async def _buy(self, gw: httpx.AsyncClient, who: str, qty: int) -> str:
        held = await gw.post(
            f"/v1/sales/{self.sale}/holds",
            json={"items": [{"sku": SKU, "qty": qty}]},
            headers=self._customer(who),
        )
        hold = _ok(held)["hold_id"]
        pay = {"payment": {"method": "card", "token": f"tok_{who}"}}
        done = await gw.post(
            f"/v1/sales/{self.sale}/holds/{hold}/confirm", json=pay, headers=self._customer(who)
        )
        return str(_ok(done)["order_id"])

    async def _until(
        self,
        gw: httpx.AsyncClient,
        order: str,
        wanted: set[str],
        timeout_s: float = 60,
        parked: bool = False,
    ) -> None:
        """Until the order's status is one of `wanted` (and, if `parked`, its saga waits for
        nothing but the supplier's parcels)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            answer = await gw.get(f"/v1/admin/orders/{order}", headers=self._admin())
            if answer.status_code == 200:
                view = answer.json()
                if view["status"] in wanted and not (parked and view["saga"]["next_step"]):
                    return
            await asyncio.sleep(0.3)
        raise RuntimeError(f"after-sale act: order {order} did not reach {sorted(wanted)}")

    async def _report(
        self,
        gw: httpx.AsyncClient,
        party: httpx.AsyncClient,
        sims: dict[str, str],
        orders: dict[str, str],
    ) -> str:
        payments = (await party.get(f"{sims['payment']}/records")).json()
        out = [f"after-sale act, sale {self.sale}:"]
        for who, order in orders.items():
            view = (await gw.get(f"/v1/admin/orders/{order}", headers=self._admin())).json()
            moves = [t["to"] for t in view["transitions"] if t["to"] != t["from"]]
            path = " -> ".join([view["transitions"][0]["from"], *moves] if moves else [])
            out.append(f"  {who}'s order {order}: {view['status']} ({path})")
            paid = [a for a in payments["authorizations"] if a["order_id"] == order]
            for a in paid:
                out.append(
                    f"    payment: {a['status']}, captured {a['captured_minor']}, refunded "
                    f"{a['refunded_minor']} in {len(a['refunds'])} refund(s)"
                )
            for s in view.get("shipments", []):
                units = ", ".join(f"{x['qty']} x {x['sku']}" for x in s["lines"])
                out.append(f"    shipped {units} by {s['carrier']} ({s['tracking_id']})")
        live = (await gw.get(f"/v1/admin/sales/{self.sale}", headers=self._admin())).json()
        out.append(f"  {SKU} available again: {live['skus'][0]['available']} of {UNITS}")
        settlement = (
            await gw.get(f"/v1/admin/sales/{self.sale}/settlement", headers=self._admin())
        ).json()
        figures = (
            "captured_minor",
            "refunded_minor",
            "supplier_cost_minor",
            "credits_minor",
            "net_minor",
        )
        out.append(
            "  settlement: "
            + ", ".join(f"{k.removesuffix('_minor')} {settlement[k]}" for k in figures)
        )
        return "\n".join(out)


def _ok(answer: httpx.Response) -> Doc:
    if not answer.is_success:
        raise RuntimeError(
            f"after-sale act: {answer.request.method} {answer.request.url.path}: "
            f"{answer.status_code} {answer.text[:300]}"
        )
    doc: Doc = answer.json() if answer.content else {}
    return doc
