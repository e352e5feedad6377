"""A production deployment for the hostile tests: a gateway with this run's own secrets (no dev
mode), the shop's customer tokens, and the admin's key."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import jwt

from flashsale.engine import keys
from flashsale.engine.connection import RedisClient
from flashsale.engine.settings import Settings
from flashsale.loadtests.crowd.passes import customer_token
from flashsale.loadtests.gateway_process import Gateway, gateway
from flashsale.loadtests.run_secrets import production_secrets
from flashsale.store.db import Connection
from tests.helpers import eventually


@dataclass(frozen=True, slots=True)
class Shop:
    """The secrets of one production deployment, as the shop and its operator hold them."""

    settings: Settings
    env: dict[str, str]

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.admin_key}"}

    def token(self, customer: str, *, exp_s: float | None = None) -> str:
        s = self.settings
        return customer_token(s.customer_secret, s.customer_audience, customer, exp_s=exp_s)

    def as_customer(self, customer: str, **headers: str) -> dict[str, str]:
        return {"X-Customer-Token": self.token(customer), **headers}

    def signed(self, claims: dict[str, Any], *, key: str | None = None) -> str:
        """A token with exactly these claims (the shop's key unless `key`)."""
        secret = key or self.settings.customer_secret
        return jwt.encode(claims, secret, "HS256")


def now_s() -> int:
    return int(time.time())


async def room_opened(redis_client: RedisClient, sale_id: str) -> None:
    """Until an admission loop has opened the sale's room (it writes the room hash then): a
    room snapshot taken before would see that write as a change."""

    async def opened() -> bool:
        return bool(await redis_client.hexists(keys.room(sale_id), "opened_at_ms"))

    await eventually(opened)


@contextmanager
def production_gateway(
    settings: Settings, service_urls: dict[str, str], **extra: str
) -> Iterator[tuple[Gateway, Shop]]:
    """A real 2-worker `flashsale serve` in production mode, with fresh secrets."""
    shop_settings, secret_env = production_secrets(settings)
    env = {**service_urls, **secret_env, **extra}
    with gateway(env, workers=2) as running:
        yield running, Shop(shop_settings, env)


async def seed_order(db: Connection, sale_id: str, order_id: str, customer: str) -> None:
    """An order deep into its saga, as the reconciler leaves it: paid through a provider, a
    line rerouted to another supplier at a cost, a step that failed with the provider's raw
    answer, transitions naming the authorisation, notifications to both parties."""
    await db.execute(
        "INSERT INTO orders (order_id, sale_id, customer_id, status, total_minor, event_id, "
        "confirmed_at, payment_ref, authorization_id, authorized_minor, captured_minor) "
        "VALUES ($1, $2, $3, 'CONFIRMED', 2000, '1-0', now(), 'card:tok_secret', "
        "'auth_internal_7', 2000, 2000)",
        order_id,
        sale_id,
        customer,
    )
    await db.execute(
        "INSERT INTO order_allocations (order_id, sku, hold_supplier, qty, price_minor, status, "
        "supplier_id, cost_minor, allocation_ref, confirmed, planned_margin_minor, margin_minor, "
        "refused_by) VALUES ($1, 'A', 'p', 2, 1000, 'allocated', 'q', 700, 'al_internal_9', "
        "true, 1000, 600, ARRAY['p:OUT_OF_STOCK'])",
        order_id,
    )
    await db.execute(
        "INSERT INTO saga_steps (order_id, step, status, attempts, outcome, last_error) "
        "VALUES ($1, 'payment.capture', 'done', 2, 'captured', "
        "'PartyUnavailable: POST http://payments.internal/authorizations/auth_internal_7 "
        'HTTP 502 {"raw": "provider body"}\')',
        order_id,
    )
    await db.execute(
        "INSERT INTO order_transitions (order_id, from_status, to_status, cause) "
        "VALUES ($1, 'PENDING', 'AUTHORIZED', 'payment authorized (auth_internal_7)')",
        order_id,
    )
    for recipient in ("customer", "retailer"):
        await db.execute(
            "INSERT INTO outbox (topic, recipient, payload, dedupe_key, order_id) "
            "VALUES ('order.confirmed', $2, '{}'::jsonb, $1 || ':' || $2, $1)",
            order_id,
            recipient,
        )


# What only the admin's view of an order may show.
INTERNAL = ("auth_internal_7", "al_internal_9", "payments.internal", "provider body", "tok_secret")
