"""Customer tokens as the shop would sign them (shoppers), and the ones bots come with: none,
forged, expired, or another customer's."""

from __future__ import annotations

import random
import time
import uuid

import jwt

from flashsale.gateway.identity import LEEWAY_S, parse_secrets

PASS_TTL_S = 3600
BOT_KINDS = ("none", "forged", "expired", "stolen", "stolen_mismatch")


def customer_token(secret_spec: str, audience: str, sub: str, *, exp_s: float | None = None) -> str:
    """HS256 with the first key of FLASHSALE_CUSTOMER_SECRET (its kid in the header, if any)."""
    kid, key = next(iter(parse_secrets(secret_spec).items()))
    now = int(time.time())
    claims = {"sub": sub, "aud": audience, "iat": now, "exp": exp_s or now + PASS_TTL_S}
    return jwt.encode(claims, key, "HS256", headers={"kid": kid} if kid else None)


def bot_pass(kind: str, secret_spec: str, audience: str) -> tuple[str | None, str | None]:
    """(the X-Customer-Token a bot sends or None, the body customer_id it claims or None)."""
    own = f"bot-{uuid.uuid4().hex[:16]}"
    if kind == "none":
        return None, own
    if kind == "forged":
        forged = "forged-" + uuid.uuid4().hex  # a key the shop never had
        return customer_token(forged, audience, own), None
    if kind == "expired":
        past = time.time() - LEEWAY_S - random.randint(60, 86_400)
        return customer_token(secret_spec, audience, own, exp_s=past), None
    victim = f"shopper-victim-{random.randint(1, 1000)}"
    stolen = customer_token(secret_spec, audience, victim)
    return stolen, (own if kind == "stolen_mismatch" else None)
