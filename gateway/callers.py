"""Who is asking: a customer the shop vouches for (`X-Customer-Token`), or the admin (the bearer
key). Outside FLASHSALE_ENV=dev nothing else is believed; in dev a body `customer_id` stands in
for the token, and the hold and order routes answer anyone who has no token."""

from __future__ import annotations

import hmac

from starlette.types import Scope

from flashsale.gateway.http import header
from flashsale.gateway.identity import Unauthenticated
from flashsale.gateway.problems import Problem
from flashsale.gateway.state import GatewayState

ANYONE = ""  # the engine's owner argument that checks no owner (the admin's view)
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="customer", error="invalid_token"'}


def unauthenticated(detail: str) -> Problem:
    return Problem(401, "CUSTOMER_UNAUTHENTICATED", detail, CHALLENGE)


def _token_customer(state: GatewayState, token: str) -> str:
    try:
        return state.customers.customer(token.strip())
    except Unauthenticated as exc:
        raise unauthenticated(exc.detail) from None


def customer(state: GatewayState, scope: Scope, body_customer: str | None) -> str:
    """The request's customer: the token's `sub`. A body `customer_id` may repeat it, never
    differ from it (403 CUSTOMER_MISMATCH); without a token only dev mode takes the body's."""
    token = header(scope, b"x-customer-token")
    if token is not None:
        sub = _token_customer(state, token)
        if body_customer is not None and body_customer != sub:
            raise Problem(
                403, "CUSTOMER_MISMATCH", "customer_id differs from the customer token's subject"
            )
        return sub
    if state.settings.dev and body_customer is not None:
        return body_customer
    raise unauthenticated("send X-Customer-Token: the token the shop gave this customer")


def is_admin(state: GatewayState, scope: Scope) -> bool:
    given = header(scope, b"authorization") or ""
    expected = f"Bearer {state.settings.admin_key}"
    return hmac.compare_digest(given.encode(), expected.encode())


def owner(state: GatewayState, scope: Scope) -> str:
    """Whose holds and orders the request may see: the token's customer, or ANYONE for the
    admin key (and, in dev mode only, for a request without a token)."""
    token = header(scope, b"x-customer-token")
    if token is not None:
        return _token_customer(state, token)
    if is_admin(state, scope) or state.settings.dev:
        return ANYONE
    raise unauthenticated("send X-Customer-Token (or the admin key) to see a hold or an order")
