"""The few gateway calls a load-test run makes itself: a flash sale over the admin API, and the
live figures it watches. Plain urllib (blocking); the async callers run them in a thread."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

Doc = dict[str, Any]


class GatewayError(Exception):
    """The gateway could not be reached, or answered with an unexpected status."""


@dataclass(frozen=True, slots=True)
class SaleApi:
    url: str  # http://host:port
    sale: str
    admin_key: str
    timeout_s: float = 10.0

    def call(self, method: str, path: str, body: object = None, *, admin: bool = False) -> Doc:
        """The JSON answer of a 2xx; GatewayError with the problem's code otherwise."""
        headers = {"Content-Type": "application/json"}
        if admin:
            headers["Authorization"] = f"Bearer {self.admin_key}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                doc: Doc = json.loads(reply.read() or b"{}")
                return doc
        except urllib.error.HTTPError as exc:
            problem = exc.read().decode(errors="replace")[:300]
            raise GatewayError(f"{method} {path}: {exc.code} {problem}") from None
        except (OSError, ValueError) as exc:
            raise GatewayError(f"{method} {path}: cannot reach {self.url}: {exc}") from None

    def public_view(self) -> Doc:
        return self.call("GET", f"/v1/sales/{self.sale}")

    def admin_view(self) -> Doc:
        return self.call("GET", f"/v1/admin/sales/{self.sale}", admin=True)

    def room(self) -> Doc | None:
        """The waiting room's public figures; None when the sale has none."""
        try:
            return self.call("GET", f"/v1/sales/{self.sale}/queue")
        except GatewayError as exc:
            if " 404 " in str(exc):
                return None
            raise

    def create(self, body: Doc) -> None:
        """PUT the sale, then open it."""
        self.call("PUT", f"/v1/admin/sales/{self.sale}", body, admin=True)
        self.call("POST", f"/v1/admin/sales/{self.sale}/open", admin=True)

    def close(self) -> None:
        self.call("POST", f"/v1/admin/sales/{self.sale}/close", admin=True)

    @property
    def page_url(self) -> str:
        return f"{self.url}/sales/{self.sale}/waiting-room"


Stock = dict[str, list[tuple[str, int]]]  # sku -> [(supplier, units)] in priority order


def flash_sale(
    stock: Stock,
    *,
    hold_ttl_s: int,
    per_user_limit: int,
    admit_rate_per_s: int,
    max_active: int,
    token_ttl_s: int = 60,
    per_address_per_s: int = 0,
) -> Doc:
    """A sale open from now with a waiting room; prices and costs in minor units. An admitted
    shopper who never checks out keeps a place among max_active for token_ttl_s. The rate limit
    is per customer and per client address (`per_address_per_s`, burst 2x that); 0 = none."""
    items = [
        {
            "sku": sku,
            "price_minor": 12_900,
            "suppliers": [
                {"id": sup, "stock": units, "cost_minor": 6_000 + 500 * i, "priority": i}
                for i, (sup, units) in enumerate(suppliers)
            ],
        }
        for sku, suppliers in stock.items()
    ]
    starts = datetime.now(UTC) - timedelta(seconds=1)
    body: Doc = {
        "name": "Flash sale (load test)",
        "starts_at": starts.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "ends_at": None,
        "hold_ttl_s": hold_ttl_s,
        "per_user_limit": per_user_limit,
        "waiting_room": {
            "enabled": True,
            "admit_rate_per_s": admit_rate_per_s,
            "max_active": max_active,
            "token_ttl_s": token_ttl_s,
        },
        "items": items,
    }
    if per_address_per_s:
        body["rate_limit"] = {
            "per_client_per_s": per_address_per_s,
            "burst": 2 * per_address_per_s,
            "per_sale_per_s": 0,
        }
    return body
