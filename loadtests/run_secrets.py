"""Fresh secrets for one run of the demo or a benchmark, so they run as production would (no
FLASHSALE_ENV=dev): the admin key, the token and webhook secrets, the shop's key for customer
tokens and the parties' credentials, handed to every process through its environment."""

from __future__ import annotations

import dataclasses
import secrets

from flashsale.engine.settings import Settings

SECRET_NAMES = ("admin_key", "token_secret", "webhook_secret", "customer_secret")
AUTH_NAMES = ("payment_auth", "supplier_auth")


def production_secrets(settings: Settings) -> tuple[Settings, dict[str, str]]:
    """These settings with fresh secrets, and the FLASHSALE_* variables that carry them."""
    fresh = {name: secrets.token_urlsafe(32) for name in SECRET_NAMES}
    fresh |= {name: "Bearer " + secrets.token_urlsafe(24) for name in AUTH_NAMES}
    env = {"FLASHSALE_ENV": "production"}
    env |= {"FLASHSALE_" + name.upper(): value for name, value in fresh.items()}
    production: Settings = dataclasses.replace(settings, env="production", **fresh)  # type: ignore[arg-type]
    return production, env
