"""The bot: checkout without queueing, from a few addresses, with no customer token, a forged or
expired one, or another customer's, and sometimes a forged admission token."""

from __future__ import annotations

import base64
import random
import uuid

from locust import FastHttpUser, between, task

from flashsale.loadtests.crowd.passes import BOT_KINDS, bot_pass
from flashsale.loadtests.crowd.plan import Plan
from flashsale.loadtests.crowd.relay import OUTCOMES
from flashsale.loadtests.crowd.replies import BOT_HOLDS, describe, problem_code, sale_skus
from flashsale.loadtests.options import DEFAULT

BOT_REFUSALS = {
    "CUSTOMER_UNAUTHENTICATED",
    "CUSTOMER_MISMATCH",
    "TOKEN_INVALID",
    "NOT_ADMITTED",
    "RATE_LIMITED",
    "SALE_NOT_OPEN",
}


class Bot(FastHttpUser):
    """Hammers checkout without queueing: each try a new identity of one of the kinds in
    BOT_KINDS, from a few client addresses, sometimes with a forged admission token. Every
    attempt must be refused; a hold is a failure."""

    weight = DEFAULT["bot_weight"]  # set_up sets the run's (--bot-weight)
    wait_time = between(0.05, 0.25)

    def on_start(self) -> None:
        self.plan = Plan.of(self.environment.parsed_options)
        self.path = f"/v1/sales/{self.plan.sale}/holds"
        self.skus = sale_skus(self, f"/v1/sales/{self.plan.sale}") or ["A"]

    @task
    def grab(self) -> None:
        address = f"203.0.113.{random.randint(1, self.plan.bot_addresses)}"
        headers = {"X-Forwarded-For": address, "Idempotency-Key": uuid.uuid4().hex}
        if random.random() < 0.3:
            headers["Authorization"] = f"Bearer {forged_token()}"
        kind = random.choice(BOT_KINDS)
        token, claimed = bot_pass(kind, self.plan.customer_secret, self.plan.audience)
        if token is not None:
            headers["X-Customer-Token"] = token
        body: dict[str, object] = {"items": [{"sku": random.choice(self.skus), "qty": 2}]}
        if claimed is not None:
            body["customer_id"] = claimed
        with self.client.post(
            self.path, json=body, headers=headers, name=BOT_HOLDS, catch_response=True
        ) as reply:
            OUTCOMES.count("bot_checkouts")
            code = problem_code(reply)
            if reply.status_code == 201:
                reply.failure(f"a bot ({kind}) got a hold without being admitted")
                OUTCOMES.bot_holds.append(reply.json()["hold_id"])
            elif code in BOT_REFUSALS:
                reply.success()
                OUTCOMES.bot_refusals[f"{reply.status_code} {code}"] += 1
            else:
                reply.failure(describe(reply))


def forged_token() -> str:
    """Looks like an admission JWT, signed with nothing the gateway knows."""

    def part(doc: bytes) -> str:
        return base64.urlsafe_b64encode(doc).rstrip(b"=").decode()

    claims = f'{{"sub":"bot","jti":{random.randint(1, 10**6)},"exp":4102444800}}'.encode()
    return ".".join((part(b'{"alg":"HS256","kid":"k1"}'), part(claims), part(random.randbytes(32))))
